#!/usr/bin/env bash
# docbatch's two commands. Each sets up .venv from requirements.lock on first use (or when the
# lock changed), so a fresh machine needs only Python 3.11 with pip (and apt for python3-venv).
#
#   ./dev.sh demo   run a batch over examples/documents with the embedded extractor
#   ./dev.sh test   run the test suite (what .ci/run runs)
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

setup() {
  if [ -x "$VENV/bin/python" ] && cmp -s requirements.lock "$VENV/.installed-lock"; then
    return
  fi
  echo "setting up $VENV from requirements.lock (first run only, about 1-2 minutes)..." >&2
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    if command -v apt-get >/dev/null 2>&1; then
      echo "python venv module missing: installing python3-venv with apt-get" >&2
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"
      "$PY" -m venv "$VENV"
    else
      echo "error: '$PY -m venv' failed and apt-get is not available" >&2
      exit 1
    fi
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.lock
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  cp requirements.lock "$VENV/.installed-lock"
}

# The UI tests drive Debian's chromium through Playwright (no browser download at run time).
browser() {
  if command -v chromium >/dev/null 2>&1; then
    return
  fi
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the UI tests (apt-get, once)..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: chromium is missing and apt-get is not available: the UI test will fail" >&2
  fi
}

# Quiet, offline-friendly Prefect defaults; a PREFECT_API_URL already set still wins.
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}

case "${1:-}" in
  demo)
    shift
    setup
    exec "$VENV/bin/docbatch" run examples/documents --name "${DEMO_NAME:-docbatch demo}" "$@"
    ;;
  test)
    shift
    setup
    browser
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo [docbatch run options] | ./dev.sh test [pytest options]" >&2
    exit 2
    ;;
esac
