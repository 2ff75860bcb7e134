"""The batch flow against a real Prefect API: order, concurrency, failures, artifacts, exports."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from blocks.errors import BatchRefused, SourceUnavailable
from blocks.local import LocalDirectory, LocalFolder
from blocks.models import BatchReport, DocumentResult, ErrorKind
from flows.batch import STREAM_AFTER, extract_batch
from flows.history import recorded_task_runs, wait_for_history
from flows.params import ExportSettings, ExtractionSettings
from tasks.export_files import ExportWriter
from tasks.journal import SegmentWriter
from tasks.sharding import plan_shards
from tests import fakes
from tests.conftest import copy_into, corpus

pytestmark = pytest.mark.usefixtures("prefect_api")

INVOICES = ["AmazonWebServices", "FlipkartInvoice", "SammyMaystoneLinesTest", "coolblue1", "free_fiber"]


def scripted(**options) -> tuple[str, str]:
    """Save a scripted extractor block; returns (its name for the flow, its tag for probes)."""
    tag = uuid.uuid4().hex[:10]
    fakes.ScriptedExtractor(tag=tag, **options).save(tag, overwrite=True)
    return f"test-scripted-extractor/{tag}", tag


def text_files(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"doc-{i:04d}.txt" for i in range(count)]
    for name in names:
        (folder / name).write_text(f"Invoice no. {name}\nTotal: 10.00 EUR\n")
    return names


def run(folder: Path, out: Path, extractor: str = "embedded", **kwargs) -> BatchReport:
    extraction = kwargs.pop("extraction", {})
    formats = kwargs.pop("formats", None)
    export = ExportSettings(output_dir=str(out), **({"formats": formats} if formats else {}))
    return extract_batch(
        source=str(folder),
        extraction=ExtractionSettings(extractor=extractor, retry_backoff_s=0, **extraction),
        export=export,
        **kwargs,
    )


def read_artifacts(flow_run_id: str) -> dict[str, object]:
    """The flow run's artifacts by key (one version each)."""
    return {a.key: a for a in read_all_artifacts(flow_run_id) if a.key}


def read_all_artifacts(flow_run_id: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)])))


def test_public_invoices_in_input_order_with_exports(tmp_path: Path) -> None:
    files = [corpus("invoice2data", "compare", c, f"{c}.pdf") for c in INVOICES]
    files.append(corpus("invoice2data", "compare", "Orlen", "Orlen.txt"))
    names = copy_into(tmp_path / "in", *files)
    report = run(tmp_path / "in", tmp_path / "out", batch_name="public invoices", extraction={"keep_text": True})

    assert report.status == "completed"
    assert [r.ref.name for r in report.results] == names
    assert [r.ref.index for r in report.results] == list(range(len(names)))
    for result in report.results:
        if result.ref.name.endswith(".pdf"):
            case = result.ref.name[:-4]
            expected = json.loads(corpus("invoice2data", "compare", case, f"{case}.expected.json").read_text())[0]
            assert expected["invoice_number"].lstrip("#") in result.text
            assert result.media_type == "application/pdf" and result.pages >= 1
    assert report.totals.total == len(names) and report.totals.succeeded == len(names)
    assert report.progress == 100.0 and report.success_rate == 100.0

    exports = report.exports
    csv = pd.read_csv(exports["documents.csv"])
    assert csv["file"].tolist() == names and (csv["status"] == "succeeded").all()
    assert pd.read_parquet(exports["documents.parquet"])["file"].tolist() == names
    assert pd.read_excel(exports["documents.xlsx"], sheet_name="documents")["file"].tolist() == names
    assert [json.loads(line)["ref"]["name"] for line in Path(exports["documents.jsonl"]).read_text().splitlines()] == names
    assert [d["ref"]["name"] for d in json.loads(Path(exports["documents.json"]).read_text())] == names
    on_disk = BatchReport.model_validate_json(Path(exports["report.json"]).read_text())
    assert on_disk.results == report.results and on_disk.status == report.status
    assert csv.set_index("file").loc["AmazonWebServices.pdf", "invoice_number"] == "42183017"

    from prefect import get_client

    with get_client(sync_client=True) as client:
        assert client.read_flow_run(uuid.UUID(report.flow_run_id)).name == "public invoices"


