"""One py-eureka-client instance configured with every node of a p2p cluster.

Usage: failover.py SERVER_URLS PORT WATCH_APP

Registers PY-FAILOVER (renewing every second) and then prints, four times a second,
`SEEN <n>`: how many instances of WATCH_APP the client's own registry holds. The test kills
the node the client uses and checks that heartbeats and discovery carry on through the
others. The process ends when its stdin closes (the test is gone) — it never calls stop(),
whose heartbeat-thread race (see tests/py_client/scenario.py) would make the test flaky.
"""

import asyncio
import os
import sys
import threading
import time

from py_eureka_client.eureka_client import EurekaClient


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


def main():
    urls, port, watch = sys.argv[1], int(sys.argv[2]), sys.argv[3].upper()
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    loop = asyncio.new_event_loop()
    client = EurekaClient(
        eureka_server=urls,
        app_name="py-failover",
        instance_host="localhost",
        instance_ip="127.0.0.1",
        instance_port=port,
        renewal_interval_in_secs=1,
        duration_in_secs=10,
    )
    loop.run_until_complete(client.start())
    print("STARTED", flush=True)
    while True:
        apps = client.applications
        seen = 0
        if apps is not None:
            app = apps.get_application(watch)
            seen = len(app.instances) if app is not None else 0
        print(f"SEEN {seen}", flush=True)
        time.sleep(0.25)


if __name__ == "__main__":
    main()
