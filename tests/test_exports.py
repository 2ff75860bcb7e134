"""Export tables and atomic writes, without a flow around them."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from blocks.local import LocalFolder
from blocks.models import DEFAULT_FORMATS, BatchReport, BatchTotals, DocumentRef, DocumentResult, ErrorKind, ExportFormat
from tasks.export_files import ExportWriter, has_line_items
from tasks.export_process import ExportProcess
from tasks.exports import PROCESS_FROM, ExportStream, documents_frame, flatten, line_item_rows, write_exports


def result(index: int, status: str = "succeeded", **fields) -> DocumentResult:
    ref = DocumentRef(index=index, uri=f"/x/{index}.pdf", name=f"{index}.pdf", size=10, fingerprint="10:1")
    if status == "failed":
        return DocumentResult(ref=ref, status="failed", error="bad \x07 bytes", error_kind=ErrorKind.corrupt)
    return DocumentResult(ref=ref, status="succeeded", fields=fields, pages=1)


def test_flatten_nested_fields_to_dotted_columns() -> None:
    assert flatten({"vendor": {"name": "ACME", "address": {"city": "Köln"}}, "tags": ["a", 1]}) == {
        "vendor.name": "ACME",
        "vendor.address.city": "Köln",
        "tags": '["a", 1]',
    }


def test_rows_keep_failed_documents_and_input_order() -> None:
    results = [result(0, total=1.5), result(1, "failed"), result(2, total="n/a", status_note={"x": 1})]
    frame = documents_frame(results)
    assert frame["index"].tolist() == [0, 1, 2]
    assert frame["status"].tolist() == ["succeeded", "failed", "succeeded"]
    assert frame.loc[1, "error_kind"] == "corrupt"
    assert "status_note.x" in frame.columns


def test_field_named_like_a_column_does_not_overwrite_it() -> None:
    frame = documents_frame([result(0, status_field="x", file="evil.pdf")])
    assert frame.loc[0, "file"] == "0.pdf" and frame.loc[0, "field.file"] == "evil.pdf"


def test_line_items_carry_their_source_file() -> None:
    rows = line_item_rows([result(0, lines=[{"name": "a", "qty": 1}, {"name": "b", "qty": 2}]), result(1, "failed")])
    assert [(r["file"], r["line"], r["name"]) for r in rows] == [("0.pdf", 1, "a"), ("0.pdf", 2, "b")]


def test_all_formats_readable_and_mixed_types_survive_parquet(tmp_path: Path) -> None:
    results = [result(0, total=1.5, line_items=[{"d": "x"}]), result(1, "failed"), result(2, total="12,00")]
    now = datetime.now(timezone.utc)
    report = BatchReport(
        name="t", source="s", status="partially_failed", message="m", totals=BatchTotals(total=3, succeeded=2, failed=1),
        progress=100, started=now, finished=now, duration_s=0, extractor="e", results=results,
    )
    written = write_exports(report, LocalFolder(path=str(tmp_path)), "b", DEFAULT_FORMATS)
    assert set(written) == {"documents.csv", "line_items.csv", "documents.jsonl", "documents.json", "documents.xlsx", "documents.parquet", "report.json"}
    totals = pd.read_parquet(written["documents.parquet"])["total"]
    assert totals[0] == "1.5" and pd.isna(totals[1]) and totals[2] == "12,00"
    sheets = pd.read_excel(written["documents.xlsx"], sheet_name=None)
    assert list(sheets) == ["documents", "line_items", "errors"]
    assert sheets["errors"]["file"].tolist() == ["1.pdf"]
    assert "\x07" not in sheets["errors"]["error"][0]
    assert BatchReport.model_validate_json(Path(written["report.json"]).read_text()).exports == written
    assert not list(tmp_path.rglob(".*.tmp"))


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    folder = LocalFolder(path=str(tmp_path))
    with folder.atomic_path("b", "documents.csv") as path:
        path.write_text("complete\n")
    with pytest.raises(RuntimeError):
        with folder.atomic_path("b", "documents.csv") as path:
            path.write_text("half a fi")
            raise RuntimeError("crash mid-write")
    assert (tmp_path / "b" / "documents.csv").read_text() == "complete\n"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["documents.csv"]


# --- the child-process writer used by large batches ---------------------------------------------


def many_results(count: int) -> list[DocumentResult]:
    """Varied rows: failures, line items, and a field that first appears late (the workbook's
    streamed header then lacks it and the whole sheet is rewritten at the end)."""
    results = []
    for index in range(count):
        if index % 17 == 5:
            results.append(result(index, "failed"))
        elif index == count - 3:
            results.append(result(index, total=index, late_field="x"))
        else:
            results.append(result(index, total=index * 1.5, vendor={"name": f"v{index % 7}"},
                                  line_items=[{"d": f"item {index}", "qty": index % 3}] if index % 4 == 0 else []))
    return results


def report_of(results: list[DocumentResult]) -> BatchReport:
    now = datetime.now(timezone.utc)
    failed = sum(r.status == "failed" for r in results)
    return BatchReport(
        name="t", source="s", status="partially_failed", message="m",
        totals=BatchTotals(total=len(results), succeeded=len(results) - failed, failed=failed),
        progress=100, started=now, finished=now, duration_s=0, extractor="e", results=results,
    )


def stream_in_chunks(stream: ExportStream, results: list[DocumentResult], size: int = 37) -> None:
    for start in range(0, len(results), size):
        stream.add(results[start:start + size])


def assert_same_exports(one: dict[str, str], other: dict[str, str]) -> None:
    assert list(one) == list(other)
    for name in ("documents.csv", "line_items.csv", "documents.jsonl", "documents.json"):
        assert Path(one[name]).read_bytes() == Path(other[name]).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(one["documents.parquet"]), pd.read_parquet(other["documents.parquet"]))
    for sheet, frame in pd.read_excel(one["documents.xlsx"], sheet_name=None).items():
        pd.testing.assert_frame_equal(frame, pd.read_excel(other["documents.xlsx"], sheet_name=sheet), obj=sheet)
    reports = [BatchReport.model_validate_json(Path(w["report.json"]).read_text()) for w in (one, other)]
    assert reports[0].results == reports[1].results
    assert [r.exports for r in reports] == [one, other]


def uniform_results(count: int) -> list[DocumentResult]:
    return [result(index, total=index * 1.5, quantity=index % 5, vendor={"name": "ACME"}) for index in range(count)]


def a_count_missing_late(count: int) -> list[DocumentResult]:
    """Whole-number quantities, one missing after the first chunk: the column becomes float."""
    return [result(index, "failed") if index == count - 10 else result(index, quantity=index % 5) for index in range(count)]


@pytest.mark.parametrize(
    ("make", "rewritten"),
    [(uniform_results, False), (a_count_missing_late, True), (many_results, True), (lambda count: [], True)],
    ids=["uniform", "int-column-turns-float", "column-first-seen-late", "empty"],
)
def test_the_streamed_csv_is_byte_for_byte_the_whole_tables_csv(tmp_path: Path, make, rewritten: bool) -> None:
    results = make(1234)  # three chunks of FRAME_ROWS
    writer = ExportWriter({"documents.csv": tmp_path / "documents.csv"})
    for start in range(0, len(results), 7):
        writer.add(results[start:start + 7])
    writer.finish("{}")
    expected = documents_frame(results).to_csv(index=False) if results else writer.documents().to_csv(index=False)
    assert (tmp_path / "documents.csv").read_text() == expected
    assert writer._csv is not None and writer._csv.rewritten is rewritten


def test_a_large_batch_writes_its_exports_in_a_child_process_with_the_same_result(tmp_path: Path) -> None:
    results = many_results(PROCESS_FROM + 50)
    report = report_of(results)
    folder = LocalFolder(path=str(tmp_path))

    in_process = ExportStream(folder, "here", list(ExportFormat), expected=0)
    assert isinstance(in_process.writer, ExportWriter)
    stream_in_chunks(in_process, results)
    here = in_process.finish(report, line_items=has_line_items(report.results), count=len(report.results))

    child = ExportStream(folder, "child", list(ExportFormat), expected=len(results))
    assert isinstance(child.writer, ExportProcess)
    stream_in_chunks(child, results)
    assert not (tmp_path / "child" / "documents.csv").exists()  # nothing final before finish
    there = child.finish(report, line_items=has_line_items(report.results), count=len(report.results))

    assert child.writer.answered and child.writer.process.wait(timeout=10) == 0
    assert_same_exports(here, there)
    assert sorted(p.name for p in (tmp_path / "child").iterdir()) == sorted(Path(w).name for w in there.values())


def test_a_dead_export_process_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    results = many_results(PROCESS_FROM + 10)
    report = report_of(results)
    folder = LocalFolder(path=str(tmp_path))
    reference = write_exports(report, folder, "reference", list(ExportFormat))

    stream = ExportStream(folder, "b", list(ExportFormat), expected=len(results))
    assert isinstance(stream.writer, ExportProcess)
    stream_in_chunks(stream, results[:100])
    stream.writer.process.kill()  # the OOM killer, say
    stream.writer.process.wait()
    stream_in_chunks(stream, results[100:])
    with caplog.at_level("WARNING", logger="docbatch.exports"):
        written = stream.finish(report, line_items=has_line_items(report.results), count=len(report.results))
    assert "writing the exports in this process instead" in caplog.text
    assert_same_exports(reference, written)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_an_abandoned_stream_stops_its_child_and_publishes_nothing(tmp_path: Path) -> None:
    stream = ExportStream(LocalFolder(path=str(tmp_path)), "b", list(ExportFormat), expected=PROCESS_FROM)
    stream_in_chunks(stream, many_results(50))
    process = stream.writer.process
    stream.close()  # the batch failed
    assert process.poll() is not None
    assert list((tmp_path / "b").iterdir()) == []
