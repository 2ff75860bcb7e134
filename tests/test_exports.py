"""Export tables and atomic writes, without a flow around them."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from blocks.local import LocalFolder
from blocks.models import BatchReport, BatchTotals, DocumentRef, DocumentResult, ErrorKind, ExportFormat
from tasks.exports import documents_frame, flatten, line_item_rows, write_exports


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
    written = write_exports(report, LocalFolder(path=str(tmp_path)), "b", list(ExportFormat))
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