@pytest.mark.parametrize("bound", [2, 5])
def test_concurrency_bound_is_reached_never_exceeded(tmp_path: Path, bound: int) -> None:
    extractor, tag = scripted(latency_ms=150)
    text_files(tmp_path / "in", 12)
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=bound, formats=["csv"])
    assert report.totals.succeeded == 12
    assert fakes.PEAK[tag] == bound


def test_sharded_large_batch_keeps_bound_order_and_full_history(tmp_path: Path) -> None:
    extractor, tag = scripted(latency_ms=10)
    names = text_files(tmp_path / "in", 160)
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=3, formats=["csv"])
    assert [r.ref.name for r in report.results] == names
    assert fakes.PEAK[tag] == 3
    expected_runs = len(plan_shards(160, 3)) + 2
    assert expected_runs < 160  # documents were grouped into shards
    assert wait_for_history(report.flow_run_id, expected_runs)
    assert recorded_task_runs(report.flow_run_id) == (expected_runs, expected_runs)


def test_sharded_batch_shares_work_and_retries_only_transient_documents(tmp_path: Path) -> None:
    names = text_files(tmp_path / "in", 120)  # over PER_DOCUMENT_LIMIT: one task run per slot
    first_shard = names[0::3]  # dealt in turn: task run 1 of 3 gets documents 0, 3, 6, ...
    flaky = {"doc-0004.txt": 1, "doc-0117.txt": 1}
    extractor, tag = scripted(latency_ms=5, slow_ms={name: 60 for name in first_shard}, transient_failures=flaky)
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=3, extraction={"retries": 2}, formats=["csv"])

    assert [r.ref.name for r in report.results] == names
    assert pd.read_csv(report.exports["documents.csv"])["file"].tolist() == names
    assert report.status == "completed" and fakes.PEAK[tag] == 3
    for name in names:
        assert fakes.CALLS[(tag, name)] == 1 + flaky.get(name, 0), name  # never twice, but for a retry
    assert [report.results[names.index(n)].attempts for n in flaky] == [2, 2]
    # The first task run's documents are 12 times slower: the other two took over its last ones.
    extracted_by = {fakes.TASK_RUN[(tag, name)] for name in first_shard}
    assert len(extracted_by) > 1
    assert wait_for_history(report.flow_run_id, 3 + 2)


def test_a_crashed_task_run_costs_only_the_document_it_was_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = text_files(tmp_path / "in", 120)
    extractor, tag = scripted(latency_ms=5)
    record = SegmentWriter.record

    def crash_on_one(self: SegmentWriter, result: DocumentResult, text: str | None = None) -> None:
        if result.ref.name == "doc-0010.txt" and result.status == "succeeded":  # the fourth document of task run 2 of 3
            raise RuntimeError("simulated bug in the task run")
        record(self, result, text)  # the share's own row for the document its crashed task run lost

    monkeypatch.setattr(SegmentWriter, "record", crash_on_one)
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=3, formats=["csv"])

    assert [r.ref.name for r in report.results] == names
    lost = report.results[10]
    assert lost.status == "failed" and lost.error_kind == ErrorKind.internal
    assert "simulated bug in the task run" in lost.error
    # Its task run's other documents were extracted by the two others, each exactly once.
    assert all(r.status == "succeeded" for r in report.results if r.ref.index != 10)
    assert all(fakes.CALLS[(tag, name)] == 1 for name in names)
    assert report.status == "partially_failed"
    rows = pd.read_csv(report.exports["documents.csv"])
    assert rows["file"].tolist() == names and rows["status"].tolist().count("failed") == 1


