"""The readable reports (xml, txt, html, docx, pdf) of a real batch, opened with real readers.

A small batch runs the normal road (the embedded extractor through the batch flow, against the
session's Prefect API) on example documents, one of them zero bytes and one encrypted; each file
is then read back by what a person or a program would use (lxml, python-docx, poppler,
Debian's chromium through Playwright) and must hold the numbers of that batch's report.json.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from blocks.local import LocalFolder
from blocks.models import DEFAULT_FORMATS, BatchParameters, BatchReport, BatchTotals, DocumentRef, DocumentResult, ErrorKind, ExportFormat
from tasks import export_readable
from tasks.export_files import EXPORT_FILES, export_names
from tasks.export_process import ExportProcess
from tasks.exports import PROCESS_FROM, ExportStream, write_exports
from tests.conftest import EXAMPLES, copy_into
from tests.test_review_page import Opened, browser  # noqa: F401 - `browser` is a fixture, used by name

READABLE = ["xml", "txt", "html", "docx", "pdf"]
FILES = {"xml": "documents.xml", "txt": "documents.txt", "html": "documents.html", "docx": "documents.docx", "pdf": "documents.pdf"}
HOSTILE_KEY = "Rechnungs-Nr.: <b>"
HOSTILE_VALUE = '<script>alert("x")</script> & <b>bold</b>'


def counts_line(totals: BatchTotals) -> str:
    return (f"{totals.total} documents: {totals.succeeded} succeeded, {totals.failed} failed, {totals.skipped} skipped, "
            f"{totals.needs_review} need review")


# --- a real batch -------------------------------------------------------------------------------


class Batch:
    """The batch's report (from report.json, as written) and its folder."""

    def __init__(self, report: BatchReport) -> None:
        self.report = report
        self.folder = Path(report.output_dir or "")
        self.results = report.results

    def path(self, fmt: str) -> Path:
        return self.folder / FILES[fmt]


