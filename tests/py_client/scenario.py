"""Drives the third-party client py-eureka-client 0.13.3 against a running Eureka server.

Usage:
    scenario.py [--step] SERVER_URL              # role "alpha" (the default)
    scenario.py --role beta SERVER_URL           # started by alpha itself

SERVER_URL is the Eureka service root, e.g. http://127.0.0.1:8761/eureka.

Alpha registers PY-ALPHA, starts a second process (role beta) that registers PY-BETA,
discovers PY-BETA through the client's own registry refresh, marks itself OUT_OF_SERVICE
with status_update(), watches PY-BETA leave, and finally cancels with stop().

Output on stdout, one line each:
    [role +1.234s] text             progress
    CHECKPOINT <name> <json>        a state the caller may verify on the server
    DONE                            alpha finished successfully
    FAIL <text>                     the scenario failed; the process exits with status 1

With --step, alpha waits after every checkpoint (except the last, "stopped") for the line
CONTINUE on stdin, so that a test harness can inspect the server in that state. Beta always
waits for STOP on stdin before it cancels; it also cancels and exits when stdin closes, so it
never outlives alpha.

Every wait is bounded. The heartbeat thread of py-eureka-client 0.13.3 shares an
asyncio.Lock with the caller's event loop, so calls that use the network (status_update,
stop) are made only in the quiet gap after a heartbeat round; and the process exits right
after stop(), because that thread would otherwise register the instance again.
"""

import argparse
import asyncio
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time

import py_eureka_client
import py_eureka_client.http_client as http_client
from py_eureka_client.eureka_client import EurekaClient

EXPECTED_CLIENT_VERSION = "0.13.3"
RENEWAL_INTERVAL_SECS = 1
DURATION_SECS = 10
# Ports are only advertised in the registration; nothing listens on them.
ALPHA_PORT = 18081
BETA_PORT = 18082
# Upper bound for any single wait on the server or on the client's registry.
WAIT_SECS = 10.0
# Upper bound for the harness to answer a checkpoint.
STEP_SECS = 30.0
# Beta's own lifetime bound in case nobody ever tells it to stop.
BETA_LIFETIME_SECS = 90.0
HEARTBEAT_THREAD = "HeartbeatThread"

_T0 = time.monotonic()
ROLE = "alpha"


class ScenarioError(Exception):
    """A step of the scenario did not behave as expected."""


def log(text):
    emit(f"[{ROLE} +{time.monotonic() - _T0:.3f}s] {text}")


def emit(line):
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Whoever reads us is gone; nothing left to report to.
        os._exit(3)


def checkpoint(name, **fields):
    emit(f"CHECKPOINT {name} {json.dumps(fields, sort_keys=True)}")


_stdin_buf = b""


