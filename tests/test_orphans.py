"""`kill -9` of `docbatch run` leaves no process behind: not Prefect's temporary server, not the
forkserver's parse workers, not the export writer (flows/lifeline.py).

The CLI runs as a user first runs it: a real subprocess with no `PREFECT_API_URL`, so Prefect
starts its temporary API server (uvicorn) itself, with a Prefect home of its own (its SQLite
database is not the session's).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, corpus

PDFS = 400  # more than tasks.exports.PROCESS_FROM: the exports are written by a child process
SCANS = 4  # read by OCR, about 5 s each: the batch is still running when it is killed


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, command line) of every live (non-zombie) process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if stat[0] != b"Z":
            found[int(entry)] = (int(stat[1]), int(stat[19]), cmdline.strip())
    return found


def descendants(root: int) -> dict[int, tuple[int, int, str]]:
    table = processes()
    found: dict[int, tuple[int, int, str]] = {}
    parents = [root]
    while parents:
        parent = parents.pop()
        for pid, row in table.items():
            if row[0] == parent and pid not in found:
                found[pid] = row
                parents.append(pid)
    return found


def alive(pid: int, started: int) -> bool:
    """The same process (same start time) still running: a zombie or a reused pid counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return stat[0] != b"Z" and int(stat[19]) == started


def mid_batch(tree: dict[int, tuple[int, int, str]]) -> bool:
    """The temporary server, the export writer and at least one parse worker are all running."""
    commands = {pid: row[2] for pid, row in tree.items()}
    forkservers = {pid for pid, command in commands.items() if "multiprocessing.forkserver" in command}
    return (
        any("uvicorn" in command and "prefect.server.api.server:create_app" in command for command in commands.values())
        and any("tasks.export_process" in command for command in commands.values())
        and any(tree[pid][0] in forkservers for pid in forkservers)  # a worker: forked by the forkserver
    )


@pytest.mark.timeout(400)
def test_kill_9_of_the_cli_leaves_no_process_of_its_tree(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pdf, scan = corpus("invoice2data", "compare", "coolblue1", "coolblue1.pdf"), corpus("invoice2data", "compare", "AmazonWebServices", "AmazonWebServices.png")
    for number in range(PDFS):
        shutil.copyfile(pdf, folder / f"doc-{number:04d}.pdf")
    for number in range(SCANS):
        shutil.copyfile(scan, folder / f"doc-{number * 100 + 50:04d}-scan.png")
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    stderr = (tmp_path / "stderr.txt").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(folder), "-o", str(tmp_path / "out"), "-c", "2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
    )
    seen: dict[int, tuple[int, int, str]] = {}
    try:
        deadline = time.monotonic() + 300  # a fresh Prefect database takes 25-35 s to migrate here
        while time.monotonic() < deadline and child.poll() is None:
            tree = descendants(child.pid)
            seen.update(tree)
            if mid_batch(tree):
                break
            time.sleep(0.2)
        assert child.poll() is None, f"the batch ended before it could be killed: {(tmp_path / 'stderr.txt').read_text()[-3000:]}"
        assert mid_batch(seen), f"no temporary server, export writer and parse worker seen in time: {seen}"
        seen.update(descendants(child.pid))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL

        deadline = time.monotonic() + 10
        left = dict(seen)
        while left and time.monotonic() < deadline:
            left = {pid: row for pid, row in left.items() if alive(pid, row[1])}
            time.sleep(0.1)
        assert not left, "outlived the killed batch:\n" + "\n".join(f"{pid} {row[2][:160]}" for pid, row in left.items())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pid, row in seen.items():
            if alive(pid, row[1]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        stderr.close()
