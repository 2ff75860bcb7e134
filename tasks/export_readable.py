"""Readable reports of a batch: documents.xml, .txt, .html, .docx and .pdf.

The machine formats (JSON, CSV, XLSX, Parquet) are for programs; these are for people and for
systems that want XML. Each writer has one small interface: built on the path it writes (the
hidden temporary `tasks.exports.ExportStream` claimed), `add(results)` in input order while the
batch runs, `finish(report_head)` with report.json's head (a dict, validated here into
`ReportHead`), `close()` to drop it on an error. `tasks.export_files.ExportWriter` drives them
and fsyncs what they wrote; they run in the batch process or in the export child process
(`tasks.export_process`), so this module imports no Prefect.

Memory stays flat whatever the batch's size:
- XML is streamed with `lxml.etree.xmlfile`, one `<document>` element at a time; the batch's
  summary, known only at the end, is the trailing `<summary>` element.
- TXT and HTML put the summary first, so their per-document parts go to an anonymous spool file
  (unlinked at creation: a crash leaves nothing) and are copied behind the summary at the end.
- DOCX and PDF libraries build the whole document in memory, so they keep bounded samples:
  the first `TABLE_ROWS` rows of the documents table, the first `FAILURE_ROWS` failures, and
  every field of the first `DETAIL_DOCUMENTS` documents; a line says where the rest is.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from blocks.invoice_schema import headline
from blocks.models import BatchParameters, BatchTotals, DocumentResult, ExportFormat

READABLE_FILES: dict[str, ExportFormat] = {
    "documents.xml": ExportFormat.xml,
    "documents.txt": ExportFormat.txt,
    "documents.html": ExportFormat.html,
    "documents.docx": ExportFormat.docx,
    "documents.pdf": ExportFormat.pdf,
}
REVIEW_PAGE = "review.html"  # tasks.review_page.PAGE_NAME (that module imports the renderers: not here)

# The table columns of html/docx/pdf beside #, file, status and review: the values a person scans
# a batch for (`blocks.invoice_schema.headline`, which also reads invoice2data's field names, plus
# a receipt's merchant), shown only when some document has them.
CORE_COLUMNS: dict[str, str] = {
    "invoice_number": "Number",
    "issue_date": "Date",
    "seller": "Seller",
    "grand_total": "Total",
    "currency": "Currency",
}
# Limits of the documents built in memory (DOCX, PDF): about 1 MB of DOCX and 40 pages of PDF.
TABLE_ROWS = 1000  # rows of the documents table
FAILURE_ROWS = 500  # rows of the failures table
DETAIL_DOCUMENTS = 50  # documents whose every field gets a table of its own
DETAIL_VALUES = 100  # values listed per document (a long invoice's line items are cut)
CELL_CHARS = 300  # characters of one table cell (DOCX, PDF); the full text is in the JSON exports
FULL_DATA = ("documents.json", "documents.jsonl", "documents.xml", "report.json")  # where every field is, when written

_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ReportHead(BaseModel):
    """What the reports show of report.json's head (its JSON without results).

    Lenient on purpose: a report that cannot show a value shows it empty rather than fail the
    batch's exports."""

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    status: str = ""
    message: str = ""
    source: str = ""
    extractor: str = ""
    totals: BatchTotals = Field(default_factory=BatchTotals)
    success_rate: float | None = None
    started: datetime | None = None
    finished: datetime | None = None
    duration_s: float | None = None
    output_dir: str | None = None
    exports: dict[str, str] = Field(default_factory=dict)
    parameters: BatchParameters | None = None

    @property
    def has_review_page(self) -> bool:
        """Whether the batch writes review.html beside these files (format `review`)."""
        formats = self.parameters.export.get("formats") if self.parameters is not None else None
        return isinstance(formats, list) and ExportFormat.review.value in formats

    @property
    def full_data(self) -> str:
        """Which of this batch's files hold every field of every document: 'documents.json or report.json'."""
        names = [name for name in FULL_DATA if name in self.exports or name == "report.json"]
        return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]

    def counts(self) -> str:
        """'5 documents: 4 succeeded, 1 failed, 0 skipped, 1 need review'."""
        t = self.totals
        return (f"{t.total} documents: {t.succeeded} succeeded, {t.failed} failed, {t.skipped} skipped, "
                f"{t.needs_review} need review")

    def facts(self) -> list[tuple[str, str]]:
        """The summary as label/value pairs, the same in every format."""
        rate = f"{self.success_rate:.1f} %" if self.success_rate is not None else "n/a"
        t = self.totals
        pairs = [
            ("Batch", self.name), ("Status", self.status), ("Message", self.message),
            ("Documents", str(t.total)), ("Succeeded", str(t.succeeded)), ("Failed", str(t.failed)),
            ("Skipped", str(t.skipped)), ("Need review", str(t.needs_review)), ("Success rate", rate),
            ("Source", self.source), ("Extractor", self.extractor),
            ("Started", self.started.isoformat(timespec="seconds") if self.started else ""),
            ("Finished", self.finished.isoformat(timespec="seconds") if self.finished else ""),
            ("Duration", f"{self.duration_s:.1f} s" if self.duration_s is not None else ""),
        ]
        if t.resumed:
            pairs.append(("Resumed", str(t.resumed)))
        if t.tokens_in or t.tokens_out:
            pairs.append(("Tokens", f"{t.tokens_in} in, {t.tokens_out} out"))
        if t.cost is not None:
            pairs.append(("Cost", f"{t.cost:.4f}"))
        return pairs