def read_stdin_line(timeout):
    """Next stdin line without its newline, "" on EOF, None on timeout.

    Reads the file descriptor directly: select() cannot see lines already sitting in
    sys.stdin's own buffer."""
    global _stdin_buf
    deadline = time.monotonic() + timeout
    while b"\n" not in _stdin_buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([0], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(0, 4096)
        if not chunk:
            return ""
        _stdin_buf += chunk
    line, _stdin_buf = _stdin_buf.split(b"\n", 1)
    return line.decode("utf-8", "replace").rstrip("\r")


class RecordingHttpClient(http_client.HttpClient):
    """The library's own transport, plus a record of every request and of when the
    heartbeat thread is on the network, so that callers can find its quiet gaps."""

    def __init__(self):
        super().__init__()
        self.cond = threading.Condition()
        self.requests = []  # (thread, method, url, status or error text, finished at)
        self.in_flight = {}  # thread name -> number of requests under way
        self.last_finished = {}  # thread name -> monotonic time of its last answer
        self.heartbeat_started = 0  # requests started by the heartbeat thread

    async def urlopen(self, request=None, data=None, timeout=None):
        if isinstance(request, http_client.HttpRequest):
            method, url = request.method, request.url
        else:
            method, url = "GET", str(request)
        thread = threading.current_thread().name
        with self.cond:
            self.in_flight[thread] = self.in_flight.get(thread, 0) + 1
            if thread == HEARTBEAT_THREAD:
                self.heartbeat_started += 1
        outcome = "?"
        try:
            res = await super().urlopen(request, data=data, timeout=timeout)
            outcome = res.raw_response.status_code
            return res
        except http_client.HTTPError as e:
            outcome = e.code
            raise
        except Exception as e:
            outcome = f"{type(e).__name__}: {e}"
            raise
        finally:
            now = time.monotonic()
            with self.cond:
                self.in_flight[thread] -= 1
                self.last_finished[thread] = now
                self.requests.append((thread, method, url, outcome, now))
                self.cond.notify_all()

    def snapshot(self):
        with self.cond:
            return list(self.requests)

    def failed(self):
        return [r for r in self.snapshot() if not (isinstance(r[3], int) and 200 <= r[3] < 300)]

    def wait_quiet_gap(self, interval, deadline):
        """Blocks until a heartbeat round has just ended, i.e. the heartbeat thread has
        been off the network for a short settle time and is early in its sleep.

        A round is a burst (heartbeat, delta, maybe a full fetch) followed by
        time.sleep(interval). Acting in the first half of that sleep leaves the caller
        hundreds of milliseconds for one loopback request."""
        settle = 0.15
        latest = interval * 0.5
        with self.cond:
            while True:
                now = time.monotonic()
                busy = self.in_flight.get(HEARTBEAT_THREAD, 0) > 0
                last = self.last_finished.get(HEARTBEAT_THREAD)
                if not busy and last is not None and settle <= now - last <= latest:
                    return self.heartbeat_started
                if now >= deadline:
                    raise ScenarioError("no quiet gap after a heartbeat round before the deadline "
                                        "(is the heartbeat thread running?)")
                self.cond.wait(0.02)

    def heartbeat_requests_since(self, started_count):
        with self.cond:
            return self.heartbeat_started - started_count


class Participant:
    """One EurekaClient plus the event loop the calling thread uses to drive it."""

    def __init__(self, server_url, app_name, port, recorder):
        self.recorder = recorder
        self.errors = []
        self.loop = asyncio.new_event_loop()
        self.client = EurekaClient(
            eureka_server=server_url,
            app_name=app_name,
            # Both given, so the library does no address or name lookup of its own.
            instance_host="localhost",
            instance_ip="127.0.0.1",
            instance_port=port,
            renewal_interval_in_secs=RENEWAL_INTERVAL_SECS,
            duration_in_secs=DURATION_SECS,
            on_error=self._on_error,
        )
        # The library's default instance id; spelled out here so that it can be reported.
        self.app = app_name.upper()
        self.instance_id = f"127.0.0.1:{app_name.lower()}:{port}"

    def _on_error(self, error_type, exception):
        self.errors.append(f"{error_type}: {exception!r}")

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def check_no_errors(self, during):
        problems = list(self.errors)
        problems += [f"{m} {u} -> {s} ({t})" for (t, m, u, s, _) in self.recorder.failed()]
        if problems:
            raise ScenarioError(f"server calls failed during {during}: " + "; ".join(problems))

    def registry(self):
        # None when no full fetch has succeeded yet (the property then also starts a fetch
        # it never awaits, which only costs a RuntimeWarning).
        apps = self.client.applications
        if apps is None:
            raise ScenarioError("the client has no registry: its full fetch of GET apps/ failed "
                                "or the answer was not an <applications> XML document")
        return apps

    def lookup(self, app, instance_id):
        return self.registry().get_application(app).get_instance(instance_id)

    def status_of(self, app, instance_id):
        instance = self.lookup(app, instance_id)
        return None if instance is None else instance.status

    def wait_for(self, what, cond, timeout=WAIT_SECS):
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ScenarioError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.05)

    def call_in_quiet_gap(self, what, coro_fn):
        """Runs one network call of the client between two heartbeat rounds."""
        deadline = time.monotonic() + WAIT_SECS
        mark = self.recorder.wait_quiet_gap(RENEWAL_INTERVAL_SECS, deadline)
        self.run(coro_fn())
        overlapped = self.recorder.heartbeat_requests_since(mark)
        if overlapped:
            log(f"note: {overlapped} heartbeat-thread request(s) started during {what}")

    def describe_registry(self):
        try:
            apps = self.registry()
        except ScenarioError as e:
            return str(e)
        parts = []
        for application in apps.applications:
            ids = [f"{i.instanceId}={i.status}" for i in application.instances]
            parts.append(f"{application.name}[{', '.join(ids)}]")
        return f"hash of last full fetch={apps.appsHashcode!r} apps=" + " ".join(parts)


