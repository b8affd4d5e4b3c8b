#!/usr/bin/env bash
# Runs synod's whole test suite. Sets up (once) a Python virtualenv in .venv holding the real
# third-party client py-eureka-client, which tests/py_client.rs drives against the server, and
# eureka-js-client under tests/js_client/node_modules for tests/js_client.rs, etcd for the
# fault lab's yardstick, chromium and playwright-core for the dashboard's browser test, and
# promtool for checking the deployment kit's alert rules and dashboard queries
# (tests/operations.rs).
set -euo pipefail
cd "$(dirname "$0")"

if ! .venv/bin/python -c 'import importlib.metadata as m; assert m.version("py-eureka-client") == "0.13.3"' >/dev/null 2>&1; then
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'py-eureka-client==0.13.3'
fi
export SYNOD_PYTHON="$PWD/.venv/bin/python"

# The real third-party Node.js client eureka-js-client, which tests/js_client.rs drives.
if ! grep -qs '"version": "4.5.0"' tests/js_client/node_modules/eureka-js-client/package.json; then
  npm install --prefix tests/js_client --no-audit --no-fund --no-package-lock --silent
fi

# etcd, the fault lab's yardstick (lab/tests/lab_run.rs runs it when present): Debian's
# etcd-server, installed when this runs as root on a Debian-like machine.
if ! command -v etcd >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq etcd-server >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq etcd-server >/dev/null 2>&1; } \
    || echo "etcd-server could not be installed: the lab's etcd run is skipped"
fi

# Debian's chromium and playwright-core (tests/browser) for the dashboard's browser test.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
    || echo "chromium could not be installed: the dashboard's browser test is skipped"
fi
if ! grep -qs '"version": "1.64.1"' tests/browser/node_modules/playwright-core/package.json; then
  npm install --prefix tests/browser --no-audit --no-fund --no-package-lock --silent
fi

# promtool, from Debian's prometheus package (the server is not started).
if ! command -v promtool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; } \
    || echo "prometheus (promtool) could not be installed: alert rules and dashboard queries are not checked"
fi

cargo test --locked --workspace "$@"
