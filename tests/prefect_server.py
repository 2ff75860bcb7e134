"""A real, throw-away `prefect server` (and workers) for tests.

    with PrefectServer() as server:
        server.prefect("work-pool", "create", "docbatch-process", "--type", "process")
        server.start_worker("docbatch-process")
        ...

Everything lives in a temporary directory: PREFECT_HOME (so the SQLite database, profiles and
settings never touch ~/.prefect), and one log file per started process (kept, with their path
printed, on failure or when DOCBATCH_KEEP_PREFECT_LOGS is set). Every process is
started in its own session and stopped by its process id (SIGTERM, then SIGKILL after a
timeout) when the block exits, even on failure; on failure the tail of every log is printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 180.0  # the first start migrates a fresh SQLite database: slow on 2 cores
STOP_TIMEOUT_S = 20.0
API_RETRIES = 5  # as PREFECT_CLIENT_MAX_RETRIES
RETRYABLE_STATUS = frozenset({429, 502, 503})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect_command() -> list[str]:
    venv_prefect = REPO_ROOT / ".venv" / "bin" / "prefect"
    if venv_prefect.exists():
        return [str(venv_prefect)]
    return [sys.executable, "-m", "prefect"]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


# -- process bookkeeping (Linux /proc; elsewhere only the direct child is stopped) ---------------

def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, start time) of a live, non-zombie process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _descendants(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live descendant of `root`."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat:
            children.setdefault(stat[0], []).append((pid, stat[2]))
    found: list[tuple[int, int]] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child[0])
    return found


def _group_members(pgid: int) -> list[tuple[int, int]]:
    """(pid, start time) of the live members of process group `pgid` (one we created)."""
    members = []
    for pid in _all_pids():
        stat = _stat(pid)
        if stat and stat[1] == pgid:
            members.append((pid, stat[2]))
    return members


def _same_process_alive(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == start


def _end_processes(processes: list[tuple[int, int]], timeout: float) -> None:
    """SIGTERM each still-running (pid, start time), SIGKILL those left after `timeout`."""
    processes = list(dict.fromkeys(processes))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [(pid, start) for pid, start in processes if _same_process_alive(pid, start)]
        if not alive:
            return
        for pid, _ in alive:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_same_process_alive(p, s) for p, s in alive):
            time.sleep(0.2)


class ManagedProcess:
    """A subprocess started in its own session, with stdout and stderr in one log file."""

    def __init__(self, name: str, args: Sequence[str], *, env: dict[str, str], cwd: Path, log_path: Path):
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            self.args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: its children can be reached by our pgid
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process, SIGKILL it after `timeout`; then end its leftover descendants.

        Descendants (a worker's flow-run supervisor and engine, which Prefect puts in a process
        group of their own) are recorded by pid and start time *before* the parent is stopped,
        so they can still be found once they are re-parented, and a recycled pid is never hit.
        """
        descendants = _descendants(self.pid)
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._stopped = [(self.pid, -1)] + descendants + _group_members(self.pid)
        _end_processes(self._stopped[1:], timeout=5)
        self._log.close()

    def survivors(self) -> list[int]:
        """Pids of this process or its recorded descendants still running after `stop()`."""
        alive = [self.pid] if self.alive() else []
        return alive + [pid for pid, start in getattr(self, "_stopped", [])[1:] if _same_process_alive(pid, start)]

    def tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)