class ReadableReport(Protocol):
    """One readable export file: fed in input order, finished with the report's head."""

    path: Path

    def add(self, results: list[DocumentResult]) -> None: ...

    def finish(self, report_head: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def open_readable(paths: dict[str, Path]) -> list[ReadableReport]:
    """A writer for each readable file among `paths` (the files the batch's formats call for)."""
    writers: list[ReadableReport] = []
    try:
        for name, path in paths.items():
            if name in READABLE_FILES:
                writers.append(_WRITERS[READABLE_FILES[name]](path))
    except BaseException:
        for writer in writers:
            writer.close()
        raise
    return writers


# --- values -------------------------------------------------------------------------------------


def text_of(value: Any) -> str:
    """One value as a person reads it: no 'None', booleans as 'true'/'false', lists as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar of nested fields with its path ('seller.name', 'line_items[1].name')."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for number, item in enumerate(value, start=1):
            yield from leaves(item, f"{prefix}[{number}]")
    else:
        yield prefix, value


def core_values(fields: dict[str, Any]) -> dict[str, str]:
    """The `CORE_COLUMNS` values a document has (empty ones left out)."""
    found = headline(fields)
    if found.get("seller") in (None, ""):
        found["seller"] = fields.get("merchant_name")
    return {key: text_of(found[key]) for key in CORE_COLUMNS if found.get(key) not in (None, "")}


def error_text(result: DocumentResult) -> str:
    kind = result.error_kind.value if result.error_kind else ""
    return f"{kind}: {result.error}" if kind and result.error else kind or (result.error or "")


def _clip(text: str, limit: int = CELL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Row(BaseModel):
    """One document as the tables show it: what the HTML spool, DOCX and PDF keep of a result."""

    index: int
    file: str
    status: str
    review: str = ""
    error: str = ""
    core: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, result: DocumentResult) -> Row:
        review = "needs review" if result.review == "needs_review" else (result.review or "")
        return cls(index=result.ref.index, file=result.ref.name, status=result.status, review=review,
                   error=error_text(result), core=core_values(result.fields) if result.status == "succeeded" else {})


class _Spool:
    """Text written while the batch runs, read back at its end: an anonymous file beside the
    export (unlinked at once, so a crash leaves nothing behind)."""

    def __init__(self, near: Path) -> None:
        self.handle: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8", dir=near.parent)

    def write(self, text: str) -> None:
        self.handle.write(text)

    def rewound(self) -> IO[str]:
        self.handle.flush()
        self.handle.seek(0)
        return self.handle

    def close(self) -> None:
        self.handle.close()


# --- XML ----------------------------------------------------------------------------------------


def xml_text(value: Any) -> str:
    """Text XML 1.0 can hold: characters it forbids (control characters, lone surrogates) become U+FFFD."""
    return _XML_ILLEGAL.sub("\ufffd", text_of(value))


class XmlReport:
    """documents.xml, streamed: `<batch version="1">`, one `<document>` per result, then `<summary>`.

    Layout (README, 'Readable reports'): each document's attributes are index, file, status,
    review, media_type, pages, fields_source (those it has); children `<error kind=…>`,
    `<review_reasons>`/`<warnings>` with `<item>`s, and `<fields>`. A field is an element named
    after it; a name that is not a plain XML name (or is `field`/`item`, or starts with 'xml')
    becomes `<field name="…">`. Objects nest, lists become repeated `<item>` children, null is
    `<x null="true"/>`, booleans are true/false.
    """

    RESERVED = {"field", "item"}

    def __init__(self, path: Path) -> None:
        from lxml import etree

        self.path = path
        self._etree = etree
        self._stack = contextlib.ExitStack()
        try:
            self._xf = self._stack.enter_context(etree.xmlfile(str(path), encoding="utf-8"))
            self._xf.write_declaration()
            self._stack.enter_context(self._xf.element("batch", version="1"))
            self._xf.write("\n")
        except BaseException:
            self.close()
            raise

    def add(self, results: list[DocumentResult]) -> None:
        for result in results:
            self._xf.write(self.document(result), pretty_print=True)
        self._xf.flush()

    def document(self, result: DocumentResult) -> Any:
        E = self._etree
        attributes = {
            "index": result.ref.index, "file": result.ref.name, "status": result.status, "review": result.review,
            "media_type": result.media_type, "pages": result.pages, "fields_source": result.fields_source,
        }
        element = E.Element("document", {k: xml_text(v) for k, v in attributes.items() if v is not None})
        if result.error or result.error_kind:
            error = E.SubElement(element, "error", {"kind": result.error_kind.value} if result.error_kind else {})
            error.text = xml_text(result.error)
        for name, values in (("review_reasons", result.review_reasons), ("warnings", result.warnings)):
            if values:
                self._value(element, name, values)
        self._value(element, "fields", result.fields)
        return element

    def _value(self, parent: Any, name: str, value: Any) -> None:
        E = self._etree
        if _XML_NAME.match(name) and name not in self.RESERVED and not name.lower().startswith("xml"):
            child = E.SubElement(parent, name)
        else:
            child = E.SubElement(parent, "field", name=xml_text(name))
        if isinstance(value, dict):
            for key, item in value.items():
                self._value(child, str(key), item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                self._item(child, item)
        elif value is None:
            child.set("null", "true")
        else:
            child.text = xml_text(value)

    def _item(self, parent: Any, value: Any) -> None:
        item = self._etree.SubElement(parent, "item")
        if isinstance(value, dict):
            for key, inner in value.items():
                self._value(item, str(key), inner)
        elif isinstance(value, (list, tuple)):
            for inner in value:
                self._item(item, inner)
        elif value is None:
            item.set("null", "true")
        else:
            item.text = xml_text(value)

    def finish(self, report_head: dict[str, Any]) -> None:
        head = ReportHead.model_validate(report_head)
        E = self._etree
        summary = E.Element("summary", {k: xml_text(v) for k, v in {
            "name": head.name, "status": head.status, "source": head.source, "extractor": head.extractor,
            "started": head.started.isoformat() if head.started else None,
            "finished": head.finished.isoformat() if head.finished else None,
            "duration_s": head.duration_s, "success_rate": head.success_rate,
        }.items() if v is not None})
        E.SubElement(summary, "message").text = xml_text(head.message)
        E.SubElement(summary, "totals", {k: xml_text(v) for k, v in head.totals.model_dump().items() if v is not None})
        exports = E.SubElement(summary, "exports")
        for name, where in head.exports.items():
            E.SubElement(exports, "export", name=xml_text(name)).text = xml_text(where)
        self._xf.write(summary, pretty_print=True)
        self._stack.close()  # writes </batch> and closes the file

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()


# --- TXT ----------------------------------------------------------------------------------------


def _plain(value: Any) -> str:
    """One line's text: control characters out, continuation lines indented under the key."""
    return _CONTROL.sub("\ufffd", text_of(value)).replace("\r\n", "\n").replace("\n", "\n      ")


class TxtReport:
    """documents.txt: the summary, then one block per document (file, status, every field with a
    value as `key: value`, errors). The blocks are spooled while the batch runs and copied
    behind the summary at the end."""

    RULE = "=" * 72

    def __init__(self, path: Path) -> None:
        self.path = path
        self._spool = _Spool(path)

    def add(self, results: list[DocumentResult]) -> None:
        self._spool.write("".join(self.block(r) for r in results))

    @staticmethod
    def block(result: DocumentResult) -> str:
        lines = ["", f"#{result.ref.index}  {_plain(result.ref.name)}", f"  status: {result.status}"]
        if result.review:
            lines.append(f"  review: {result.review.replace('_', ' ')}")
        lines += [f"    - {_plain(reason)}" for reason in result.review_reasons]
        if result.error or result.error_kind:
            lines.append(f"  error: {_plain(error_text(result))}")
        if result.warnings:
            lines.append("  warnings: " + _plain("; ".join(result.warnings)))
        values = [(key, value) for key, value in leaves(result.fields) if value not in (None, "")]
        if values:
            lines.append("  fields:")
            lines += [f"    {_plain(key)}: {_plain(value)}" for key, value in values]
        return "\n".join(lines) + "\n"

    def finish(self, report_head: dict[str, Any]) -> None:
        head = ReportHead.model_validate(report_head)
        width = max(len(label) for label, _ in head.facts())
        with self.path.open("w", encoding="utf-8") as out:
            out.write(f"docbatch report: {_plain(head.name)}\n{self.RULE}\n")
            out.write("".join(f"{label + ':':<{width + 2}}{_plain(value)}\n" for label, value in head.facts()))
            out.write(f"\n{head.counts()}\n{self.RULE}\n")
            shutil.copyfileobj(self._spool.rewound(), out)
        self._spool.close()

    def close(self) -> None:
        self._spool.close()


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1f2937;background:#fff}
h1{font-size:1.5rem;margin:0 0 .5rem}h2{font-size:1.15rem;margin:2rem 0 .5rem}
.message{font-size:1.05rem;margin:.25rem 0 1rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #d1d5db;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f3f4f6}table.facts th{width:9rem}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fef2f2}tr.failed td.status,.status-failed{color:#b91c1c;font-weight:600}
tr.skipped td{background:#fffbeb}.review-needs{color:#b45309;font-weight:600}
.completed{color:#15803d}.partially_failed{color:#b45309}.failed-batch{color:#b91c1c}
.note{color:#4b5563}
""".strip()


def _e(value: Any) -> str:
    return html.escape(_CONTROL.sub("\ufffd", text_of(value)), quote=True)


class HtmlReport:
    """documents.html: one self-contained page (inline CSS, no script, loads nothing): the summary,
    a table of every document with the core fields, the failures, a link to review.html when the
    batch writes it. Rows are spooled as compact JSON while the batch runs (the columns depend on
    which fields the documents have) and rendered at the end, twice read, never all in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._spool = _Spool(path)
        self._columns: set[str] = set()
        self._count = 0
        self._failures = 0

    def add(self, results: list[DocumentResult]) -> None:
        rows = [Row.of(r) for r in results]
        for row in rows:
            self._columns.update(row.core)
            self._failures += row.status != "succeeded"
        self._count += len(rows)
        self._spool.write("".join(row.model_dump_json() + "\n" for row in rows))

    def finish(self, report_head: dict[str, Any]) -> None:
        head = ReportHead.model_validate(report_head)
        columns = [key for key in CORE_COLUMNS if key in self._columns]
        status_class = "failed-batch" if head.status == "failed" else head.status
        with self.path.open("w", encoding="utf-8") as out:
            out.write(
                '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
                f"<title>{_e(head.name)}: docbatch report</title><style>{_CSS}</style></head><body>\n"
                f"<h1>Batch report: {_e(head.name)}</h1>\n"
                f'<p class="message {_e(status_class)}" id="message">{_e(head.message)}</p>\n'
                f'<p id="counts">{_e(head.counts())}</p>\n'
            )
            if head.has_review_page:
                out.write(f'<p>Check the values on the documents\' pages in <a href="{REVIEW_PAGE}">{REVIEW_PAGE}</a>.</p>\n')
            out.write('<table class="facts" id="summary">')
            out.write("".join(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in head.facts()))
            out.write("</table>\n")
            out.write(f'<h2>Documents ({self._count})</h2>\n<table class="documents" id="documents"><thead><tr>'
                      "<th>#</th><th>File</th><th>Status</th><th>Review</th>"
                      + "".join(f"<th>{_e(CORE_COLUMNS[c])}</th>" for c in columns) + "</tr></thead><tbody>\n")
            for row in self._rows():
                review_class = ' class="review-needs"' if row.review == "needs review" else ""
                out.write(
                    f'<tr class="{_e(row.status)}"><td class="num">{row.index}</td><td>{_e(row.file)}</td>'
                    f'<td class="status">{_e(row.status)}</td><td{review_class}>{_e(row.review)}</td>'
                    + "".join(f'<td{" class=num" if c == "grand_total" else ""}>{_e(row.core.get(c, ""))}</td>' for c in columns)
                    + "</tr>\n"
                )
            out.write("</tbody></table>\n")
            out.write(f'<h2>Failed and skipped documents ({self._failures})</h2>\n')
            if self._failures:
                out.write('<table class="failures" id="failures"><thead><tr><th>#</th><th>File</th><th>Status</th>'
                          "<th>Error</th></tr></thead><tbody>\n")
                for row in self._rows():
                    if row.status != "succeeded":
                        out.write(f'<tr class="{_e(row.status)}"><td class="num">{row.index}</td><td>{_e(row.file)}</td>'
                                  f'<td class="status">{_e(row.status)}</td><td>{_e(row.error)}</td></tr>\n')
                out.write("</tbody></table>\n")
            else:
                out.write('<p class="note">None.</p>\n')
            out.write(f'<p class="note">Every field of every document is in {_e(head.full_data)}.</p>\n</body></html>\n')
        self._spool.close()

    def _rows(self) -> Iterator[Row]:
        handle = self._spool.rewound()
        for line in handle:
            yield Row.model_validate_json(line)

    def close(self) -> None:
        self._spool.close()


# --- DOCX and PDF: bounded samples --------------------------------------------------------------


class Sample:
    """What a document built in memory shows of a batch of any size: the first `TABLE_ROWS`
    rows, the first `FAILURE_ROWS` failures, every value of the first `DETAIL_DOCUMENTS`
    documents (at most `DETAIL_VALUES` each), and the counts of all."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.failures: list[Row] = []
        self.details: list[tuple[Row, list[tuple[str, str]], int]] = []  # row, values, values left out
        self.count = 0
        self.failure_count = 0

    def add(self, results: list[DocumentResult]) -> None:
        for result in results:
            self.count += 1
            row: Row | None = None
            if len(self.rows) < TABLE_ROWS:
                row = Row.of(result)
                self.rows.append(row)
            if result.status != "succeeded":
                self.failure_count += 1
                if len(self.failures) < FAILURE_ROWS:
                    self.failures.append(row or Row.of(result))
            if len(self.details) < DETAIL_DOCUMENTS:
                values = [(key, _clip(text_of(value))) for key, value in leaves(result.fields) if value not in (None, "")]
                self.details.append((row or Row.of(result), values[:DETAIL_VALUES], max(0, len(values) - DETAIL_VALUES)))

    @property
    def columns(self) -> list[str]:
        seen = {key for row in self.rows for key in row.core}
        return [key for key in CORE_COLUMNS if key in seen]

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The documents table: header and cells (clipped)."""
        columns = self.columns
        header = ["#", "File", "Status", "Review", *(CORE_COLUMNS[c] for c in columns)]
        cells = [[str(r.index), _clip(r.file), r.status, r.review, *(_clip(r.core.get(c, "")) for c in columns)] for r in self.rows]
        return header, cells

    def notes(self, where: str) -> dict[str, str | None]:
        """Sentences saying what each part leaves out and where it is (None: nothing left out)."""
        return {
            "table": f"The table lists the first {len(self.rows):,} of {self.count:,} documents; every document is in {where}."
            if self.count > len(self.rows) else None,
            "failures": f"The first {len(self.failures):,} of {self.failure_count:,} failed and skipped documents are listed; all are in {where}."
            if self.failure_count > len(self.failures) else None,
            "details": f"The fields of the first {len(self.details):,} of {self.count:,} documents are listed; every document's are in {where}."
            if self.count > len(self.details) else None,
        }


class _SampledReport:
    """A report its library builds in memory at `finish` (DOCX, PDF): fed into a bounded `Sample`
    while the batch runs; nothing is open until then."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sample = Sample()

    def add(self, results: list[DocumentResult]) -> None:
        self.sample.add(results)

    def close(self) -> None:
        """Nothing open: the file is written in one go by `finish`."""


class DocxReport(_SampledReport):
    """documents.docx (python-docx): a summary page, the documents table (core fields), the
    failures, then a two-column table of every value for each of the first `DETAIL_DOCUMENTS`
    documents. The document lives in memory until saved, hence the `Sample` limits."""

    def finish(self, report_head: dict[str, Any]) -> None:
        from docx import Document
        from docx.enum.section import WD_ORIENT
        from docx.shared import Cm, Pt

        head = ReportHead.model_validate(report_head)
        sample, notes = self.sample, self.sample.notes(head.full_data)
        document = Document()
        document.core_properties.title = f"docbatch report: {_docx(head.name)}"
        section = document.sections[0]
        section.orientation = WD_ORIENT.LANDSCAPE
        section.page_width, section.page_height = Cm(29.7), Cm(21.0)
        for side in ("left_margin", "right_margin", "top_margin", "bottom_margin"):
            setattr(section, side, Cm(1.5))
        document.styles["Normal"].font.size = Pt(9)
        document.add_heading(f"Batch report: {_docx(head.name)}", level=0)
        document.add_paragraph(_docx(head.message))
        document.add_paragraph(head.counts())
        self._table(document, None, [[label, _docx(value)] for label, value in head.facts()])
        if head.has_review_page:
            document.add_paragraph(f"Check the values on the documents' pages in {REVIEW_PAGE}, beside this file.")
        document.add_page_break()

        document.add_heading(f"Documents ({sample.count:,})", level=1)
        header, cells = sample.table()
        self._table(document, header, [[_docx(c) for c in row] for row in cells])
        if notes["table"]:
            document.add_paragraph(notes["table"])

        document.add_heading(f"Failed and skipped documents ({sample.failure_count:,})", level=1)
        if sample.failures:
            self._table(document, ["#", "File", "Status", "Error"],
                        [[str(r.index), _docx(_clip(r.file)), r.status, _docx(_clip(r.error))] for r in sample.failures])
        else:
            document.add_paragraph("None.")
        if notes["failures"]:
            document.add_paragraph(notes["failures"])

        document.add_heading("Fields per document", level=1)
        if notes["details"]:
            document.add_paragraph(notes["details"])
        for row, values, cut in sample.details:
            document.add_heading(f"#{row.index} {_docx(row.file)}: {row.status}", level=2)
            if row.error:
                document.add_paragraph(_docx(f"Error: {row.error}"))
            if values:
                self._table(document, ["Field", "Value"], [[_docx(k), _docx(v)] for k, v in values])
            elif not row.error:
                document.add_paragraph("No fields.")
            if cut:
                document.add_paragraph(f"{cut} more value(s) are in {head.full_data}.")
        document.save(str(self.path))

    @staticmethod
    def _table(document: Any, header: list[str] | None, rows: list[list[str]]) -> None:
        """A grid table whose rows are parsed from one string of WordprocessingML.

        python-docx's cell API (`cell.text = …`) cost about 0.25 ms a cell here: 3 s for the
        documents table of 1,000 rows. The same rows as XML text, escaped, parse in a few ms."""
        from docx.oxml import parse_xml
        from docx.oxml.ns import nsdecls, qn

        width = len(header) if header else len(rows[0]) if rows else 2
        table = document.add_table(rows=0, cols=width)
        table.style = "Table Grid"
        cell_width = table._tbl.tblGrid.gridCol_lst[0].get(qn("w:w"))  # twips: python-docx's even split of the page

        def run(text: str, bold: bool) -> str:
            lines = [html.escape(line, quote=False) for line in text.split("\n")]
            look = "<w:rPr><w:b/></w:rPr>" if bold else ""
            return f"<w:r>{look}" + "<w:br/>".join(f'<w:t xml:space="preserve">{line}</w:t>' for line in lines) + "</w:r>"

        def row(values: list[str], bold: bool = False) -> str:
            return "<w:tr>" + "".join(
                f'<w:tc><w:tcPr><w:tcW w:type="dxa" w:w="{cell_width}"/></w:tcPr><w:p>{run(v, bold) if v else ""}</w:p></w:tc>'
                for v in values
            ) + "</w:tr>"

        xml = f"<w:tbl {nsdecls('w')}>" + (row(header, bold=True) if header else "") + "".join(row(r) for r in rows) + "</w:tbl>"
        for tr in list(parse_xml(xml)):
            table._tbl.append(tr)


def _docx(value: Any) -> str:
    """Text Word's XML can hold (python-docx refuses control characters)."""
    return _XML_ILLEGAL.sub("\ufffd", _CONTROL.sub("\ufffd", text_of(value)))


class PdfReport(_SampledReport):
    """documents.pdf (ReportLab, pure Python): the same report as the DOCX, A4 landscape.

    The text font is DejaVu Sans where Debian installs it (most scripts), else the Bitstream Vera
    that ReportLab ships (Western European), embedded either way so every viewer shows the same."""

    def finish(self, report_head: dict[str, Any]) -> None:
        from reportlab.lib import colors
        from reportlab.lib.pagesizes import A4, landscape
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.lib.units import cm
        from reportlab.pdfbase.pdfmetrics import stringWidth
        from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

        head = ReportHead.model_validate(report_head)
        regular, bold = _pdf_fonts()
        body = ParagraphStyle("body", fontName=regular, fontSize=9, leading=11.5)
        cell = ParagraphStyle("cell", parent=body, fontSize=8, leading=10)
        title = ParagraphStyle("title", parent=body, fontName=bold, fontSize=16, leading=20, spaceAfter=8)
        h1 = ParagraphStyle("h1", parent=body, fontName=bold, fontSize=12.5, leading=16, spaceBefore=10, spaceAfter=5)
        h2 = ParagraphStyle("h2", parent=body, fontName=bold, fontSize=10, leading=13, spaceBefore=8, spaceAfter=3)
        lines = [
            ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#9ca3af")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("FONTNAME", (0, 0), (-1, -1), regular),
            ("FONTSIZE", (0, 0), (-1, -1), cell.fontSize),
            ("LEADING", (0, 0), (-1, -1), cell.leading),
        ]
        grid = TableStyle(lines)
        headed = TableStyle([*lines, ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f3f4f6")), ("FONTNAME", (0, 0), (-1, 0), bold)])
        page_width = landscape(A4)[0] - 3 * cm

        def p(text: Any, style: ParagraphStyle = body) -> Paragraph:
            return Paragraph(_pdf(text), style)

        def fitted(text: str, width: float) -> Any:
            """Plain text where it fits on one line of its column, a wrapping Paragraph where not:
            a Paragraph per cell made 1,000 rows cost 6 s here, plain strings a tenth of it."""
            if "\n" not in text and stringWidth(text, regular, cell.fontSize) <= width - 8:
                return _CONTROL.sub("\ufffd", text)
            return p(text, cell)

        def table(header: list[str] | None, rows: list[list[str]], widths: list[float]) -> list[Any]:
            """Tables of at most 100 rows each: ReportLab splits a long table across pages in
            time that grows with its length, and a header repeats on every page anyway."""
            data = [[fitted(v, w) for v, w in zip(row, widths)] for row in rows]
            header_row = [fitted(h, w) for h, w in zip(header, widths)] if header else None
            parts = []
            for start in range(0, max(len(data), 1), 100):
                chunk = ([header_row] if header_row else []) + data[start:start + 100]
                if chunk:
                    parts.append(Table(chunk, colWidths=widths, repeatRows=1 if header_row else 0,
                                       style=headed if header_row else grid, hAlign="LEFT"))
            return parts

        sample, notes = self.sample, self.sample.notes(head.full_data)
        story: list[Any] = [p(f"Batch report: {head.name}", title), p(head.message), p(head.counts()), Spacer(1, 6)]
        story += table(None, [[label, value] for label, value in head.facts()], [4 * cm, page_width - 4 * cm])
        if head.has_review_page:
            story += [Spacer(1, 6), p(f"Check the values on the documents' pages in {REVIEW_PAGE}, beside this file.")]
        story.append(PageBreak())

        story.append(p(f"Documents ({sample.count:,})", h1))
        header, cells = sample.table()
        fixed = [1.2 * cm, 0, 2.2 * cm, 2.4 * cm]
        rest = page_width - sum(fixed)
        file_width = rest * (0.45 if len(header) > 4 else 1.0)
        core_width = (rest - file_width) / max(len(header) - 4, 1)
        story += table(header, cells, [fixed[0], file_width, fixed[2], fixed[3], *[core_width] * (len(header) - 4)])
        if notes["table"]:
            story.append(p(notes["table"]))

        story.append(p(f"Failed and skipped documents ({sample.failure_count:,})", h1))
        if sample.failures:
            story += table(["#", "File", "Status", "Error"], [[str(r.index), r.file, r.status, r.error] for r in sample.failures],
                           [1.2 * cm, 8 * cm, 2.2 * cm, page_width - 11.4 * cm])
        else:
            story.append(p("None."))
        if notes["failures"]:
            story.append(p(notes["failures"]))

        story.append(p("Fields per document", h1))
        if notes["details"]:
            story.append(p(notes["details"]))
        for row, values, cut in sample.details:
            story.append(p(f"#{row.index} {row.file}: {row.status}", h2))
            if row.error:
                story.append(p(f"Error: {row.error}"))
            if values:
                story += table(["Field", "Value"], [[k, v] for k, v in values], [7 * cm, page_width - 7 * cm])
            elif not row.error:
                story.append(p("No fields."))
            if cut:
                story.append(p(f"{cut} more value(s) are in {head.full_data}."))

        document = SimpleDocTemplate(
            str(self.path), pagesize=landscape(A4), leftMargin=1.5 * cm, rightMargin=1.5 * cm, topMargin=1.5 * cm,
            bottomMargin=1.5 * cm, title=f"docbatch report: {head.name}", author="docbatch",
        )
        document.build(story)


def _pdf(value: Any) -> str:
    """Text for a ReportLab Paragraph, whose mini-markup reads '<' and '&': escaped, line breaks kept."""
    return html.escape(_CONTROL.sub("\ufffd", text_of(value)), quote=False).replace("\n", "<br/>")


_FONTS: tuple[str, str] | None = None
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


def _pdf_fonts() -> tuple[str, str]:
    """Register the embedded text fonts once per process; (regular, bold) names."""
    global _FONTS
    if _FONTS is None:
        import reportlab
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        shipped = Path(reportlab.__file__).parent / "fonts"
        for regular, bold in ((DEJAVU / "DejaVuSans.ttf", DEJAVU / "DejaVuSans-Bold.ttf"), (shipped / "Vera.ttf", shipped / "VeraBd.ttf")):
            if regular.exists() and bold.exists():
                pdfmetrics.registerFont(TTFont("DocbatchSans", str(regular)))
                pdfmetrics.registerFont(TTFont("DocbatchSans-Bold", str(bold)))
                _FONTS = ("DocbatchSans", "DocbatchSans-Bold")
                break
        else:
            _FONTS = ("Helvetica", "Helvetica-Bold")  # Latin-1 only, but always there
    return _FONTS


_WRITERS: dict[ExportFormat, type] = {
    ExportFormat.xml: XmlReport,
    ExportFormat.txt: TxtReport,
    ExportFormat.html: HtmlReport,
    ExportFormat.docx: DocxReport,
    ExportFormat.pdf: PdfReport,
}
