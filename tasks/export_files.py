"""Writing a batch's export files into paths the caller chose, as results arrive.

This module imports neither Prefect nor any destination: `ExportWriter` runs in the batch
process for small batches and in a child process (`tasks.export_process`) for large ones, and
the caller publishes the files (`tasks.exports.ExportStream`). Tabular formats (CSV, XLSX,
Parquet) go through pandas. The two JSON formats and report.json are written from the pydantic
models' own JSON instead: pandas would turn None into NaN and ints into floats inside nested
fields, and report.json must round-trip into a `BatchReport`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from blocks.models import DocumentResult, ExportFormat
from tasks.export_readable import READABLE_FILES, ReadableReport, open_readable

LINE_ITEM_KEYS = ("line_items", "lines")
DOCUMENT_COLUMNS = [
    "index", "file", "status", "review", "review_reasons", "error_kind", "error", "media_type", "pages", "size",
    "sha256", "attempts", "duration_ms", "extractor", "fields_source", "reader", "warnings", "uri",
]
ERROR_COLUMNS = ["index", "file", "status", "error_kind", "error", "uri"]
XLSX_CELL_LIMIT = 32_767
# Rows gathered before they become one DataFrame. Results arrive a few at a time while a batch
# runs; a frame per arrival cost about 4 ms per document at 1,000 documents (and a slow concat).
FRAME_ROWS = 500
_ILLEGAL_XLSX = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists become JSON text so every cell holds a scalar."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(flatten(item, f"{name}."))
        elif isinstance(item, (list, tuple)):
            flat[name] = json.dumps(item, ensure_ascii=False, default=str)
        else:
            flat[name] = item
    return flat


def document_row(result: DocumentResult) -> dict[str, Any]:
    ref = result.ref
    row: dict[str, Any] = {
        "index": ref.index,
        "file": ref.name,
        "status": result.status,
        # 'ok' / 'needs_review' (None for failed and skipped documents), and why, joined with '; '.
        # The checks themselves (name, passed, message, fields) are in documents.json(l) and report.json.
        "review": result.review,
        "review_reasons": "; ".join(result.review_reasons) or None,
        "error_kind": result.error_kind.value if result.error_kind else None,
        "error": result.error,
        "media_type": result.media_type,
        "pages": result.pages,
        "size": ref.size,
        "sha256": result.sha256,
        "attempts": result.attempts,
        "duration_ms": result.duration_ms,
        "extractor": result.extractor,
        "fields_source": result.fields_source,
        "reader": result.reader,
        "warnings": "; ".join(result.warnings) or None,
        "uri": ref.uri,
    }
    if result.route is not None:  # routing extractor only
        row["route"] = result.route
    if result.tokens_in is not None or result.tokens_out is not None:  # model back-ends only
        row["tokens_in"], row["tokens_out"] = result.tokens_in, result.tokens_out
    fields = {k: v for k, v in result.fields.items() if k not in LINE_ITEM_KEYS}
    for key, value in flatten(fields).items():
        row[key if key not in row else f"field.{key}"] = value
    if result.text is not None:
        row["text"] = result.text
    return row


def line_item_rows(results: Iterable[DocumentResult]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for result in results:
        for key in LINE_ITEM_KEYS:
            items = result.fields.get(key)
            if not isinstance(items, list):
                continue
            for number, item in enumerate(items, start=1):
                row: dict[str, Any] = {"index": result.ref.index, "file": result.ref.name, "line": number}
                values = flatten(item) if isinstance(item, dict) else {"value": item}
                for name, value in values.items():
                    row[name if name not in row else f"item.{name}"] = value
                rows.append(row)
    return rows


def documents_frame(results: list[DocumentResult]) -> pd.DataFrame:
    rows = [document_row(r) for r in results]
    columns = list(DOCUMENT_COLUMNS)
    seen = set(columns)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return _typed(pd.DataFrame(rows, columns=columns))


def _uniform(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every object column a single type, as Parquet requires: mixed columns become text."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype != object:
            continue  # numbers, nullable ints and pandas' string dtype hold one type already
        values = [v for v in frame[column].tolist() if v is not None and not (isinstance(v, float) and pd.isna(v))]
        kinds = {type(v) for v in values}
        if not kinds or len(kinds) == 1 and kinds <= {str, int, float, bool}:
            continue
        if kinds <= {int, float}:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        else:
            frame[column] = [None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in frame[column].tolist()]
    return frame


XLSX_OPTIONS = {"constant_memory": True, "strings_to_numbers": False, "strings_to_formulas": False, "strings_to_urls": False}


def _xlsx_cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):  # None and NaN: an empty cell
        return None
    if isinstance(value, str):
        return _ILLEGAL_XLSX.sub("\ufffd", value)[:XLSX_CELL_LIMIT]
    if isinstance(value, (bool, int, float)):
        return value
    return str(value)


def write_xlsx(path: Path, sheets: dict[str, pd.DataFrame]) -> None:
    """One sheet per frame, written row by row with XlsxWriter.

    pandas' own `to_excel` formats every cell in Python and took 0.5 s per 1,000 documents
    here (5 s for a 10,000-document batch); writing the same rows straight to XlsxWriter in
    constant-memory mode takes under half of that and never holds the workbook in memory.
    """
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(path), XLSX_OPTIONS)
    try:
        bold = workbook.add_format({"bold": True})
        for name, frame in sheets.items():
            sheet = workbook.add_worksheet(name)
            sheet.write_row(0, 0, [str(c) for c in frame.columns], bold)
            for number, row in enumerate(frame.itertuples(index=False, name=None), start=1):
                sheet.write_row(number, 0, [_xlsx_cell(v) for v in row])
    finally:
        workbook.close()


# Export files in the order a report lists them, with the format that selects each.
EXPORT_FILES: dict[str, ExportFormat] = {
    "documents.csv": ExportFormat.csv,
    "line_items.csv": ExportFormat.csv,
    "documents.jsonl": ExportFormat.jsonl,
    "documents.json": ExportFormat.json,
    "documents.xlsx": ExportFormat.xlsx,
    "documents.parquet": ExportFormat.parquet,
    **READABLE_FILES,  # documents.xml, .txt, .html, .docx, .pdf (tasks.export_readable)
}
REPORT_NAME = "report.json"


def export_names(formats: Iterable[ExportFormat], line_items: bool = True) -> list[str]:
    """The export files a batch with these formats writes (line_items.csv only with line items)."""
    selected = set(formats)
    return [name for name, fmt in EXPORT_FILES.items() if fmt in selected and (line_items or name != "line_items.csv")]


def has_line_items(results: Iterable[DocumentResult]) -> bool:
    """Whether `line_item_rows(results)` has a row, without building them."""
    return any(isinstance(r.fields.get(key), list) and r.fields[key] for r in results for key in LINE_ITEM_KEYS)


class _StreamedSheet:
    """Rows appended in order under a header frozen at the first row; `fits` says if a row still can."""

    def __init__(self, sheet: Any, columns: list[str], bold: Any) -> None:
        self.sheet = sheet
        self.columns = list(columns)
        self.known = set(columns)
        self.next_row = 1
        sheet.write_row(0, 0, self.columns, bold)

    def fits(self, row: dict[str, Any]) -> bool:
        return row.keys() <= self.known

    def append(self, row: dict[str, Any]) -> None:
        self.sheet.write_row(self.next_row, 0, [_xlsx_cell(row.get(c)) for c in self.columns])
        self.next_row += 1


class _StreamedWorkbook:
    """documents.xlsx written while the batch runs, so its cost (the largest export here: about
    1.7 s per 10,000 documents) overlaps the extraction instead of adding to the batch's end.

    XlsxWriter's constant-memory mode needs each sheet's header before its rows, and the
    columns depend on the fields documents return. The header is taken when the first
    succeeded document arrives (plus the extractor's declared fields); if a later row brings a
    column the header lacks, the stream is dropped and the collector writes the workbook from
    all rows at the end instead: slower, never different.
    """

    def __init__(self, path: Path) -> None:
        import xlsxwriter

        self.path = path
        self.workbook = xlsxwriter.Workbook(str(path), XLSX_OPTIONS)
        self.bold = self.workbook.add_format({"bold": True})
        # Sheet order is fixed at creation: documents, line_items, errors.
        self._documents_sheet = self.workbook.add_worksheet("documents")
        self._items_sheet = self.workbook.add_worksheet("line_items")
        self.errors = _StreamedSheet(self.workbook.add_worksheet("errors"), ERROR_COLUMNS, self.bold)
        self.documents: _StreamedSheet | None = None
        self.items: _StreamedSheet | None = None
        self.broken = False
        self.closed = False

    def add(self, documents: list[dict[str, Any]], items: list[dict[str, Any]], columns: list[str]) -> bool:
        """Append rows; False once the stream had to be given up (the caller then writes at the end)."""
        if self.broken:
            return False
        if self.documents is None:
            self.documents = _StreamedSheet(self._documents_sheet, columns, self.bold)
        if items and self.items is None:
            self.items = _StreamedSheet(self._items_sheet, _item_columns(items), self.bold)
        if not all(self.documents.fits(r) for r in documents) or (items and not all(self.items.fits(r) for r in items)):  # type: ignore[union-attr]
            self.abandon()
            return False
        for row in documents:
            self.documents.append(row)
            if row["status"] != "succeeded":
                self.errors.append(row)
        for row in items:
            self.items.append(row)  # type: ignore[union-attr]
        return True

    def finish(self) -> None:
        if self.documents is None:
            self.documents = _StreamedSheet(self._documents_sheet, list(DOCUMENT_COLUMNS), self.bold)
        if self.items is None:
            self.items = _StreamedSheet(self._items_sheet, ["index", "file", "line"], self.bold)
        self.workbook.close()
        self.closed = True

    def abandon(self) -> None:
        """Stop streaming; whoever finishes the batch rewrites the file from all rows."""
        if not self.broken and not self.closed:
            self.broken = True
            with contextlib.suppress(Exception):
                self.workbook.close()


class _StreamedCsv:
    """documents.csv written chunk by chunk (each `FRAME_ROWS` rows) while the batch runs.

    pandas infers each chunk's column types on its own, and the whole table's may differ
    (a column of whole numbers in one chunk next to a missing value in another becomes
    float: "20" against "20.0"), as may the columns (a field first seen in a later chunk).
    `finish` therefore checks that every chunk had the whole table's columns and types, and
    otherwise writes the file again from the whole table: the file is always exactly what
    `to_csv` of the whole table gives. Streamed, the end of a 10,000-document batch saved
    about 0.15 s of pandas' CSV writing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = path.open("w", encoding="utf-8", newline="")
        self.columns: list[str] | None = None
        self.dtypes: list[pd.Series] = []
        self.rewritten = False

    def add(self, frame: pd.DataFrame, columns: list[str]) -> None:
        if self.columns is None:
            self.columns = list(columns)
        chunk = _typed(frame.reindex(columns=self.columns))
        chunk.to_csv(self.handle, index=False, header=not self.dtypes)
        self.dtypes.append(chunk.dtypes)

    def finish(self, documents: pd.DataFrame) -> None:
        """Close the file, after writing it again from `documents` if the chunks differ from it."""
        same = (
            self.columns == list(documents.columns)
            and bool(self.dtypes)
            and all(dtypes.equals(documents.dtypes) for dtypes in self.dtypes)
        )
        if not same:
            self.rewritten = True
            self.handle.seek(0)
            self.handle.truncate()
            documents.to_csv(self.handle, index=False)
        self.handle.close()


def _item_columns(items: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in items:
        columns.extend(k for k in row if k not in columns)
    return columns


def warm_up(names: Iterable[str]) -> None:
    """Run each writer once on two rows, in memory: a fresh process otherwise pays its first
    pyarrow kernels, Parquet writer and CSV formatter at the end of the batch, when everyone
    waits (measured: 0.29 s instead of 0.08 s to finish 1,000 documents)."""
    import io

    frame = _typed(pd.DataFrame([{"index": 1, "file": "a", "pages": None, "total": 1.5}, {"index": 2, "file": None, "pages": 2, "total": None}]))
    if "documents.csv" in names:
        frame.to_csv(io.StringIO(), index=False)
    if "documents.parquet" in names:
        _uniform(frame).to_parquet(io.BytesIO(), index=False, engine="pyarrow")


def _fsync(path: Path) -> None:
    """Flush a finished file to disk where it was written (in parallel), so publishing it is a rename."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


class ExportWriter:
    """The export files of one batch, fed with results in input order while the batch runs.

    `paths` maps each file to write (names from `export_names`, plus report.json) to a path,
    normally the hidden temporary of an atomic file. documents.jsonl, documents.json,
    documents.xlsx and documents.csv are written as results arrive (the CSV per chunk of
    `FRAME_ROWS`); `finish` writes line_items.csv, Parquet and report.json, closes the workbook
    and flushes everything to disk. So the end of a batch costs little more than report.json,
    whatever its size. The readable reports (documents.xml/.txt/.html/.docx/.pdf,
    `tasks.export_readable`) are fed here too and finished beside Parquet.
    """

    def __init__(self, paths: dict[str, Path], declared_fields: list[str] | None = None) -> None:
        self.paths = paths
        self.columns = list(DOCUMENT_COLUMNS)
        for name in declared_fields or []:
            if name not in self.columns:
                self.columns.append(name)
        self._seen = set(self.columns)
        self.frames: list[pd.DataFrame] = []
        self._rows: list[dict[str, Any]] = []  # not yet in a frame: a DataFrame costs ~3 ms however few its rows
        self.items: list[dict[str, Any]] = []
        self.texts: list[str] = []  # each result's JSON, for report.json
        self._unstreamed: list[dict[str, Any]] = []
        self._unstreamed_items: list[dict[str, Any]] = []
        self._jsonl = paths["documents.jsonl"].open("w", encoding="utf-8") if "documents.jsonl" in paths else None
        self._json = paths["documents.json"].open("w", encoding="utf-8") if "documents.json" in paths else None
        if self._json is not None:
            self._json.write("[")
        self._xlsx = _StreamedWorkbook(paths["documents.xlsx"]) if "documents.xlsx" in paths else None
        self._csv = _StreamedCsv(paths["documents.csv"]) if "documents.csv" in paths else None
        self._readable = open_readable(paths)  # XML, TXT, HTML, DOCX, PDF: fed here, finished in `finish`

    @property
    def count(self) -> int:
        return len(self.texts)

    def add(self, results: list[DocumentResult], texts: list[str] | None = None) -> None:
        """Take the next results of the batch, in input order (`texts`: their JSON, if at hand)."""
        if not results:
            return
        texts = texts if texts is not None else [r.model_dump_json() for r in results]
        rows = [document_row(r) for r in results]
        for row in rows:
            for key in row:
                if key not in self._seen:
                    self._seen.add(key)
                    self.columns.append(key)
        items = line_item_rows(results)
        self._rows.extend(rows)
        if len(self._rows) >= FRAME_ROWS:
            self._frame_rows()
        self.items.extend(items)
        if self._jsonl is not None:
            self._jsonl.write("".join(text + "\n" for text in texts))
        if self._json is not None:
            self._json.write(("\n" if not self.texts else ",\n") + ",\n".join(texts))
        self.texts.extend(texts)
        for readable in self._readable:
            readable.add(results)
        if self._xlsx is not None and not self._xlsx.broken:
            self._unstreamed.extend(rows)
            self._unstreamed_items.extend(items)
            # Wait for a succeeded document before freezing the header: failures carry no fields.
            if any(r["status"] == "succeeded" for r in self._unstreamed) or self._unstreamed_items:
                if self._xlsx.add(self._unstreamed, self._unstreamed_items, self.columns):
                    self._unstreamed, self._unstreamed_items = [], []

    def _frame_rows(self) -> None:
        if self._rows:
            frame = _typed(pd.DataFrame(self._rows))
            self.frames.append(frame)
            self._rows = []
            if self._csv is not None:
                self._csv.add(frame, self.columns)

    def documents(self) -> pd.DataFrame:
        self._frame_rows()
        if not self.frames:
            return pd.DataFrame(columns=self.columns)
        frame = pd.concat(self.frames, ignore_index=True) if len(self.frames) > 1 else self.frames[0]
        return _typed(frame.reindex(columns=self.columns))

    def finish(self, report_head: str) -> None:
        """Write what is left and report.json (`report_head`: the report's JSON without results).

        The workbook's compression, the Parquet encoding and the fsyncs release the GIL, so
        they run on other threads while this one writes the CSV files and report.json (each
        fsync is 10-50 ms here; one after the other they were a quarter of the finish at
        10,000 documents).
        """
        try:
            documents = self.documents()
            line_items = pd.DataFrame(self.items)
            with ThreadPoolExecutor(max_workers=4, thread_name_prefix="docbatch-exports") as pool:
                running = []
                if self._xlsx is not None:
                    running.append(pool.submit(self._finish_xlsx, documents, line_items))
                if "documents.parquet" in self.paths:
                    running.append(pool.submit(self._write, "documents.parquet", lambda path: _uniform(documents).to_parquet(path, index=False, engine="pyarrow")))
                for name, handle, end in (("documents.jsonl", self._jsonl, ""), ("documents.json", self._json, "\n]\n" if self.texts else "]\n")):
                    if handle is not None:
                        handle.write(end)
                        handle.close()
                        running.append(pool.submit(_fsync, self.paths[name]))
                if self._csv is not None:
                    self._csv.finish(documents)
                    running.append(pool.submit(_fsync, self.paths["documents.csv"]))
                if self._readable:
                    head = json.loads(report_head)
                    running += [pool.submit(self._finish_readable, readable, head) for readable in self._readable]
                if "line_items.csv" in self.paths and not line_items.empty:
                    line_items.to_csv(self.paths["line_items.csv"], index=False)
                    running.append(pool.submit(_fsync, self.paths["line_items.csv"]))
                if REPORT_NAME in self.paths:
                    self._write(REPORT_NAME, lambda path: write_report_lines(path, report_head, self.texts))
                for future in running:
                    future.result()
        finally:
            self.close()

    def _write(self, name: str, writer: Callable[[Path], object]) -> None:
        writer(self.paths[name])
        _fsync(self.paths[name])

    @staticmethod
    def _finish_readable(readable: ReadableReport, head: dict[str, Any]) -> None:
        readable.finish(head)
        _fsync(readable.path)

    def _finish_xlsx(self, documents: pd.DataFrame, line_items: pd.DataFrame) -> None:
        assert self._xlsx is not None
        if not self._xlsx.broken and self._xlsx.add(self._unstreamed, self._unstreamed_items, self.columns):
            self._xlsx.finish()
            _fsync(self.paths["documents.xlsx"])
            return
        errors = documents[documents["status"] != "succeeded"][ERROR_COLUMNS]
        self._write("documents.xlsx", lambda path: write_xlsx(path, {
            "documents": documents,
            "line_items": line_items if not line_items.empty else pd.DataFrame(columns=["index", "file", "line"]),
            "errors": errors,
        }))

    def close(self) -> None:
        """Close every open file (what they hold is the caller's to publish or discard)."""
        for handle in (self._jsonl, self._json, self._csv.handle if self._csv is not None else None):
            if handle is not None and not handle.closed:
                handle.close()
        if self._xlsx is not None and not self._xlsx.closed:
            self._xlsx.abandon()
        for readable in self._readable:
            readable.close()


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ("index", "pages", "size", "attempts"):
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")  # no "1.0" pages where a value is missing
    return frame


def write_report_lines(path: Path, head: str, texts: Iterable[str]) -> None:
    """report.json from the report's JSON without results and each result's JSON, one per line:
    streamed, never the whole batch as one string."""
    fields = json.loads(head)
    fields.pop("results", None)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("{\n")
        for key, value in fields.items():
            handle.write(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},\n")
        handle.write('  "results": [')
        count = 0
        for count, text in enumerate(texts, start=1):
            handle.write(("\n    " if count == 1 else ",\n    ") + text)
        handle.write("\n  ]\n}\n" if count else "]\n}\n")
