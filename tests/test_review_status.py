"""A batch whose one invoice does not add up: flagged for review, not failed, and said everywhere.

`docbatch run --json` as a user runs it (a subprocess against the session's real Prefect API);
then report.json, the exports, the artifacts and the `docbatch.batch.completed` event are read
back as a person or an automation would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd

from blocks.models import BatchReport
from tests.conftest import ROOT

INVOICE = """ACME Supplies GmbH
Hauptstrasse 5, 10115 Berlin
VAT ID: DE136695976

Invoice

Invoice number: {number}
Invoice date: 2024-03-05
Due date: 2024-04-04

Bill to: Kunde AG, Ringstrasse 1, 80331 Muenchen

Description            Qty   Unit price   Amount
Widget A                 2       50.00     100.00
Widget B                 1       20.00      20.00

Net total: 120.00 EUR
VAT amount: 22.80 EUR
Total: {total} EUR

IBAN: DE89 3704 0044 0532 0130 00
"""
REASON = "Net 120.00 plus VAT 22.80 is 142.80, but the grand total is 152.80 (off by 10.00)."


def make_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "a-good.txt").write_text(INVOICE.format(number="INV-2024-001", total="142.80"))
    (folder / "b-bad.txt").write_text(INVOICE.format(number="INV-2024-002", total="152.80"))  # 120.00 + 22.80 is not 152.80
    (folder / "c-broken.pdf").write_bytes(b"%PDF-1.4\n" + b"x" * 300)  # fails: no review at all


def completed_events(flow_run_id: str, timeout_s: float = 30.0) -> list[dict]:
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["docbatch.batch.completed"]),
                    related=EventRelatedFilter(resources_in_roles=[("prefect.flow-run." + flow_run_id, "flow-run")]),
                ),
                limit=50,
            )
        if page.events or time.monotonic() > deadline:
            return [event.payload for event in page.events]
        time.sleep(0.5)


def artifacts_of(flow_run_id: str) -> dict[str, object]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)])))
    return {a.key: a.data for a in found if a.key}


def test_an_invoice_that_does_not_add_up_needs_review_everywhere(cli_env: dict[str, str], tmp_path: Path) -> None:
    make_folder(tmp_path / "in")
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "--name", "review check"],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr

    # `docbatch run --json`: the count, the short list and each result's review.
    printed = json.loads(done.stdout)
    assert printed["status"] == "partially_failed"  # the broken PDF; needing review is not failing
    assert printed["totals"]["needs_review"] == 1 and printed["totals"]["succeeded"] == 2
    assert printed["needs_review"] == [{"index": 1, "file": "b-bad.txt", "reasons": [REASON]}]
    assert "1 needs review" in printed["message"]
    good, bad, broken = printed["results"]
    assert (good["status"], good["review"], good["review_reasons"]) == ("succeeded", "ok", [])
    assert (bad["status"], bad["review"], bad["review_reasons"]) == ("succeeded", "needs_review", [REASON])
    assert (broken["status"], broken["review"], broken["checks"]) == ("failed", None, [])
    failed_check = next(c for c in bad["checks"] if not c["passed"])
    assert failed_check["name"] == "totals.net_plus_tax" and failed_check["message"] == REASON
    assert {c["name"] for c in good["checks"]} >= {"totals.net_plus_tax", "line_items.sum", "currency.iso4217", "seller.vat_id.checksum", "payment.iban.checksum"}
    assert all(c["passed"] for c in good["checks"])

    # report.json holds the same.
    report = BatchReport.model_validate_json(Path(printed["exports"]["report.json"]).read_text())
    assert report.totals.needs_review == 1 and [(n.file, n.reasons) for n in report.needs_review] == [("b-bad.txt", [REASON])]
    assert report.results[1].checks and report.results[1].review == "needs_review"

    # The exports: review columns in the tables, the full checks in the JSON files.
    csv = pd.read_csv(report.exports["documents.csv"]).set_index("file")
    assert csv.loc["b-bad.txt", "review"] == "needs_review" and csv.loc["b-bad.txt", "review_reasons"] == REASON
    assert csv.loc["a-good.txt", "review"] == "ok" and pd.isna(csv.loc["a-good.txt", "review_reasons"])
    assert pd.isna(csv.loc["c-broken.pdf", "review"])
    parquet = pd.read_parquet(report.exports["documents.parquet"]).set_index("file")
    assert parquet.loc["b-bad.txt", "review_reasons"] == REASON
    xlsx = pd.read_excel(report.exports["documents.xlsx"], sheet_name="documents").set_index("file")
    assert xlsx.loc["b-bad.txt", "review"] == "needs_review"
    jsonl = [json.loads(line) for line in Path(report.exports["documents.jsonl"]).read_text().splitlines()]
    assert [c["name"] for c in jsonl[1]["checks"] if not c["passed"]] == ["totals.net_plus_tax"]

    # The artifacts: the summary counts and lists it, the documents table has a review column.
    assert report.flow_run_id
    artifacts = artifacts_of(report.flow_run_id)
    summary = artifacts["docbatch-summary"]
    assert "## Documents that need review" in summary and "`b-bad.txt`" in summary and REASON in summary
    assert "need review |" in summary and " s | 1 |" in summary  # the count, in the totals table's last column
    table = artifacts["docbatch-documents"]
    rows = json.loads(table) if isinstance(table, str) else table
    assert [row["review"] for row in rows] == ["ok", f"needs review: {REASON}", None]

    # The completed event carries the count (and the webhook's payload takes it from there).
    (event,) = completed_events(report.flow_run_id)
    assert event["needs_review"] == 1 and event["totals"]["needs_review"] == 1 and event["needs_review_files"] == ["b-bad.txt"]


def test_the_human_summary_says_how_many_need_review_and_why(tmp_path: Path) -> None:
    from rich.console import Console

    from blocks.embedded import EmbeddedExtractor
    from blocks.models import DocumentRef
    from flows.cli import print_summary
    from tasks.collect import review_notes, rollup
    from tasks.extract import ExtractOptions, extract_one
    from blocks.local import LocalDirectory

    make_folder(tmp_path / "in")
    source = LocalDirectory(path=str(tmp_path / "in"))
    options = ExtractOptions(batch_id="x", max_concurrency=1, max_file_bytes=10**6)
    results = [
        extract_one(DocumentRef(index=n, uri=str(tmp_path / "in" / name), name=name, size=1, fingerprint="x"), source, EmbeddedExtractor(), options)
        for n, name in enumerate(["a-good.txt", "b-bad.txt"])
    ]
    status, totals, message = rollup(results)
    assert (status, totals.needs_review, message) == ("completed", 1, "all 2 document(s) extracted; 1 needs review")
    now = __import__("datetime").datetime.now()
    report = BatchReport(name="b", source="s", status=status, message=message, totals=totals, progress=100, started=now, finished=now,
                         duration_s=0.1, extractor="embedded-extractor", results=results, needs_review=review_notes(results))
    console = Console(record=True, width=200)
    print_summary(report, console)
    text = console.export_text()
    assert "2 documents: 2 succeeded (1 need review), 0 failed" in text
    assert f"b-bad.txt: {REASON}" in text


def test_the_review_threshold_is_part_of_the_batch_key(tmp_path: Path) -> None:
    from blocks.embedded import EmbeddedExtractor
    from blocks.local import LocalDirectory
    from tasks.journal import settings_key
    from flows.params import ExtractionSettings

    source = LocalDirectory(path=str(tmp_path))
    keys = {settings_key(source, [], [], True, EmbeddedExtractor(), ExtractionSettings(review_min_confidence=v)) for v in (0.5, 0.5, 0.0, 0.8)}
    assert len(keys) == 3
