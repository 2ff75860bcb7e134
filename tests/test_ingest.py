"""Incremental ingestion: only new or changed files, a manifest that survives and heals, one run at a time."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from flows.params import ExportSettings, ExtractionSettings
from tasks.manifest import MANIFESTS, ManifestError
from tests.conftest import corpus


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def calls(path: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture()
def counting(prefect_api: str, tmp_path: Path) -> tuple[str, Path]:
    from tests.counting import CountingExtractor

    log = tmp_path / "calls.txt"
    name = f"ingest-{uuid.uuid4().hex[:8]}"
    CountingExtractor(calls_file=str(log), latency_ms=20).save(name)
    return f"test-counting-extractor/{name}", log


def test_only_new_and_changed_files_are_extracted(counting: tuple[str, Path], tmp_path: Path) -> None:
    from flows.ingest import ingest_inbox

    extractor, log = counting
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for n in range(3):
        write(inbox, f"inv-{n}.txt", f"invoice INV-{n}\n")
    settings = dict(source=str(inbox), extraction=ExtractionSettings(extractor=extractor), export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"]), settle_s=0)

    first = ingest_inbox(**settings)
    assert first.status == "completed" and sorted(first.new) == ["inv-0.txt", "inv-1.txt", "inv-2.txt"]
    assert first.manifest and Path(first.manifest).is_file() and first.batch_flow_run_id
    assert sorted(calls(log)) == ["inv-0.txt", "inv-1.txt", "inv-2.txt"]

    second = ingest_inbox(**settings)
    assert second.status == "nothing_new" and second.unchanged == 3 and second.batch_flow_run_id is None
    assert len(calls(log)) == 3

    write(inbox, "inv-3.txt", "invoice INV-3\n")
    os.utime(inbox / "inv-0.txt", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    write(inbox, "inv-1.txt", "invoice INV-1 corrected\n")  # really changed
    third = ingest_inbox(**settings)
    assert third.new == ["inv-3.txt"] and third.changed == ["inv-1.txt"] and third.unchanged == 2
    assert sorted(calls(log)[3:]) == ["inv-1.txt", "inv-3.txt"]  # the touched file was not extracted again

    # Other extraction settings are another manifest: everything is extracted again.
    fourth = ingest_inbox(**{**settings, "extraction": ExtractionSettings(extractor=extractor, keep_text=True)})
    assert sorted(fourth.new) == ["inv-0.txt", "inv-1.txt", "inv-2.txt", "inv-3.txt"]


def test_a_batch_whose_report_leaves_its_results_out_is_still_recorded_whole(
    counting: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `RESULTS_KEPT` the batch's report holds no results: ingestion reads them from its report.json."""
    import tasks.collect
    from flows.ingest import ingest_inbox

    monkeypatch.setattr(tasks.collect, "RESULTS_KEPT", 2)
    extractor, log = counting
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for n in range(5):
        write(inbox, f"inv-{n}.txt", f"invoice INV-{n}\n")
    settings = dict(source=str(inbox), extraction=ExtractionSettings(extractor=extractor), export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"]), settle_s=0)
    first = ingest_inbox(**settings)
    assert first.status == "completed" and first.totals is not None and first.totals.total == 5
    second = ingest_inbox(**settings)
    assert second.status == "nothing_new" and second.unchanged == 5
    assert sorted(calls(log)) == [f"inv-{n}.txt" for n in range(5)]
    assert not list((tmp_path / "out" / ".manifests").glob("*.todo.jsonl"))  # the handed listing is gone


def test_failures_are_retried_then_parked_and_a_fixed_file_goes_through(prefect_api: str, tmp_path: Path) -> None:
    from flows.ingest import ingest_inbox

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copyfile(corpus("invoice2data", "compare", "Orlen", "Orlen.txt"), inbox / "good.txt")
    (inbox / "bad.pdf").write_bytes(b"%PDF-1.4\n" + b"x" * 500)  # no objects: corrupt
    settings = dict(source=str(inbox), export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"]), max_attempts=2, settle_s=0)

    first = ingest_inbox(**settings)
    assert first.status == "partially_failed" and first.parked == []
    second = ingest_inbox(**settings)
    assert second.retried == ["bad.pdf"] and second.parked == ["bad.pdf"] and second.unchanged == 1
    third = ingest_inbox(**settings)
    assert third.status == "nothing_new" and third.parked == ["bad.pdf"] and third.retried == []
    assert "1 parked" in third.message

    shutil.copyfile(corpus("invoice2data", "compare", "coolblue1", "coolblue1.pdf"), inbox / "bad.pdf")
    fourth = ingest_inbox(**settings)
    assert fourth.changed == ["bad.pdf"] and fourth.status == "completed" and fourth.parked == []


def test_a_corrupt_or_missing_manifest_is_rebuilt_and_said_and_a_newer_one_refused(counting: tuple[str, Path], tmp_path: Path) -> None:
    from flows.ingest import ingest_inbox

    extractor, log = counting
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for n in range(2):
        write(inbox, f"inv-{n}.txt", f"invoice INV-{n}\n")
    out = tmp_path / "out"
    settings = dict(source=str(inbox), extraction=ExtractionSettings(extractor=extractor), export=ExportSettings(output_dir=str(out), formats=["csv"]), settle_s=0)
    first = ingest_inbox(**settings)
    manifest = Path(first.manifest or "")

    manifest.write_text('{"format": "docbatch-manifest", "version": 1, "key": ')  # torn
    healed = ingest_inbox(**settings)
    assert healed.status == "nothing_new" and healed.manifest_note and "could not be read" in healed.manifest_note
    assert "rebuilt from 1 earlier batch report" in healed.manifest_note and len(calls(log)) == 2

    manifest.unlink()
    again = ingest_inbox(**settings)
    assert again.status == "nothing_new" and again.manifest_note and "missing" in again.manifest_note
    assert len(calls(log)) == 2 and manifest.is_file()

    manifest.write_text('{"format": "docbatch-manifest", "version": 99, "key": "x", "source": "y"}')
    with pytest.raises(ManifestError, match="newer docbatch"):
        ingest_inbox(**settings)
    assert not list((out / MANIFESTS).glob("*.lock"))  # the lock is released whatever happens


def test_overlapping_runs_never_extract_a_file_twice(prefect_api: str, tmp_path: Path) -> None:
    from flows.ingest import ingest_inbox
    from tests.counting import CountingExtractor

    log, hold = tmp_path / "calls.txt", tmp_path / "hold.txt"
    extractor = f"test-counting-extractor/overlap-{uuid.uuid4().hex[:8]}"
    # The first run extracts nothing while this process is listed in `hold`: it keeps its lock
    # until the second run has given up, however slowly a loaded machine starts that one's flow.
    CountingExtractor(calls_file=str(log), latency_ms=20, hold_file=str(hold)).save(extractor.split("/")[1])
    hold.write_text(f"{os.getpid()}\n")
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    names = [f"inv-{n:02d}.txt" for n in range(60)]
    for name in names:
        write(inbox, name, f"invoice {name}\n")
    settings = dict(source=str(inbox), extraction=ExtractionSettings(extractor=extractor), export=ExportSettings(output_dir=str(out), formats=["csv"]), settle_s=0, max_concurrency=1)
    reports: list = []
    first = threading.Thread(target=lambda: reports.append(ingest_inbox(**settings)))
    first.start()
    try:
        deadline = time.monotonic() + 60
        while not list((out / MANIFESTS).glob("*.lock")) and time.monotonic() < deadline:
            time.sleep(0.01)  # the second run starts once the first holds the lock
        assert list((out / MANIFESTS).glob("*.lock")), "the first run never took its lock"
        second = threading.Thread(target=lambda: reports.append(ingest_inbox(**settings)))
        second.start()
        second.join(timeout=120)  # a second run that took the files too would be held here as well
        assert [r.status for r in reports] == ["busy"], "the second run did not find the first one's lock"
    finally:
        hold.write_text("")  # the first run goes on
    first.join(timeout=120)
    assert sorted(r.status for r in reports) == ["busy", "completed"]
    assert sorted(calls(log)) == names  # each exactly once
    assert not list((out / MANIFESTS).glob("*.lock"))


def test_a_file_still_being_written_waits_for_the_next_run(counting: tuple[str, Path], tmp_path: Path) -> None:
    from flows.ingest import ingest_inbox

    extractor, log = counting
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write(inbox, "done.txt", "invoice DONE\n")
    growing = write(inbox, "growing.txt", "invoice GROW\n")
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with growing.open("a") as handle:
                handle.write("more\n")
            time.sleep(0.1)

    thread = threading.Thread(target=writer)
    thread.start()
    settings = dict(source=str(inbox), extraction=ExtractionSettings(extractor=extractor), export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"]), settle_s=1.0)
    try:
        first = ingest_inbox(**settings)
    finally:
        stop.set()
        thread.join()
    assert first.new == ["done.txt"] and first.deferred == ["growing.txt"] and calls(log) == ["done.txt"]
    second = ingest_inbox(**settings)
    assert second.new == ["growing.txt"] and second.deferred == [] and calls(log) == ["done.txt", "growing.txt"]


def test_a_missing_source_fails_the_run_clearly_and_the_next_run_recovers(counting: tuple[str, Path], tmp_path: Path) -> None:
    from blocks.errors import SourceUnavailable
    from flows.ingest import ingest_inbox

    extractor, log = counting
    inbox = tmp_path / "inbox"
    settings = dict(source=str(inbox), extraction=ExtractionSettings(extractor=extractor), export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"]), settle_s=0)
    with pytest.raises(SourceUnavailable, match="does not exist"):
        ingest_inbox(**settings)
    inbox.mkdir()
    write(inbox, "inv-1.txt", "invoice INV-1\n")
    back = ingest_inbox(**settings)
    assert back.status == "completed" and back.new == ["inv-1.txt"] and calls(log) == ["inv-1.txt"]


def test_a_file_deleted_after_listing_is_a_vanished_result_tried_again_only_if_it_returns(prefect_api: str, tmp_path: Path) -> None:
    from flows.ingest import ingest_inbox
    from tests import fakes

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write(inbox, "stays.txt", "Invoice no. A-100\n")
    write(inbox, "goes.txt", "Invoice no. A-200\n")
    name = f"vanishing-{uuid.uuid4().hex[:8]}"
    fakes.ChangingDirectory(path=str(inbox), deleted=["goes.txt"]).save(name)
    settings = dict(source=f"test-changing-directory/{name}", export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"]), settle_s=0)
    report = ingest_inbox(**settings)
    assert report.status == "partially_failed" and report.totals and report.totals.failed == 1
    batch = json.loads(Path(report.batch_report or "").read_text())
    assert {r["ref"]["name"]: r.get("error_kind") for r in batch["results"]} == {"goes.txt": "vanished", "stays.txt": None}
    write(inbox, "goes.txt", "Invoice no. A-200\n")  # back again, so tried again (and deleted again)
    again = ingest_inbox(**settings)
    assert again.changed == ["goes.txt"] and again.unchanged == 1  # a different file than the one that vanished


def test_an_ingestion_killed_mid_batch_is_finished_by_the_next_run_without_doing_anything_twice(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    from flows.ingest import ingest_inbox
    from tasks.journal import SEGMENTS
    from tests.conftest import ROOT
    from tests.counting import CountingExtractor

    inbox, out, log = tmp_path / "inbox", tmp_path / "out", tmp_path / "calls.txt"
    inbox.mkdir()
    names = [f"inv-{n:03d}.txt" for n in range(120)]
    for name in names:
        write(inbox, name, f"invoice {name}\n")
    block = f"killed-{uuid.uuid4().hex[:8]}"
    CountingExtractor(calls_file=str(log), latency_ms=40).save(block)
    script = (
        "import tests.counting\n"
        "from flows.ingest import ingest_inbox\n"
        "from flows.params import ExportSettings, ExtractionSettings\n"
        f"ingest_inbox(source={str(inbox)!r}, settle_s=0, max_concurrency=2, "
        f"extraction=ExtractionSettings(extractor='test-counting-extractor/{block}'), "
        f"export=ExportSettings(output_dir={str(out)!r}, formats=['csv', 'jsonl']))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and child.poll() is None:
        journals = list(out.glob(f"*/{SEGMENTS}/*.jsonl"))
        if journals and len(journals[0].read_text().splitlines()) > 30:
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert child.wait(timeout=30) == -signal.SIGKILL, "the ingestion ended before it could be killed"
    recorded = {json.loads(line)["ref"]["name"] for line in journals[0].read_text().splitlines()[1:] if line.endswith("}")}
    killed_calls = calls(log)

    report = ingest_inbox(
        source=str(inbox), settle_s=0, max_concurrency=2,
        extraction=ExtractionSettings(extractor=f"test-counting-extractor/{block}"),
        export=ExportSettings(output_dir=str(out), formats=["csv", "jsonl"]),
    )
    assert report.status == "completed" and sorted(report.new) == names  # the manifest had nothing yet
    assert report.totals and report.totals.resumed == len(recorded) and report.totals.total == len(names)
    second = calls(log)[len(killed_calls):]
    assert sorted(second) == sorted(set(names) - recorded)  # only what the checkpoint lacked
    exported = [json.loads(line)["ref"]["name"] for line in Path(report.batch_report or "").with_name("documents.jsonl").read_text().splitlines()]
    assert exported == names  # each document once, in order
    assert len(list(out.glob("*/report.json"))) == 1  # the killed run published nothing
    assert ingest_inbox(
        source=str(inbox), settle_s=0, extraction=ExtractionSettings(extractor=f"test-counting-extractor/{block}"),
        export=ExportSettings(output_dir=str(out), formats=["csv"]),
    ).status == "nothing_new"
