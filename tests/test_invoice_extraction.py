"""The three extraction paths through the embedded extractor, on the public corpus.

- e-invoice XML (embedded in PDFs, or a bare CII file) must equal the corpus' expected.json;
- invoice2data templates must reproduce invoice2data's expected output for every compare and
  custom case;
- the layout path fills the schema when neither applies, and the settings choose among them.
The parse runs in the isolated worker processes, as in a batch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from blocks.embedded import EmbeddedExtractor
from blocks.errors import BatchRefused
from blocks.invoice_schema import Invoice
from blocks.resolve import resolve_extractor
from tests.conftest import CORPUS, corpus

ZUGFERD_CASES = sorted(
    path.parent for group in ("embedded", "xml-rechnung") for path in (CORPUS / "zugferd" / group).glob("*/*.expected.json")
)
I2D_CASES = sorted(path.parent for group in ("compare", "custom") for path in (CORPUS / "invoice2data" / group).glob("*/*.expected.json"))
SCHEMA_KEYS = set(Invoice.model_fields)


def _expected_zugferd(case: Path) -> dict:
    expected = json.loads(next(case.glob("*.expected.json")).read_text())
    expected.pop("source_xml", None)
    return expected


def _input(case: Path) -> Path:
    found = [p for p in case.iterdir() if p.suffix in (".pdf", ".txt")]
    assert len(found) == 1, found
    return found[0]


def _templates_of(case: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    for template in case.glob("template_*"):
        shutil.copyfile(template, into / template.name.removeprefix("template_"))
    return into


@pytest.mark.parametrize("case", ZUGFERD_CASES, ids=lambda p: p.name)
def test_embedded_xml_equals_expected(case: Path) -> None:
    pdf = next(case.glob("*.pdf"))
    result = EmbeddedExtractor().extract(pdf.name, pdf.read_bytes())
    expected = _expected_zugferd(case)
    assert result.fields_source == "embedded-xml"
    assert {key: result.fields[key] for key in expected} == expected
    assert SCHEMA_KEYS <= set(result.fields)  # every key of the schema, `payment` included


@pytest.mark.parametrize("case", [c for c in ZUGFERD_CASES if list(c.glob("*.cii.xml"))], ids=lambda p: p.name)
def test_bare_cii_xml_equals_expected(case: Path) -> None:
    xml = next(case.glob("*.cii.xml"))
    result = EmbeddedExtractor().extract(xml.name, xml.read_bytes())
    expected = _expected_zugferd(case)
    assert result.fields_source == "xml" and result.media_type == "application/xml"
    assert {key: result.fields[key] for key in expected} == expected


@pytest.mark.parametrize("case", ZUGFERD_CASES[:3], ids=lambda p: p.name)
def test_embedded_xml_off_reads_the_page_text(case: Path) -> None:
    pdf = next(case.glob("*.pdf"))
    result = EmbeddedExtractor(embedded_xml=False).extract(pdf.name, pdf.read_bytes())
    assert result.fields_source == "layout"
    assert set(result.fields) == SCHEMA_KEYS
    Invoice.model_validate(result.fields)  # the layout path gives the same shape


# zugferd/invalid/ holds PDFs from upstream 'fail' folders. Two carry XML docbatch cannot take as an
# exact record (an undeclarable encoding; no issue date or currency): they are read from their
# text, with a warning saying what was wrong. The other two carry well-formed, schema-valid XML
# with every mandatory term (their upstream failure is not in what docbatch reads): they stay
# exact records. None may crash anything.
INVALID_XML = {
    "Mustangproject_factur-x-invalid-xml-encoding-attribute.pdf": "UTF-8-W/O-BOM",
    "Mustangproject_fail1.pdf": "BT-2 issue date, BT-5 currency",
}


@pytest.mark.parametrize("pdf", sorted((CORPUS / "zugferd" / "invalid").glob("*.pdf")), ids=lambda p: p.name)
def test_invalid_e_invoices_fall_back_to_the_text(pdf: Path) -> None:
    result = EmbeddedExtractor().extract(pdf.name, pdf.read_bytes())
    if pdf.name in INVALID_XML:
        assert result.fields_source == "layout", f"{pdf.name}: its embedded XML was used"
        (warning,) = [w for w in result.warnings if "embedded XML" in w]
        assert "ignored, fields read from the text instead" in warning and INVALID_XML[pdf.name] in warning
        assert result.fields["invoice_number"] and result.fields["totals"]["grand_total"]
        Invoice.model_validate(result.fields)
    else:
        assert result.fields_source == "embedded-xml"


@pytest.mark.parametrize("case", I2D_CASES, ids=lambda p: p.name)
def test_templates_reproduce_invoice2data(case: Path, tmp_path: Path) -> None:
    templates = _templates_of(case, tmp_path / "templates")
    document = _input(case)
    result = EmbeddedExtractor(templates=str(templates)).extract(document.name, document.read_bytes())
    expected = json.loads(next(case.glob("*.expected.json")).read_text())[0]
    template_name = next(templates.iterdir()).name
    assert result.fields_source == f"template:{template_name}"
    assert result.reader in ("pdfium", "pdftotext", "pypdf", "text")
    assert {key: result.fields.get(key) for key in expected} == expected


def test_no_template_matched_is_not_no_text(tmp_path: Path) -> None:
    templates = _templates_of(corpus("invoice2data", "compare", "Orlen"), tmp_path / "templates")
    pdf = corpus("invoice2data", "compare", "free_fiber", "free_fiber.pdf")
    fallback = EmbeddedExtractor(templates=str(templates)).extract(pdf.name, pdf.read_bytes())
    assert fallback.fields_source == "layout"
    assert fallback.fields["invoice_number"] == "562044387"  # words read for the layout after the templates
    assert fallback.fields["totals"]["grand_total"] == 29.99
    assert any("no template of the 1" in w and "matched" in w for w in fallback.warnings)
    from blocks.errors import DocumentError
    from blocks.models import ErrorKind

    with pytest.raises(DocumentError) as no_match:
        EmbeddedExtractor(templates=str(templates), on_no_template="fail").extract(pdf.name, pdf.read_bytes())
    assert no_match.value.kind == ErrorKind.template and "no template" in no_match.value.message
    scan = corpus("nasty-inputs", "scanned-image-only", "ocrmypdf_ccitt.pdf")
    with pytest.raises(DocumentError) as no_text:
        EmbeddedExtractor(templates=str(templates), on_no_template="fail", ocr=False).extract(scan.name, scan.read_bytes())
    assert no_text.value.kind == ErrorKind.no_text and "no text layer" in no_text.value.message
    with pytest.raises(DocumentError) as read_by_ocr:  # with OCR its text is read, and no template matches it
        EmbeddedExtractor(templates=str(templates), on_no_template="fail").extract(scan.name, scan.read_bytes())
    assert read_by_ocr.value.kind == ErrorKind.template and "no template" in read_by_ocr.value.message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("issuer: X\nkeywords: [a\n", "YAML"),
        ("issuer: X\nfields:\n  amount: 'Total (\\d+'\n", "keywords"),
        ("issuer: X\nkeywords: [Invoice]\nfields:\n  amount: 'Total (\\d+'\n", "amount"),
    ],
)
def test_a_broken_template_refuses_the_batch_before_any_document(tmp_path: Path, content: str, reason: str) -> None:
    (tmp_path / "bad.yml").write_text(content)
    with pytest.raises(BatchRefused) as refused:
        resolve_extractor("embedded", templates=str(tmp_path))
    assert "bad.yml" in str(refused.value) and reason.lower() in str(refused.value).lower()


def test_a_changed_template_changes_the_fingerprint(tmp_path: Path) -> None:
    templates = _templates_of(corpus("invoice2data", "compare", "Orlen"), tmp_path / "t")
    from blocks.local import LocalDirectory
    from tasks.journal import settings_key
    from flows.params import ExtractionSettings

    extractor = EmbeddedExtractor(templates=str(templates))
    source, settings = LocalDirectory(path=str(tmp_path)), ExtractionSettings(templates=str(templates))
    before, key_before = extractor.fingerprint(), settings_key(source, [], [], True, extractor, settings)
    template = next(templates.iterdir())
    template.write_text(template.read_text().replace("PLN", "EUR"))
    assert extractor.fingerprint() != before and before
    assert settings_key(source, [], [], True, extractor, settings) != key_before  # same path, new content
    assert EmbeddedExtractor().fingerprint() == ""


@pytest.mark.parametrize("path", sorted((CORPUS / "office" / "docx").glob("*.docx")) + sorted((CORPUS / "office").glob("xlsx/*.xlsx"))[:6], ids=lambda p: p.name)
def test_office_documents_get_the_schema_or_a_clean_error(path: Path) -> None:
    from blocks.errors import DocumentError

    try:
        result = EmbeddedExtractor().extract(path.name, path.read_bytes())
    except DocumentError as exc:  # corrupt/unsupported office files in the corpus stay clean errors
        assert exc.message
        return
    assert result.fields_source == "layout" and set(result.fields) == SCHEMA_KEYS


def test_docx_table_gives_line_items() -> None:
    import io

    import docx

    document = docx.Document()
    document.add_paragraph("ACME Tools GmbH")
    document.add_paragraph("Rechnung Nr. RE-2024-117")
    document.add_paragraph("Rechnungsdatum: 05.03.2024")
    table = document.add_table(rows=3, cols=4)
    for row, cells in zip(table.rows, [("Bezeichnung", "Menge", "Einzelpreis", "Betrag"), ("Hammer", "2", "12,50", "25,00"), ("Zange", "1", "1.234,56", "1.234,56")]):
        for cell, value in zip(row.cells, cells):
            cell.text = value
    document.add_paragraph("Gesamtbetrag: 1.259,56 EUR")
    buffer = io.BytesIO()
    document.save(buffer)
    result = EmbeddedExtractor().extract("rechnung.docx", buffer.getvalue())
    fields = result.fields
    assert fields["invoice_number"] == "RE-2024-117"
    assert fields["issue_date"] == "2024-03-05"
    assert fields["totals"]["grand_total"] == 1259.56 and fields["currency"] == "EUR"
    assert [item["line_total"] for item in fields["line_items"]] == [25.0, 1234.56]
