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

# Debian packages a command needs, installed once with apt when their tool is missing:
#   apt_tool TOOL PACKAGE WHY
apt_tool() {
  if command -v "$1" >/dev/null 2>&1; then
    return
  fi
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's $2 for $3 (apt-get, once)..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "warning: $1 is missing and apt-get is not available: $3 will not have it" >&2
  fi
}

# invoice2data templates may pin poppler's pdftotext as their text reader (`input_module: pdftotext`),
# and the template cascade tries it after PDFium; without it each such result says it is missing.
poppler() { apt_tool pdftotext poppler-utils "invoice2data templates"; }
# The UI tests drive Debian's chromium through Playwright (no browser download at run time).
browser() { apt_tool chromium chromium "the UI tests"; }

# Quiet, offline-friendly Prefect defaults; a PREFECT_API_URL already set still wins.
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}

case "${1:-}" in
  demo)
    shift
    setup
    poppler
    exec "$VENV/bin/docbatch" run examples/documents --templates examples/templates --name "${DEMO_NAME:-docbatch demo}" "$@"
    ;;
  test)
    shift
    setup
    poppler
    browser
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo [docbatch run options] | ./dev.sh test [pytest options]" >&2
    exit 2
    ;;
esac
