"""Nothing lost on a crash: the checkpoint journal, `kill -9` halfway through, then `--resume`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from blocks.local import LocalFolder
from blocks.models import DocumentRef, DocumentResult
from tasks.journal import SEGMENTS, JournalHeader, SegmentWriter, find_resumable
from tests.conftest import ROOT

DOCUMENTS = 240  # a sharded batch, as large batches run, with its exports written by a child process
# The CLI as a user runs it, in a child process that also imports the test extractor's module
# so that the saved block's class is known there.
CLI = [sys.executable, "-c", "import tests.counting; from flows.cli import main; main()"]


def make_documents(folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    names = []
    for number in range(DOCUMENTS):
        name = f"inv-{number:04d}.txt"
        (folder / name).write_text(f"invoice INV-{number:04d}\n" + "x" * number)
        names.append(name)
    return names


def calls_by_process(path: Path) -> dict[str, list[str]]:
    calls: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        pid, name = line.split(" ", 1)
        calls.setdefault(pid, []).append(name)
    return calls


def journal_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines()[1:]:
        try:
            names.append(json.loads(line)["ref"]["name"])
        except (ValueError, KeyError):
            pass  # a line torn by the kill
    return names


def export_processes(parent: int) -> list[int]:
    """Child processes of `parent` running the export writer."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("PPid:"))
            cmdline = (status.parent / "cmdline").read_bytes()
        except (OSError, StopIteration, ValueError):
            continue
        if ppid == parent and b"tasks.export_process" in cmdline:
            found.append(int(status.parent.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for whoever adopted it to reap it."""
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return state.split()[1] != "Z"


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Exports without the per-document timings, the one thing two runs never share."""
    return frame.drop(columns=["duration_ms"]).reset_index(drop=True)


@pytest.mark.timeout(300)
def test_kill_9_halfway_then_resume_extracts_only_the_rest(cli_env: dict[str, str], tmp_path: Path) -> None:
    from tests.counting import CountingExtractor

    names = make_documents(tmp_path / "in")
    calls = tmp_path / "calls.txt"
    CountingExtractor(calls_file=str(calls), latency_ms=40).save("crash-test", overwrite=True)
    args = [
        "run", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--name", "crash test",
        "--extractor", "test-counting-extractor/crash-test", "--concurrency", "4", "--max-documents", "0",
    ]

    # 1. Kill -9 the batch once its journal holds 40 results.
    child = subprocess.Popen([*CLI, *args], cwd=ROOT, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    journal: Path | None = None
    while time.monotonic() < deadline and child.poll() is None:
        found = list((tmp_path / "out").glob(f"*/{SEGMENTS}/*.jsonl"))
        if found and len(found[0].read_text().splitlines()) > 40:
            journal = found[0]
            writers = export_processes(child.pid)
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert child.wait(timeout=30) == -signal.SIGKILL, f"the batch ended before it could be killed: {child.stderr.read()[-2000:] if child.stderr else ''}"
    assert journal is not None
    assert writers, "a batch of this size writes its exports in a child process"
    deadline = time.monotonic() + 10
    while any(map(running, writers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(running, writers)), "the export writer outlived the killed batch"
    batch_folder = journal.parent.parent
    recorded = journal_names(journal)
    assert 40 <= len(recorded) < DOCUMENTS
    # Nothing with a final name but the checkpoint's segments: no export looks complete after the crash.
    assert sorted(p.name for p in batch_folder.iterdir() if not p.name.startswith(".")) == [SEGMENTS]

    # 2. The same command with --resume extracts exactly the documents the journal lacks.
    done = subprocess.run([*CLI, *args, "--resume", "--json"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["status"] == "completed"
    assert report["totals"]["total"] == DOCUMENTS and report["totals"]["resumed"] == len(recorded)
    assert [r["ref"]["name"] for r in report["results"]] == names
    first, second = calls_by_process(calls).values()
    assert sorted(second) == sorted(set(names) - set(recorded)), "the resumed run extracted a recorded document, or missed one"
    assert set(first) >= set(recorded)
    assert Path(report["output_dir"]) == batch_folder  # finished where the interrupted run started
    assert not (batch_folder / SEGMENTS).exists() and not list(batch_folder.glob(".*.tmp"))
    assert "Traceback" not in done.stderr

    # 3. The exports equal those of an uninterrupted run of the same batch.
    calls.unlink()
    whole = subprocess.run(
        [*CLI, *args[:3], str(tmp_path / "whole"), *args[4:], "--json"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=240
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    uninterrupted = Path(json.loads(whole.stdout)["output_dir"])
    for name in ("documents.csv", "documents.parquet"):
        read = pd.read_csv if name.endswith(".csv") else pd.read_parquet
        pd.testing.assert_frame_equal(comparable(read(batch_folder / name)), comparable(read(uninterrupted / name)))
    resumed_xlsx = pd.read_excel(batch_folder / "documents.xlsx", sheet_name=None)
    whole_xlsx = pd.read_excel(uninterrupted / "documents.xlsx", sheet_name=None)
    assert list(resumed_xlsx) == list(whole_xlsx) == ["documents", "line_items", "errors"]
    pd.testing.assert_frame_equal(comparable(resumed_xlsx["documents"]), comparable(whole_xlsx["documents"]))
    for name in ("documents.jsonl", "documents.json"):
        resumed_rows = pd.read_json(batch_folder / name, lines=name.endswith("l"))
        whole_rows = pd.read_json(uninterrupted / name, lines=name.endswith("l"))
        pd.testing.assert_frame_equal(comparable(resumed_rows), comparable(whole_rows))


# --- the journal on its own ---------------------------------------------------------------------


def result(index: int, name: str, fingerprint: str = "1:1") -> DocumentResult:
    ref = DocumentRef(index=index, uri=f"/in/{name}", name=name, size=1, fingerprint=fingerprint)
    return DocumentResult(ref=ref, status="succeeded", fields={"n": index}, attempts=1)


def header(key: str = "k1") -> JournalHeader:
    return JournalHeader(batch_key=key, batch_name="b", source="/in", run="r1")


def test_journal_matches_by_name_and_fingerprint_and_ignores_a_torn_line(tmp_path: Path) -> None:
    destination = LocalFolder(path=str(tmp_path))
    journal = SegmentWriter.open(destination, "20260101-000000-b-1", header())
    journal.record(result(0, "a.pdf"))
    journal.record(result(1, "b.pdf", fingerprint="1:2"))
    journal.close()
    with (tmp_path / "20260101-000000-b-1" / SEGMENTS / journal.name).open("a") as handle:
        handle.write('{"ref": {"index": 2, "uri": "/in/c.pdf", "na')  # the process died here
    (tmp_path / "20260101-000000-b-1" / ".documents.csv.x1.tmp").write_text("half")

    found = find_resumable(destination, "k1")
    assert found is not None and found.folder == "20260101-000000-b-1" and found.torn_lines == 1
    assert not list((tmp_path / found.folder).glob(".*.tmp"))  # the dead run's temporaries are gone
    now = [
        DocumentRef(index=0, uri="/in/new.pdf", name="new.pdf", size=1, fingerprint="1:1"),
        DocumentRef(index=1, uri="/in/a.pdf", name="a.pdf", size=1, fingerprint="1:1"),
        DocumentRef(index=2, uri="/in/b.pdf", name="b.pdf", size=1, fingerprint="1:3"),  # changed since
    ]
    taken = found.take(now)
    assert list(taken) == [1] and taken[1].ref.index == 1 and taken[1].fields == {"n": 0}


def test_the_tail_reads_each_new_line_once_and_skips_a_line_still_being_written(tmp_path: Path) -> None:
    from tasks.journal import SegmentTail

    destination = LocalFolder(path=str(tmp_path))
    tail = SegmentTail(destination, "f", "r1")
    assert tail.poll() == []  # no segment yet
    first = SegmentWriter.open(destination, "f", header())
    second = SegmentWriter.open(destination, "f", header().model_copy(update={"share": 1}))
    other_run = SegmentWriter.open(destination, "f", header().model_copy(update={"run": "r0"}))
    first.record(result(0, "a.pdf"))
    other_run.record(result(5, "old.pdf"))  # an earlier run's segment in the same folder: not this run's
    assert [r.ref.index for r, _ in tail.poll()] == [0]
    with (tmp_path / "f" / SEGMENTS / second.name).open("a") as handle:
        handle.write('{"ref": {"index": 1, "uri": "/in/b.pdf", "na')  # not yet a whole line
    assert tail.poll() == []
    with (tmp_path / "f" / SEGMENTS / second.name).open("a") as handle:
        handle.write('me": "b.pdf", "size": 1, "fingerprint": "1:1"}, "status": "succeeded"}\n')
    first.record(result(2, "c.pdf"))
    first.record(result(0, "a.pdf"))  # recorded again (a share started again): the merger takes it once
    found = tail.poll()
    assert sorted(r.ref.index for r, _ in found) == [0, 1, 2]
    assert all(text == r.model_dump_json() or r.ref.index == 1 for r, text in found)
    from flows.batch import InOrder

    handed: list[int] = []
    ordered = InOrder(lambda ready, texts: handed.extend(r.ref.index for r in ready))
    ordered.offer([result(0, "a.pdf")])
    ordered.offer(found)
    assert handed == [0, 1, 2] and ordered.count == 3


def test_only_an_unfinished_batch_with_the_same_key_is_resumed(tmp_path: Path) -> None:
    destination = LocalFolder(path=str(tmp_path))
    for folder, key in (("20260101-000001-b-1", "k1"), ("20260101-000002-b-2", "other"), ("20260101-000003-b-3", "k1")):
        journal = SegmentWriter.open(destination, folder, header(key))
        journal.record(result(0, "a.pdf"))
        journal.close()
    (tmp_path / "20260101-000003-b-3" / "report.json").write_text("{}")  # that one finished
    found = find_resumable(destination, "k1")
    assert found is not None and found.folder == "20260101-000001-b-1"
    assert find_resumable(destination, "unknown") is None
    assert find_resumable(LocalFolder(path=str(tmp_path / "nothing-here")), "k1") is None


def test_a_journal_from_a_newer_docbatch_is_a_clear_error(tmp_path: Path) -> None:
    destination = LocalFolder(path=str(tmp_path))
    SegmentWriter.open(destination, "20260101-000000-b-1", header().model_copy(update={"version": 99})).close()
    with pytest.raises(ValueError, match="newer docbatch"):
        find_resumable(destination, "k1")


def test_resume_without_a_checkpoint_extracts_everything(prefect_api: str, tmp_path: Path) -> None:
    from flows.batch import extract_batch
    from flows.params import ExportSettings

    (tmp_path / "in").mkdir()
    for number in range(3):
        (tmp_path / "in" / f"{number}.txt").write_text(f"Invoice no. A-{number}00\n")
    report = extract_batch(source=str(tmp_path / "in"), resume=True, export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"]))
    assert report.status == "completed" and report.totals.resumed == 0 and report.totals.succeeded == 3
    assert not list((tmp_path / "out").rglob(SEGMENTS))  # a finished batch keeps no checkpoint
    assert report.finished >= report.started and report.started <= datetime.now(timezone.utc)