def slow_listing_tail(monkeypatch: pytest.MonkeyPatch, after: int, delay_s: float, tag: str, names: list[str]) -> dict[str, int]:
    """Slow the folder's listing down past its first `after` files; returns what was seen when it ended."""
    listed = LocalDirectory.iter_documents
    seen: dict[str, int] = {}

    def slow(self: LocalDirectory):  # noqa: ANN202
        for n, ref in enumerate(listed(self)):
            if n >= after:
                time.sleep(delay_s)
            yield ref
        seen["extracted"] = sum(fakes.CALLS[(tag, name)] for name in names)

    monkeypatch.setattr(LocalDirectory, "iter_documents", slow)
    return seen


def test_a_batch_without_a_document_limit_extracts_while_its_listing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = text_files(tmp_path / "in", STREAM_AFTER + 60)
    extractor, tag = scripted(latency_ms=5)
    when_listed = slow_listing_tail(monkeypatch, STREAM_AFTER, 0.01, tag, names)
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=3, max_documents=0, batch_name="streamed", formats=["csv"])

    # Documents were extracted during the last 0.6 s of the listing, not after it.
    assert when_listed["extracted"] > 0
    assert [r.ref.name for r in report.results] == names and report.totals.total == len(names)
    assert all(fakes.CALLS[(tag, name)] == 1 for name in names) and fakes.PEAK[tag] == 3
    assert pd.read_csv(report.exports["documents.csv"])["file"].tolist() == names
    assert report.status == "completed"
    assert wait_for_history(report.flow_run_id, 3 + 2)
    progress = read_artifacts(report.flow_run_id)["docbatch-progress"]
    assert progress.data == 100.0 and progress.description == f"streamed: {len(names)} of {len(names)} documents finished"


def test_a_document_limit_is_checked_on_the_whole_listing_before_any_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = text_files(tmp_path / "in", STREAM_AFTER + 20)
    extractor, tag = scripted(latency_ms=5)
    when_listed = slow_listing_tail(monkeypatch, STREAM_AFTER, 0.01, tag, names)
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=3, max_documents=len(names), formats=["csv"])
    assert when_listed["extracted"] == 0
    assert [r.ref.name for r in report.results] == names and report.status == "completed"


def test_a_listing_that_fails_midway_fails_the_batch_and_publishes_no_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = text_files(tmp_path / "in", STREAM_AFTER + 40)
    extractor, tag = scripted(latency_ms=2)
    listed = LocalDirectory.iter_documents

    def failing(self: LocalDirectory):  # noqa: ANN202
        for n, ref in enumerate(listed(self)):
            if n == STREAM_AFTER + 20:
                time.sleep(0.2)  # the batch is extracting by now
                raise OSError(5, "Input/output error", str(tmp_path / "in"))
            yield ref

    monkeypatch.setattr(LocalDirectory, "iter_documents", failing)
    with pytest.raises(OSError, match="Input/output error"):
        run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=3, max_documents=0, formats=["csv", "json"])
    extracted = sum(fakes.CALLS[(tag, name)] for name in names)
    assert extracted > 0  # it had started
    # Nothing was published: no final-named export file, only the checkpoint kept for `resume`,
    # which holds every document extracted before the batch stopped.
    published = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert [p.parent.name for p in published] == ["segments"] and published[0].suffix == ".jsonl"
    assert len(published[0].read_text().splitlines()) == 1 + extracted  # its header, then one line per result

    monkeypatch.undo()  # the folder reads again: resuming extracts only what is missing
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=3, max_documents=0, formats=["csv", "json"], resume=True)
    assert report.status == "completed" and report.totals.resumed == extracted
    assert [r.ref.name for r in report.results] == names
    assert all(fakes.CALLS[(tag, name)] == 1 for name in names)