@pytest.fixture(scope="module")
def batch(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Batch:
    from flows.batch import extract_batch
    from flows.params import ExportSettings, ExtractionSettings

    root = tmp_path_factory.mktemp("readable")
    source = root / "in"
    copy_into(
        source,
        EXAMPLES / "invoices" / "AmazonWebServices.pdf",
        EXAMPLES / "invoices" / "Orlen.txt",
        EXAMPLES / "e-invoices" / "EN16931_Einfach.pdf",
        EXAMPLES / "problem-files" / "pdfminer_aes-256-r6.pdf",
    )
    (source / "empty.pdf").write_bytes(b"")
    returned = extract_batch(
        source=str(source), batch_name="readable <&> batch",
        extraction=ExtractionSettings(retry_backoff_s=0, ocr=False),
        export=ExportSettings(output_dir=str(root / "out"), formats=["json", "review", *READABLE]),
    )
    report = BatchReport.model_validate_json((Path(returned.output_dir) / "report.json").read_text(encoding="utf-8"))
    assert report.totals.total == 5 and report.totals.failed >= 1 and report.totals.succeeded >= 2
    return Batch(report)


def test_every_readable_file_is_published_and_listed_in_the_report(batch: Batch) -> None:
    for fmt in READABLE:
        assert batch.report.exports[FILES[fmt]] == str(batch.path(fmt))
        assert batch.path(fmt).stat().st_size > 0
    assert not list(batch.folder.glob(".*"))  # no temporary or spool left behind
    assert {name for name, fmt in EXPORT_FILES.items() if fmt.value in READABLE} == set(FILES.values())


def test_the_xml_has_one_element_per_document_and_the_reports_totals(batch: Batch) -> None:
    tree = etree.parse(str(batch.path("xml")))
    root = tree.getroot()
    assert root.tag == "batch" and root.get("version") == "1"
    documents = root.findall("document")
    assert len(documents) == batch.report.totals.total == len(batch.results)
    assert [d.get("file") for d in documents] == [r.ref.name for r in batch.results]
    assert [d.get("status") for d in documents] == [r.status for r in batch.results]
    summary = root.find("summary")
    assert summary is not None and summary.get("name") == batch.report.name and summary.get("status") == batch.report.status
    totals = summary.find("totals")
    for key in ("total", "succeeded", "failed", "skipped", "needs_review"):
        assert int(totals.get(key)) == getattr(batch.report.totals, key), key
    assert summary.find("message").text == batch.report.message
    # a field read from the e-invoice's embedded XML, and a nested one, as report.json has them
    einvoice = next(r for r in batch.results if r.ref.name == "EN16931_Einfach.pdf")
    assert einvoice.fields["invoice_number"]
    element = documents[einvoice.ref.index]
    assert element.findtext("fields/invoice_number") == einvoice.fields["invoice_number"]
    assert float(element.findtext("fields/totals/grand_total")) == einvoice.fields["totals"]["grand_total"]
    assert len(element.findall("fields/line_items/item")) == len(einvoice.fields["line_items"])
    for result, doc in zip(batch.results, documents):
        if result.status == "failed":
            assert doc.find("error").get("kind") == result.error_kind.value


def test_the_txt_names_every_file_and_the_counts(batch: Batch) -> None:
    text = batch.path("txt").read_text(encoding="utf-8")
    assert counts_line(batch.report.totals) in text
    assert f"Batch:        {batch.report.name}" in text
    for result in batch.results:
        assert f"#{result.ref.index}  {result.ref.name}\n  status: {result.status}" in text
        if result.error_kind:
            assert result.error_kind.value in text
    einvoice = next(r for r in batch.results if r.ref.name == "EN16931_Einfach.pdf")
    assert f"    invoice_number: {einvoice.fields['invoice_number']}\n" in text


def docx_cells(path: Path) -> list[list[list[str]]]:
    import docx

    document = docx.Document(str(path))
    return [[[cell.text for cell in row.cells] for row in table.rows] for table in document.tables]


def test_the_docx_reads_back_with_file_names_and_totals(batch: Batch) -> None:
    tables = docx_cells(batch.path("docx"))
    facts = dict(tuple(row) for row in tables[0])
    assert facts["Batch"] == batch.report.name and facts["Documents"] == str(batch.report.totals.total)
    assert facts["Failed"] == str(batch.report.totals.failed)
    documents = tables[1]
    assert documents[0][:4] == ["#", "File", "Status", "Review"]
    assert [row[1] for row in documents[1:]] == [r.ref.name for r in batch.results]
    assert [row[2] for row in documents[1:]] == [r.status for r in batch.results]
    einvoice = next(r for r in batch.results if r.ref.name == "EN16931_Einfach.pdf")
    row = documents[1 + einvoice.ref.index]
    assert row[documents[0].index("Total")] == str(einvoice.fields["totals"]["grand_total"])
    failed = [r for r in batch.results if r.status == "failed"]
    assert [row[1] for row in tables[2][1:]] == [r.ref.name for r in failed]


def test_the_pdf_has_the_files_and_counts_and_renders(batch: Batch, tmp_path: Path) -> None:
    from PIL import Image

    text = subprocess.run(["pdftotext", "-layout", str(batch.path("pdf")), "-"], capture_output=True, text=True, check=True).stdout
    assert counts_line(batch.report.totals) in text
    for result in batch.results:
        assert result.ref.name in text
    einvoice = next(r for r in batch.results if r.ref.name == "EN16931_Einfach.pdf")
    assert einvoice.fields["invoice_number"] in text
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(batch.path("pdf")), str(tmp_path / "page")], check=True)
    (png,) = tmp_path.glob("page*.png")
    image = Image.open(png).convert("L")
    assert image.width > 300 and image.getextrema()[0] < 100  # dark text on the page, not a blank sheet


def test_the_html_renders_in_chromium_with_the_counts_and_loads_nothing(batch: Batch, browser: Any) -> None:  # noqa: F811
    from PIL import Image

    view = Opened(browser, batch.path("html"))
    try:
        page = view.page
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True)))
        assert shot.width > 0 and shot.height > 0 and shot.convert("L").getextrema()[0] < 100  # text drawn, not a blank page
        body = page.inner_text("body")
        assert counts_line(batch.report.totals) in body and batch.report.name in body
        assert page.locator("#documents tbody tr").count() == batch.report.totals.total
        assert page.locator("#failures tbody tr").count() == batch.report.totals.failed + batch.report.totals.skipped
        assert page.locator("#documents tbody tr td:nth-child(2)").all_inner_texts() == [r.ref.name for r in batch.results]
        assert page.locator('a[href="review.html"]').count() == 1 and (batch.folder / "review.html").exists()
        assert view.foreign_requests() == [] and view.dialogs == []
    finally:
        view.context.close()


# --- hostile names and values -------------------------------------------------------------------


