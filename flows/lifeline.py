"""Whatever a `docbatch` process starts ends when that process dies, even by `kill -9`.

Why: with no `PREFECT_API_URL`, Prefect 3 starts a temporary API server (a uvicorn process of
about 190 MB, `prefect.server.api.server.SubprocessASGIServer`) as a plain subprocess and stops
it only from an `atexit` hook. `kill -9`, the OOM killer or a crash run no hook: the server ran
on with no parent, forever. Prefect offers no setting for this and starts the server itself,
lazily, from whichever thread first needs the API; `PR_SET_PDEATHSIG` cannot be set from the
outside on a process one did not fork, and it fires when the forking *thread* ends anyway. The
parse workers and the export writer already die with their parent (`PR_SET_PDEATHSIG` in the
child, pipe EOF); this covers them again, and any child added later.

How: `hold()`, called once at the start of the CLI before anything else is started,
1. puts a random token in this process's environment (`DOCBATCH_LIFELINE`), which every process
   it starts inherits, grandchildren included (subprocess, multiprocessing's forkserver and its
   workers, Prefect's server: all pass the environment on);
2. starts a watchdog, this file run as a script, whose stdin is the read end of a pipe. Only this
   process holds the write end (not inheritable), so the kernel closes it when this process ends,
   however it ends. The watchdog then reads EOF (or sees its parent change, should a forked child
   hold the pipe) and ends every process whose environment (`/proc/PID/environ`) carries the
   token: SIGTERM, then SIGKILL for those still alive after `GRACE_S`. Then it exits.
   After a normal exit it finds nothing left (Prefect's `atexit` hook stopped its server) and
   exits at once.

Nothing is killed by process group or by name: the caller (a shell, pytest) may share the group
but not the token. The technique is the one Jenkins' ProcessTreeKiller uses (its BUILD_ID
cookie). Linux only; elsewhere `hold()` does nothing. One gap: `/proc/PID/environ` is the
environment a process was exec'd with, so a child forked from this process *without* exec
would not show the token (docbatch forks none: its workers come from the forkserver, which is
exec'd; its other children are exec'd by subprocess).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sys
import time
import uuid

ENV = "DOCBATCH_LIFELINE"
GRACE_S = 3.0  # SIGTERM first (the temporary server closes its database), then SIGKILL

watchdog: int | None = None  # its pid
_write_end: int | None = None  # never closed: the kernel closes it when this process ends


def hold() -> None:
    """Start the watchdog for this process (once; a no-op off Linux or if it cannot start)."""
    global watchdog, _write_end
    if watchdog is not None or not sys.platform.startswith("linux") or not os.path.isdir("/proc/self"):
        return
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    os.environ[ENV] = token  # a fresh one even if inherited: an outer docbatch sweeps its own
    read_end, write_end = os.pipe()  # both close-on-exec: no child of this process inherits them
    if read_end < 3:  # stdin was closed: keep the pipe clear of the child's 0-2 for the dup2 below
        read_end, closed = fcntl.fcntl(read_end, fcntl.F_DUPFD_CLOEXEC, 3), read_end
        os.close(closed)
    try:
        # posix_spawn, not subprocess.Popen: no Popen object left to warn "still running" at exit.
        watchdog = os.posix_spawn(
            sys.executable, [sys.executable, "-I", "-S", os.path.abspath(__file__), token, str(os.getpid())], os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read_end, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),  # holds no pipe a caller reads to EOF
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
            setsid=True,  # Ctrl-C or a hang-up of the terminal ends the batch, not its lifeline
        )
    except OSError:
        os.close(write_end)
        return
    finally:
        os.close(read_end)
    _write_end = write_end


def _carriers(token: str) -> list[int]:
    """Live processes (not zombies, not this one) whose environment holds the token."""
    needle = f"{ENV}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except (OSError, IndexError):
            continue  # gone, or not ours to read
        found.append(int(name))
    return found


def _signal(pids: list[int], number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, number)
        except OSError:
            pass


def _watch(token: str, parent: int) -> None:
    """Wait for the parent's end, then end every process that carries its token."""
    poller = select.poll()
    poller.register(0, select.POLLIN | select.POLLHUP)
    while True:
        if poller.poll(1000) and not os.read(0, 4096):
            break  # EOF: the parent is gone
        if os.getppid() != parent:
            break  # reparented: the parent is gone, a forked child of it still holds the pipe
    deadline = time.monotonic() + GRACE_S
    _signal(_carriers(token), signal.SIGTERM)
    while time.monotonic() < deadline:
        if not _carriers(token):
            return
        time.sleep(0.1)
    for _ in range(5):  # again, in case a survivor started something meanwhile
        left = _carriers(token)
        if not left:
            return
        _signal(left, signal.SIGKILL)
        time.sleep(0.1)


if __name__ == "__main__":
    _watch(sys.argv[1], int(sys.argv[2]))