def test_a_refused_batch_stops_the_listing_it_was_extracting_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No document limit: extraction would start past STREAM_AFTER references, but the extractor
    # block named does not exist. The refusal must also stop the listing, not leave it to go
    # through the rest of the folder after the flow run has ended.
    names = text_files(tmp_path / "in", STREAM_AFTER + 100)
    listed = LocalDirectory.iter_documents
    yielded = [0]

    def slow(self: LocalDirectory):  # noqa: ANN202
        for n, ref in enumerate(listed(self)):
            if n >= STREAM_AFTER:
                time.sleep(0.05)  # the rest of the folder would take 5 s
            yielded[0] += 1
            yield ref

    monkeypatch.setattr(LocalDirectory, "iter_documents", slow)
    with pytest.raises(SourceUnavailable, match="no saved block named"):
        run(tmp_path / "in", tmp_path / "out", "test-scripted-extractor/no-such-block", max_documents=0)
    when_refused = yielded[0]
    time.sleep(1.0)
    assert STREAM_AFTER < when_refused < len(names) and yielded[0] == when_refused
    assert not list((tmp_path / "out").rglob("*.csv"))


def test_one_corrupt_document_gives_partially_failed(tmp_path: Path) -> None:
    copy_into(
        tmp_path / "in",
        corpus("invoice2data", "compare", "coolblue1", "coolblue1.pdf"),
        corpus("nasty-inputs", "derived", "truncated-half_AmazonWebServices.pdf"),
        corpus("invoice2data", "compare", "free_fiber", "free_fiber.pdf"),
    )
    report = run(tmp_path / "in", tmp_path / "out")
    assert report.status == "partially_failed"
    assert (report.totals.succeeded, report.totals.failed) == (2, 1)
    assert [r.ref.name for r in report.results] == ["coolblue1.pdf", "free_fiber.pdf", "truncated-half_AmazonWebServices.pdf"]
    bad = report.results[2]
    assert bad.status == "failed" and bad.error_kind == ErrorKind.corrupt and "PDF" in bad.error
    assert bad.attempts == 1  # permanent: never retried
    errors = pd.read_excel(report.exports["documents.xlsx"], sheet_name="errors")
    assert errors["file"].tolist() == [bad.ref.name] and errors["error_kind"].tolist() == ["corrupt"]


def test_all_failing_gives_failed(tmp_path: Path) -> None:
    copy_into(
        tmp_path / "in",
        corpus("nasty-inputs", "broken", "pdfplumber_empty-zero-bytes.pdf"),
        corpus("nasty-inputs", "encrypted", "pdfminer_aes-256-r6.pdf"),
    )
    report = run(tmp_path / "in", tmp_path / "out")
    assert report.status == "failed"
    assert [r.error_kind for r in report.results] == [ErrorKind.encrypted, ErrorKind.empty]
    assert report.success_rate == 0.0


def test_empty_folder_is_a_clear_completed_batch(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / ".DS_Store").write_bytes(b"\x00")
    report = run(tmp_path / "in", tmp_path / "out")
    assert report.status == "completed" and report.totals.total == 0
    assert "no documents" in report.message
    assert Path(report.exports["report.json"]).exists()
    assert len(pd.read_csv(report.exports["documents.csv"])) == 0


def test_transient_errors_are_retried_permanent_ones_are_not(tmp_path: Path) -> None:
    extractor, tag = scripted(transient_failures={"doc-0001.txt": 1, "doc-0003.txt": 99}, permanent_failures=["doc-0002.txt"])
    text_files(tmp_path / "in", 4)
    report = run(tmp_path / "in", tmp_path / "out", extractor, extraction={"retries": 2}, formats=["csv"])
    by_name = {r.ref.name: r for r in report.results}
    assert by_name["doc-0001.txt"].status == "succeeded" and by_name["doc-0001.txt"].attempts == 2
    assert by_name["doc-0002.txt"].status == "failed" and by_name["doc-0002.txt"].attempts == 1
    assert fakes.CALLS[(tag, "doc-0002.txt")] == 1
    stuck = by_name["doc-0003.txt"]
    assert stuck.status == "failed" and stuck.error_transient and stuck.attempts == 3
    assert fakes.CALLS[(tag, "doc-0000.txt")] == 1  # a retry re-extracts only what failed transiently
    assert report.status == "partially_failed"


