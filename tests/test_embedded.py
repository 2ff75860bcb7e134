"""The embedded extractor on real documents: content-type detection, text, pages, error kinds."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from blocks.embedded import EmbeddedExtractor
from blocks.errors import DocumentError
from blocks.models import ErrorKind
from blocks.parsing import read_document
from tests.conftest import corpus

PDF_CASES = ["AmazonWebServices", "FlipkartInvoice", "SammyMaystoneLinesTest", "coolblue1", "free_fiber"]


def extract(path, name=None):
    return EmbeddedExtractor().extract(name or path.name, path.read_bytes())


@pytest.mark.parametrize("case", PDF_CASES)
def test_invoice_pdfs_give_their_text_layer(case: str) -> None:
    folder = corpus("invoice2data", "compare", case)
    expected = json.loads((folder / f"{case}.expected.json").read_text())[0]
    result = extract(folder / f"{case}.pdf")
    assert result.media_type == "application/pdf"
    assert result.pages and result.pages >= 1
    assert expected["invoice_number"].lstrip("#") in result.text


@pytest.mark.parametrize("case", ["AmazonWebServices", "FlipkartInvoice", "coolblue1", "free_fiber"])
def test_layout_finds_the_invoice_number(case: str) -> None:
    folder = corpus("invoice2data", "compare", case)
    expected = json.loads((folder / f"{case}.expected.json").read_text())[0]
    assert extract(folder / f"{case}.pdf").fields["invoice_number"] == expected["invoice_number"].lstrip("#")


def test_multi_page_pdf_counts_pages() -> None:
    result = extract(corpus("invoice2data", "compare", "free_fiber", "free_fiber.pdf"))
    assert result.pages == 2
    assert result.text.count("\f") == 1  # one form feed between two pages


def test_docx_body_and_tables_in_order() -> None:
    path = corpus("office", "docx", "blk-paras-and-tables.docx")
    result = extract(path)
    assert result.media_type.endswith("wordprocessingml.document")
    reference = path.with_name("blk-paras-and-tables.expected.txt").read_text()
    body = [line.strip() for line in reference.splitlines() if line.strip() and line[0] not in "[#"]
    text_lines = [line.strip() for line in result.text.splitlines()]
    for line in body:
        assert line in text_lines
    assert len(read_document(path.name, path.read_bytes(), {}).tables) == reference.count("[table]")


def test_xlsx_cells_with_dates() -> None:
    result = extract(corpus("office", "xlsx", "date_1904.xlsx"))
    reference = json.loads(corpus("office", "xlsx", "date_1904.cells.json").read_text())
    assert result.media_type.endswith("spreadsheetml.sheet")
    assert [line[2:] for line in result.text.splitlines() if line.startswith("# ")] == list(reference["sheets"])
    assert result.pages == len(reference["sheets"])
    # the same calendar date as the 1900-based workbook, despite a different serial number
    dates_1904 = [line for line in result.text.splitlines() if line[:2] == "20"]
    assert dates_1904 and extract(corpus("office", "xlsx", "date_1900.xlsx")).text.count(dates_1904[0]) == 1


def test_type_comes_from_content_not_extension() -> None:
    docx_as_pdf = extract(corpus("nasty-inputs", "derived", "docx-named-as_tbl-2x2-table.pdf"))
    assert docx_as_pdf.media_type.endswith("wordprocessingml.document")
    path = corpus("nasty-inputs", "derived", "docx-named-as_tbl-2x2-table.pdf")
    assert len(read_document(path.name, path.read_bytes(), {}).tables) == 1  # a 2x2 table, read as Word, not as a broken PDF
    html = EmbeddedExtractor().extract("page.txt", b"<!DOCTYPE html><html><head><title>Bill 7</title><script>x=1</script></head><body><p>Total: 12.50 EUR</p></body></html>")
    assert html.media_type == "text/html"
    assert "x=1" not in html.text and "Total: 12.50 EUR" in html.text
    assert html.fields["totals"]["grand_total"] == 12.5 and html.fields["currency"] == "EUR"


def test_csv_and_latin1_text() -> None:
    csv_bytes = b"sku;qty;price\nA1;2;3,50\nB2;1;9,99\n"
    csv_result = EmbeddedExtractor().extract("items.csv", csv_bytes)
    assert csv_result.media_type == "text/csv"
    assert read_document("items.csv", csv_bytes, {}).tables == [[["sku", "qty", "price"], ["A1", "2", "3,50"], ["B2", "1", "9,99"]]]
    latin = EmbeddedExtractor().extract("note.txt", "Rechnung Nr. 4711 über 12,50 € für Müller".encode("cp1252"))
    assert "über" in latin.text and "Müller" in latin.text
    assert latin.fields["invoice_number"] == "4711"
    assert latin.warnings and "decoded as" in latin.warnings[0]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (("nasty-inputs", "broken", "pdfplumber_empty-zero-bytes.pdf"), ErrorKind.empty),
        (("nasty-inputs", "encrypted", "pdfminer_aes-256-r6.pdf"), ErrorKind.encrypted),
        (("nasty-inputs", "derived", "truncated-1KiB_AmazonWebServices.pdf"), ErrorKind.corrupt),
        (("nasty-inputs", "not-a-pdf", "pdfplumber_issue-948.zip"), ErrorKind.unsupported),
        (("nasty-inputs", "broken", "pdfplumber_issue-297-example.pdf"), ErrorKind.no_text),  # blank: nothing for OCR
        (("nasty-inputs", "derived", "many-pages-10000_simple1.pdf"), ErrorKind.too_large),
        (("office", "xlsx", "null_archive.xlsx"), ErrorKind.unsupported),
    ],
)
def test_bad_inputs_raise_precise_kinds(path: tuple[str, ...], kind: ErrorKind) -> None:
    with pytest.raises(DocumentError) as raised:
        extract(corpus(*path))
    assert raised.value.kind == kind
    assert raised.value.transient is False
    assert len(raised.value.message) > 10


def test_scanned_pdf_error_with_ocr_off_says_so() -> None:
    path = corpus("nasty-inputs", "scanned-image-only", "ocrmypdf_ccitt.pdf")
    with pytest.raises(DocumentError) as raised:
        EmbeddedExtractor(ocr=False).extract(path.name, path.read_bytes())
    assert "OCR is off" in raised.value.message


def test_known_password_opens_encrypted_pdf() -> None:
    from pydantic import SecretStr

    extractor = EmbeddedExtractor(passwords=[SecretStr("wrong"), SecretStr("usersecret")])
    result = extractor.extract("x.pdf", corpus("nasty-inputs", "encrypted", "pdfminer_aes-256-r6.pdf").read_bytes())
    assert "Hello" in result.text
    assert "usersecret" not in repr(extractor)


def test_zip_that_is_not_office_and_binary_noise() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    with pytest.raises(DocumentError) as raised:
        EmbeddedExtractor().extract("a.docx", buffer.getvalue())
    assert raised.value.kind == ErrorKind.unsupported and "ZIP" in raised.value.message
    with pytest.raises(DocumentError) as raised:
        EmbeddedExtractor().extract("blob.txt", bytes(range(256)) * 4)
    assert raised.value.kind == ErrorKind.unsupported


def test_a_rotated_page_gives_words_and_boxes_of_the_page_as_displayed() -> None:
    """A landscape page stored portrait with /Rotate 90: its words read left to right, and each
    box lies on the word's ink in the page as rendered (the review page draws them there)."""
    import pypdfium2 as pdfium

    from blocks.readers import read_pdf

    data = corpus("nasty-inputs", "real-world-text-pdfs", "pdfplumber_senate-expenditures.pdf").read_bytes()
    document = read_pdf(data, max_pages=10)
    page = pdfium.PdfDocument(data)[0]
    assert page.get_rotation() == 90
    words = [w for w in document.words if w.page == 1]
    assert [w.text for w in words[:4]] == ["DOCUMENT", "NO.", "DATE", "PAYEE"]
    image = page.render(scale=2).to_pil().convert("L")
    assert image.size == (round(document.page_sizes[0].width * 2), round(document.page_sizes[0].height * 2))
    for word in words[:60]:
        ink = image.crop((int(word.x0 * 2), int(word.top * 2), int(word.x1 * 2) + 1, int(word.bottom * 2) + 1))
        assert min(ink.get_flattened_data()) < 120, word
