#!/usr/bin/env bash
# The test command: sets up everything the suite needs on a fresh machine, then runs it.
# Installs: a virtual environment with cxloop and its test extra, and, when absent, Debian's
# PostgreSQL server (the store tests run on SQLite and on a real PostgreSQL) and Chromium
# (the report tests render HTML in it headless).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
echo "== installing cxloop with its test and dask extras"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,dask]"

echo "== lint"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== tests"
# One worker per core, each test file on one worker (its module fixtures are built once).
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"