def test_artifacts_have_stable_keys_and_counts(tmp_path: Path) -> None:
    extractor, _ = scripted(permanent_failures=["doc-0002.txt"])
    text_files(tmp_path / "in", 5)
    report = run(tmp_path / "in", tmp_path / "out", extractor, batch_name="artifact check")
    artifacts = read_artifacts(report.flow_run_id)
    assert {"docbatch-progress", "docbatch-documents", "docbatch-summary"} <= set(artifacts)
    assert artifacts["docbatch-progress"].data == 100.0
    table = artifacts["docbatch-documents"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [row["file"] for row in rows] == [f"doc-{i:04d}.txt" for i in range(5)]
    assert [row["status"] for row in rows].count("failed") == 1
    summary = artifacts["docbatch-summary"].data
    assert "partially_failed" in summary and "doc-0002.txt" in summary and "scripted to be corrupt" in summary
    assert report.output_dir in summary and "| 5 | 4 | 1 | 0 | 80.0 % |" in summary


def test_a_truncated_documents_table_is_sent_while_the_batch_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.artifacts
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    monkeypatch.setattr(tasks.artifacts, "TABLE_ROW_LIMIT", 10)  # as with 5,000 of a larger batch
    extractor, _ = scripted(latency_ms=50, permanent_failures=["doc-0003.txt"])
    names = text_files(tmp_path / "in", 30)
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=2, batch_name="early table", formats=["csv"])

    [table] = [a for a in read_all_artifacts(report.flow_run_id) if a.key == "docbatch-documents"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [row["file"] for row in rows] == names[:10]
    assert rows[3]["status"] == "failed" and "scripted to be corrupt" in rows[3]["error"]
    assert "first 10" in table.description
    # Sent once its ten rows were final, with 20 documents (0.5 s of extraction) still to go:
    # before the collector started.
    assert wait_for_history(report.flow_run_id, 30 + 2)  # task runs reach the server as events
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(report.flow_run_id)])))
    [collector] = [r for r in runs if r.name.startswith("collect-results")]
    assert table.created < collector.start_time