def start_participant(server_url, app_name, port):
    recorder = RecordingHttpClient()
    http_client.set_http_client(recorder)
    p = Participant(server_url, app_name, port, recorder)
    p.run(p.client.start())
    p.check_no_errors("start() (registration and first full fetch)")
    posts = [r for r in recorder.snapshot() if r[1] == "POST"]
    if not posts:
        raise ScenarioError("start() sent no registration")
    log(f"registered {p.app}/{p.instance_id}")
    return p


def dump_requests(p):
    if p is None:
        return
    for (thread, method, url, outcome, at) in p.recorder.snapshot():
        sys.stderr.write(f"  +{at - _T0:.3f}s {thread}: {method} {url} -> {outcome}\n")
    sys.stderr.write(f"  client registry: {p.describe_registry()}\n")
    sys.stderr.flush()


def wait_continue():
    line = read_stdin_line(STEP_SECS)
    if line is None:
        raise ScenarioError(f"no CONTINUE from the harness within {STEP_SECS:.0f}s")
    if line != "CONTINUE":
        raise ScenarioError(f"expected CONTINUE from the harness, got {line!r}")


class Beta:
    """The PY-BETA process, seen from alpha."""

    def __init__(self, server_url):
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--role", "beta", server_url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect_checkpoint(self, name, timeout=WAIT_SECS + 5):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ScenarioError(f"beta did not reach checkpoint {name!r} within {timeout:.0f}s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise ScenarioError(f"beta exited (status {self.proc.poll()}) before checkpoint {name!r}")
            emit(f"  beta| {line}")
            if line.startswith("FAIL"):
                raise ScenarioError(f"beta failed: {line}")
            if line.startswith(f"CHECKPOINT {name} "):
                return json.loads(line.split(" ", 2)[2])

    def stop(self):
        self.proc.stdin.write("STOP\n")
        self.proc.stdin.flush()
        self.expect_checkpoint("stopped")
        try:
            code = self.proc.wait(timeout=WAIT_SECS)
        except subprocess.TimeoutExpired:
            raise ScenarioError("beta did not exit after stop()")
        if code != 0:
            raise ScenarioError(f"beta exited with status {code}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_alpha(server_url, step):
    p = None
    beta = None
    try:
        p = start_participant(server_url, "py-alpha", ALPHA_PORT)
        me = p.lookup(p.app, p.instance_id)
        if me is None:
            raise ScenarioError(f"the first full fetch does not contain {p.app}/{p.instance_id}: "
                                f"{p.describe_registry()}")
        checkpoint("registered", app=p.app, id=p.instance_id)
        if step:
            wait_continue()

        beta = Beta(server_url)
        b = beta.expect_checkpoint("registered")
        log(f"beta registered {b['app']}/{b['id']}; waiting for it in alpha's own registry")
        # Alpha knew only PY-ALPHA, so the delta's ADDED for PY-BETA is dropped by this client
        # version; PY-BETA can only arrive through the apps__hashcode mismatch that makes the
        # client fetch the full registry.
        seen_from = len(p.recorder.snapshot())
        other = p.wait_for(f"{b['app']}/{b['id']} in alpha's registry",
                           lambda: p.lookup(b["app"], b["id"]))
        if other.status != "UP":
            raise ScenarioError(f"alpha sees {b['id']} with status {other.status!r}, expected 'UP'")
        fetches = [r[2].split("/eureka", 1)[-1] for r in p.recorder.snapshot()[seen_from:] if r[1] == "GET"]
        p.check_no_errors("discovery")
        log(f"alpha discovered {b['app']}/{b['id']} after GETs {fetches}")
        checkpoint("discovered", app=b["app"], id=b["id"], gets=fetches)
        if step:
            wait_continue()

        p.call_in_quiet_gap("status_update", lambda: p.client.status_update("OUT_OF_SERVICE"))
        p.check_no_errors("status_update")
        log("status_update(OUT_OF_SERVICE) accepted; waiting for it in alpha's own registry")
        p.wait_for(f"{p.instance_id} shown OUT_OF_SERVICE in alpha's registry",
                   lambda: p.status_of(p.app, p.instance_id) == "OUT_OF_SERVICE")
        checkpoint("status_updated", app=p.app, id=p.instance_id, status="OUT_OF_SERVICE")
        if step:
            wait_continue()

        beta.stop()
        log("beta stopped; waiting for it to leave alpha's registry")
        p.wait_for(f"{b['id']} removed from alpha's registry",
                   lambda: p.lookup(b["app"], b["id"]) is None)
        p.check_no_errors("beta's departure")
        checkpoint("beta_gone", app=b["app"], id=b["id"])
        if step:
            wait_continue()

        before = len(p.recorder.snapshot())
        p.call_in_quiet_gap("stop", p.client.stop)
        p.check_no_errors("stop()")
        sent = [(m, s) for (t, m, _, s, _) in p.recorder.snapshot()[before:] if t != HEARTBEAT_THREAD]
        if [m for m, _ in sent] != ["POST", "DELETE"]:
            raise ScenarioError(f"stop() should send a DOWN registration and then a cancel, sent {sent}")
        checkpoint("stopped", app=p.app, id=p.instance_id, answers=[s for _, s in sent])
        emit("DONE")
    except Exception as e:
        emit(f"FAIL {e}")
        dump_requests(p)
        if beta is not None:
            beta.kill()
        sys.stdout.flush()
        os._exit(1)
    # Exit at once: the client's heartbeat thread keeps running after stop() and would
    # register the instance again on its next round.
    sys.stdout.flush()
    os._exit(0)


def run_beta(server_url):
    p = None
    try:
        p = start_participant(server_url, "py-beta", BETA_PORT)
        checkpoint("registered", app=p.app, id=p.instance_id)
        deadline = time.monotonic() + BETA_LIFETIME_SECS
        while True:
            line = read_stdin_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise ScenarioError("nobody asked beta to stop within its lifetime")
            if line in ("STOP", ""):
                break
        p.check_no_errors("beta's lifetime")
        p.call_in_quiet_gap("stop", p.client.stop)
        p.check_no_errors("stop()")
        checkpoint("stopped", app=p.app, id=p.instance_id)
    except Exception as e:
        emit(f"FAIL {e}")
        dump_requests(p)
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def main():
    global ROLE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server_url", help="Eureka service root, e.g. http://127.0.0.1:8761/eureka")
    parser.add_argument("--role", choices=["alpha", "beta"], default="alpha")
    parser.add_argument("--step", action="store_true",
                        help="wait for CONTINUE on stdin after each checkpoint")
    args = parser.parse_args()
    ROLE = args.role
    if py_eureka_client.version != EXPECTED_CLIENT_VERSION:
        emit(f"FAIL py-eureka-client {py_eureka_client.version} is installed; "
             f"this scenario is written for {EXPECTED_CLIENT_VERSION}")
        sys.exit(1)
    if ROLE == "alpha":
        run_alpha(args.server_url, args.step)
    else:
        run_beta(args.server_url)


if __name__ == "__main__":
    main()