def hostile_results() -> list[DocumentResult]:
    ref = DocumentRef(index=0, uri="/x/a.pdf", name='<img src=x onerror=alert(1)> & "q".pdf', size=1, fingerprint="1")
    fields = {
        HOSTILE_KEY: HOSTILE_VALUE,
        "invoice_number": "<INV&1>",
        "seller": {"name": "<b>ACME</b> & Co", "2nd line": ["<i>", None, {"x y": True}]},
        "xmlns": "reserved",
        "item": "not a list member",
    }
    failed = DocumentRef(index=1, uri="/x/b.pdf", name="b <&>.pdf", size=0, fingerprint="0")
    return [
        DocumentResult(ref=ref, status="succeeded", fields=fields, review="ok"),
        DocumentResult(ref=failed, status="failed", error="bad \x07 <bytes> & more", error_kind=ErrorKind.corrupt),
    ]


def hostile_report(results: list[DocumentResult], formats: list[str]) -> BatchReport:
    now = datetime.now(timezone.utc)
    failed = sum(r.status == "failed" for r in results)
    return BatchReport(
        name="<script>n</script>", source="s", status="partially_failed", message="m & <m>",
        totals=BatchTotals(total=len(results), succeeded=len(results) - failed, failed=failed), progress=100,
        started=now, finished=now, duration_s=0, extractor="e", results=results,
        parameters=BatchParameters(source="s", export={"formats": formats}),
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    results = hostile_results()
    report = hostile_report(results, READABLE)
    return write_exports(report, LocalFolder(path=str(tmp_path_factory.mktemp("hostile"))), "b", [ExportFormat(f) for f in READABLE])


def test_names_that_are_not_xml_names_and_markup_in_values_round_trip_through_xml(hostile: dict[str, str]) -> None:
    root = etree.parse(hostile["documents.xml"]).getroot()
    first, second = root.findall("document")
    assert first.get("file") == hostile_results()[0].ref.name
    fields = first.find("fields")
    (named,) = [e for e in fields.findall("field") if e.get("name") == HOSTILE_KEY]
    assert named.text == HOSTILE_VALUE and len(named) == 0  # text, not elements
    assert fields.findtext("invoice_number") == "<INV&1>"
    assert [e.get("name") for e in fields.findall("field")] == [HOSTILE_KEY, "xmlns", "item"]
    seller = fields.find("seller")
    assert seller.findtext("name") == "<b>ACME</b> & Co"
    items = seller.find("field[@name='2nd line']").findall("item")
    assert [i.text for i in items[:2]] == ["<i>", None] and items[1].get("null") == "true"
    assert items[2].find("field[@name='x y']").text == "true"
    assert second.find("error").get("kind") == "corrupt" and second.find("error").text == "bad \ufffd <bytes> & more"
    assert root.find("summary").get("name") == "<script>n</script>"


def test_markup_in_names_and_values_is_text_in_the_html(hostile: dict[str, str], browser: Any) -> None:  # noqa: F811
    view = Opened(browser, Path(hostile["documents.html"]))
    try:
        page = view.page
        assert page.locator("script, img, b, i").count() == 0 and view.dialogs == []
        assert page.title() == "<script>n</script>: docbatch report"
        cells = page.locator("#documents tbody tr").first.locator("td").all_inner_texts()
        assert cells[1] == hostile_results()[0].ref.name and "<INV&1>" in cells and "<b>ACME</b> & Co" in cells
        assert "bad \ufffd <bytes> & more" in page.locator("#failures").inner_text()
        assert page.locator('a[href="review.html"]').count() == 0  # this batch writes no review page
    finally:
        view.context.close()


def test_markup_survives_txt_docx_and_pdf_as_text(hostile: dict[str, str]) -> None:
    text = Path(hostile["documents.txt"]).read_text(encoding="utf-8")
    assert f"    {HOSTILE_KEY}: {HOSTILE_VALUE}\n" in text and "seller.2nd line[3].x y: true" in text
    cells = [c for table in docx_cells(Path(hostile["documents.docx"])) for row in table for c in row]
    assert HOSTILE_KEY in cells and HOSTILE_VALUE in cells and "<INV&1>" in cells
    pdf = subprocess.run(["pdftotext", hostile["documents.pdf"], "-"], capture_output=True, text=True, check=True).stdout
    assert "<INV&1>" in pdf and "<b>ACME</b> & Co" in pdf


# --- limits, defaults, the child process, the CLI -----------------------------------------------


def many(count: int) -> list[DocumentResult]:
    results = []
    for index in range(count):
        ref = DocumentRef(index=index, uri=f"/x/{index}.pdf", name=f"doc-{index:04d}.pdf", size=1, fingerprint="1")
        if index % 9 == 4:
            results.append(DocumentResult(ref=ref, status="failed", error="no", error_kind=ErrorKind.empty))
        else:
            results.append(DocumentResult(ref=ref, status="succeeded", fields={"invoice_number": f"N{index}", "totals": {"grand_total": index + 0.5}}))
    return results


def test_docx_and_pdf_limit_a_large_batch_and_say_where_the_rest_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_readable, "TABLE_ROWS", 7)
    monkeypatch.setattr(export_readable, "FAILURE_ROWS", 2)
    monkeypatch.setattr(export_readable, "DETAIL_DOCUMENTS", 3)
    results = many(40)
    failed = sum(r.status == "failed" for r in results)
    written = write_exports(hostile_report(results, ["docx", "pdf"]), LocalFolder(path=str(tmp_path)), "b", [ExportFormat.docx, ExportFormat.pdf])
    tables = docx_cells(Path(written["documents.docx"]))
    assert [len(t) for t in tables[1:]] == [1 + 7, 1 + 2, 1 + 2, 1 + 2, 1 + 2]  # documents, failures, 3 × fields
    pdf = subprocess.run(["pdftotext", written["documents.pdf"], "-"], capture_output=True, text=True, check=True).stdout
    for where in (pdf, "\n".join(p.text for p in __import__("docx").Document(written["documents.docx"]).paragraphs)):
        assert "The table lists the first 7 of 40 documents; every document is in report.json." in where
        assert f"The first 2 of {failed} failed and skipped documents are listed" in where
        assert "The fields of the first 3 of 40 documents are listed" in where
    assert "doc-0006.pdf" in pdf and "doc-0007.pdf" not in pdf