class PrefectServer:
    """`prefect server start` on a free port of 127.0.0.1, with its own PREFECT_HOME."""

    def __init__(self, *, port: int | None = None, startup_timeout: float = STARTUP_TIMEOUT_S, ui: bool = False):
        self.port = port or _free_port()
        self.startup_timeout = startup_timeout
        self.ui = ui
        self.tmp = Path(tempfile.mkdtemp(prefix="docbatch-prefect-"))
        self.home = self.tmp / "home"
        self.logs = self.tmp / "logs"
        self.home.mkdir()
        self.logs.mkdir()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.env = self._make_env()
        self.processes: list[ManagedProcess] = []
        self.server: ManagedProcess | None = None
        self._failed = False

    # -- environment -----------------------------------------------------------------------

    def _make_env(self) -> dict[str, str]:
        # Drop the caller's PREFECT_* settings (profile, API URL, key...) so nothing leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        venv_bin = REPO_ROOT / ".venv" / "bin"
        if venv_bin.is_dir():
            env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_PROFILES_PATH": str(self.home / "profiles.toml"),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_UI_API_URL": self.api_url,
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "true" if self.ui else "false",
                "PREFECT_CLI_PROMPT": "false",
                "PREFECT_CLI_COLORS": "false",
                "PREFECT_CLI_WRAP_LINES": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "PrefectServer":
        self.server = self._spawn(
            "server",
            [*_prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
        )
        self.wait_healthy()
        return self

    def wait_healthy(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | str | None = None
        while time.monotonic() < deadline:
            if not self.server.alive():
                raise RuntimeError(
                    f"prefect server exited with code {self.server.popen.returncode} before becoming healthy\n"
                    f"{self.server.tail()}"
                )
            try:
                response = httpx.get(f"{self.api_url}/health", timeout=5)
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_error = exc
            time.sleep(1)
        raise TimeoutError(
            f"prefect server not healthy at {self.api_url} after {self.startup_timeout:.0f} s "
            f"(last error: {last_error})\n{self.server.tail()}"
        )

    def stop(self) -> None:
        # Workers first (they talk to the server), the server last.
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                print(f"[prefect_server] stopping {process.name} (pid {process.pid}) failed: {exc}", file=sys.stderr)
        if self._failed:
            self.print_logs()
            print(f"[prefect_server] logs kept in {self.logs}", file=sys.stderr)
        elif os.environ.get("DOCBATCH_KEEP_PREFECT_LOGS"):
            print(f"[prefect_server] logs kept in {self.logs}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "PrefectServer":
        try:
            return self.start()
        except BaseException:
            self._failed = True
            self.stop()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._failed = True
        self.stop()

    def survivors(self) -> dict[str, list[int]]:
        """Processes started here (or their descendants) still running; empty after a clean stop."""
        return {p.name: pids for p in self.processes if (pids := p.survivors())}

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str], *, cwd: Path | str | None = None, env: dict[str, str] | None = None) -> ManagedProcess:
        index = sum(1 for p in self.processes if p.name == name)
        log_path = self.logs / (f"{name}.log" if not index else f"{name}-{index}.log")
        process = ManagedProcess(name, args, env={**self.env, **(env or {})}, cwd=Path(cwd or REPO_ROOT), log_path=log_path)
        self.processes.append(process)
        return process

    def prefect(
        self, *args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None, timeout: float = 180, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run one `prefect ...` CLI command against this server; returns its output."""
        result = subprocess.run(
            [*_prefect_command(), *args],
            env={**self.env, **(env or {})},
            cwd=cwd or REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        with open(self.logs / "cli.log", "a") as log:
            log.write(f"$ prefect {' '.join(args)}  (exit {result.returncode})\n{result.stdout}{result.stderr}\n")
        if check and result.returncode != 0:
            raise AssertionError(f"`prefect {' '.join(args)}` exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def start_worker(
        self, pool: str = "docbatch-process", *extra_args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """`prefect worker start --pool <pool>` in the background (log in `<tmp>/logs/worker.log`)."""
        worker_env = {"PREFECT_WORKER_QUERY_SECONDS": "2", **(env or {})}  # poll fast: shorter tests
        return self._spawn(
            "worker",
            [*_prefect_command(), "worker", "start", "--pool", pool, *extra_args],
            cwd=cwd if cwd is not None else self.tmp,  # deliberately not the repo root
            env=worker_env,
        )

    # -- API -------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call, e.g. `server.api("GET", f"/flow_runs/{id}")`; returns the decoded JSON.

        Retried as Prefect's own client does: the server answers 503 when SQLite is busy (its
        scheduler, the worker and the flows all write to one file) and expects the caller to come
        back; 429 and 502 likewise.
        """
        for attempt in range(API_RETRIES + 1):
            response = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
            if response.status_code not in RETRYABLE_STATUS or attempt == API_RETRIES:
                break
            retry_after = response.headers.get("Retry-After", "")
            time.sleep(float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 0.5 * 2**attempt)
        response.raise_for_status()
        return response.json() if response.content else None

    # -- diagnostics -----------------------------------------------------------------------

    def error_lines(self) -> dict[str, list[str]]:
        """Lines containing `ERROR` in each process log (also for healthy runs: worth a look)."""
        found: dict[str, list[str]] = {}
        for path in sorted(self.logs.glob("*.log")):
            lines = [line for line in path.read_text(errors="replace").splitlines() if "ERROR" in line]
            if lines:
                found[path.name] = lines
        return found

    def print_logs(self, lines: int = 80) -> None:
        for path in sorted(self.logs.glob("*.log")):
            print(f"\n===== {path} (last {lines} lines) =====\n{_tail(path, lines)}", file=sys.stderr)
