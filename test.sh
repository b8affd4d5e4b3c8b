#!/usr/bin/env bash
# Runs synod's whole test suite. Sets up (once) a Python virtualenv in .venv holding the real
# third-party client py-eureka-client, which tests/py_client.rs drives against the server.
set -euo pipefail
cd "$(dirname "$0")"

if ! .venv/bin/python -c 'import importlib.metadata as m; assert m.version("py-eureka-client") == "0.13.3"' >/dev/null 2>&1; then
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'py-eureka-client==0.13.3'
fi
export SYNOD_PYTHON="$PWD/.venv/bin/python"

cargo test --locked --workspace "$@"