def test_a_large_batch_writes_the_readable_reports_in_the_child_process(tmp_path: Path) -> None:
    results = many(PROCESS_FROM + 5)
    report = hostile_report(results, READABLE)
    stream = ExportStream(LocalFolder(path=str(tmp_path)), "b", [ExportFormat(f) for f in READABLE], expected=len(results))
    assert isinstance(stream.writer, ExportProcess)
    for start in range(0, len(results), 23):
        stream.add(results[start:start + 23])
    written = stream.finish(report, line_items=False, count=len(results))
    assert stream.writer.answered  # the child wrote them, no fallback
    root = etree.parse(written["documents.xml"]).getroot()
    assert len(root.findall("document")) == len(results) and root.find("summary/totals").get("total") == str(len(results))
    assert Path(written["documents.txt"]).read_text(encoding="utf-8").count("\n#") == len(results)
    assert Path(written["documents.html"]).read_text(encoding="utf-8").count('<tr class="') == len(results) + report.totals.failed
    assert len(docx_cells(Path(written["documents.docx"]))[1]) == 1 + len(results)


def test_the_default_formats_are_unchanged_and_write_no_readable_report(prefect_api: str, tmp_path: Path) -> None:
    from flows.batch import extract_batch
    from flows.params import ExportSettings

    expected = ["json", "jsonl", "csv", "xlsx", "parquet", "review"]
    assert [f.value for f in DEFAULT_FORMATS] == expected
    assert [f.value for f in ExportSettings().formats] == expected
    assert ExportSettings.model_json_schema()["properties"]["formats"]["default"] == expected
    assert not set(export_names(DEFAULT_FORMATS)) & set(FILES.values())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Invoice no. 7\nTotal: 10.00 EUR\n")
    report = extract_batch(source=str(tmp_path / "in"), export=ExportSettings(output_dir=str(tmp_path / "out")))
    names = {p.name for p in Path(report.output_dir).iterdir()}
    assert {"documents.json", "documents.csv", "documents.xlsx", "report.json"} <= names
    assert not names & set(FILES.values())


def test_the_cli_selects_readable_formats_and_writes_none_by_default(cli_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(EXAMPLES / "invoices" / "Orlen.txt", source / "Orlen.txt")
    written: dict[str, set[str]] = {}
    for label, args in (("chosen", ["-f", "xml", "-f", "pdf"]), ("default", [])):
        out = tmp_path / label
        done = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(source), "-o", str(out), "--json", *args],
                              env=cli_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        written[label] = set(report["exports"])
        assert written[label] == {p.name for p in next(out.iterdir()).iterdir()} - {"review.html"}
    assert written["chosen"] == {"documents.xml", "documents.pdf", "report.json"}
    assert not written["default"] & set(FILES.values()) and "documents.xlsx" in written["default"]