def test_exports_that_cannot_be_written_fail_the_batch_and_the_summary_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The summary goes out while the exports are being finished; when they then fail, the
    # summary left in the UI must not list files that were never published.
    def disk_full(self: ExportWriter, report_head: str) -> None:  # a full disk cannot be staged here
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ExportWriter, "finish", disk_full)
    text_files(tmp_path / "in", 3)
    name = f"disk full {uuid.uuid4().hex[:8]}"
    with pytest.raises(OSError, match="No space left on device"):
        run(tmp_path / "in", tmp_path / "out", batch_name=name)

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        [flow_run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    assert flow_run.state.is_failed()
    summaries = [a for a in read_all_artifacts(str(flow_run.id)) if a.key == "docbatch-summary"]
    latest = max(summaries, key=lambda a: a.created).data
    assert "could not be written" in latest and "No space left on device" in latest
    assert "## Exports" not in latest and "documents.csv" not in latest
    assert not [a for a in read_all_artifacts(str(flow_run.id)) if a.key == "docbatch-exports"]  # the link was retracted
    published = [p.parent.name for p in (tmp_path / "out").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert published == ["segments"]  # kept for `resume`; no export under a final name


def test_nested_fields_and_line_items_exports(tmp_path: Path) -> None:
    extractor, _ = scripted(with_line_items=True, permanent_failures=["doc-0001.txt"])
    text_files(tmp_path / "in", 3)
    report = run(tmp_path / "in", tmp_path / "out", extractor)
    documents = pd.read_csv(report.exports["documents.csv"])
    assert documents["vendor.name"].tolist()[0] == "ACME" and pd.isna(documents["vendor.name"][1])
    assert documents["status"].tolist() == ["succeeded", "failed", "succeeded"]
    items = pd.read_csv(report.exports["line_items.csv"])
    assert items["file"].tolist() == ["doc-0000.txt", "doc-0000.txt", "doc-0002.txt", "doc-0002.txt"]
    assert items["amount"].tolist() == [1.5, 3.0, 1.5, 3.0]
    assert len(pd.read_excel(report.exports["documents.xlsx"], sheet_name="line_items")) == 4


def test_too_many_documents_is_refused_before_any_extraction(tmp_path: Path) -> None:
    extractor, tag = scripted()
    text_files(tmp_path / "in", 5)
    with pytest.raises(BatchRefused, match="more than 3 documents"):
        run(tmp_path / "in", tmp_path / "out", extractor, max_documents=3)
    assert not any(key[0] == tag for key in fakes.CALLS)
    assert not (tmp_path / "out").exists()
    assert run(tmp_path / "in", tmp_path / "out", extractor, max_documents=0, formats=["csv"]).totals.total == 5


def test_unknown_export_format_is_a_parameter_error(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="rtf"):
        ExportSettings(formats=["csv", "rtf"])
    text_files(tmp_path / "in", 1)
    with pytest.raises(Exception, match=r"export\.formats\.1: Input should be 'json', 'jsonl', 'csv', 'xlsx', 'parquet', 'review', 'xml', 'txt', 'html', 'docx' or 'pdf'"):
        extract_batch(source=str(tmp_path / "in"), export={"output_dir": str(tmp_path / "out"), "formats": ["csv", "rtf"]})
    assert not (tmp_path / "out").exists()


def test_default_run_name_and_subset_of_formats(tmp_path: Path) -> None:
    text_files(tmp_path / "in", 2)
    report = run(tmp_path / "in", tmp_path / "out", formats=["csv", "parquet"])
    assert re.fullmatch(r"Batch \d{4}-\d\d-\d\d \d\d:\d\d", report.name)
    assert sorted(Path(report.output_dir).iterdir()) == sorted(
        Path(report.output_dir) / n for n in ("documents.csv", "documents.parquet", "report.json")
    )


@pytest.mark.parametrize("bound", [0, 65])
def test_concurrency_outside_1_to_64_is_rejected(tmp_path: Path, bound: int) -> None:
    from prefect.exceptions import ParameterTypeError

    text_files(tmp_path / "in", 1)
    with pytest.raises(ParameterTypeError, match="max_concurrency"):
        extract_batch(source=str(tmp_path / "in"), max_concurrency=bound, export={"output_dir": str(tmp_path / "out")})


def test_a_batch_over_the_kept_limit_returns_its_report_without_results_and_loses_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `RESULTS_KEPT` the flow returns counts and notes, not the results: they are all in report.json."""
    import tasks.collect
    from flows.reports import load_report, report_results

    monkeypatch.setattr(tasks.collect, "RESULTS_KEPT", 5)
    names = text_files(tmp_path / "in", 12)
    extractor, _ = scripted(latency_ms=1, permanent_failures=["doc-0003.txt"], with_line_items=True)
    report = run(tmp_path / "in", tmp_path / "out", extractor, max_concurrency=3, formats=["csv", "jsonl"])

    assert report.results == [] and report.results_omitted == 12
    assert report.status == "partially_failed" and report.totals.total == 12 and report.totals.failed == 1
    assert "line_items.csv" in report.exports  # known without the results
    stored = load_report(report.exports["report.json"])
    assert [r.ref.name for r in stored.results] == names and stored.results_omitted == 0
    streamed = list(report_results(LocalFolder(path=str(tmp_path / "out")), Path(report.output_dir).name))
    assert [r.model_dump() for r in streamed] == [r.model_dump() for r in stored.results]
    assert pd.read_csv(report.exports["documents.csv"])["file"].tolist() == names
    summary = read_artifacts(report.flow_run_id)["docbatch-summary"].data
    assert "doc-0003.txt" in summary and "scripted to be corrupt" in summary  # failures listed without the results
