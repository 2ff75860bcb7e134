"""Provenance of the embedded extractor's values, per path: e-invoice XML, templates, layout, XLSX, text.

Real corpus files through `parse_document` (the worker's function): the XML path resolves in
the XML to the value, the layout's boxes cover the PDFium words of the value, a template names
its field, an XLSX value names its cell; confidences stay in [0, 1] and the provenance mirrors
the fields' structure.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from blocks.document import PageSize, ReadDocument, Word
from blocks.einvoice import SYNTAXES, read_einvoice_with_sources
from blocks.field_paths import FieldsOutcome
from blocks.parsing import parse_document
from blocks.readers import read_pdf
from blocks.source_provenance import LABELLED, TEMPLATE_UNLOCATED, UNLABELLED, provenance_of

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "public"
MUSTANG = CORPUS / "zugferd/embedded/Mustangproject__MustangGnuaccountingBeispielRE-20201121_508"
MUSTANG_PDF = MUSTANG / "MustangGnuaccountingBeispielRE-20201121_508.pdf"
MUSTANG_XML = MUSTANG / "MustangGnuaccountingBeispielRE-20201121_508.embedded_factur-x.xml"
AWS = CORPUS / "invoice2data/compare/AmazonWebServices"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="the public corpus (../shared/corpus/public) is not here")


def _pairs(fields: Any, provenance: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, value, provenance) of every leaf; asserts that the provenance mirrors the fields."""
    if isinstance(fields, dict):
        assert isinstance(provenance, dict) and set(provenance) == set(fields), path
        return [pair for key in fields for pair in _pairs(fields[key], provenance[key], f"{path}.{key}".strip("."))]
    if isinstance(fields, list):
        assert isinstance(provenance, list) and len(provenance) == len(fields), path
        return [pair for i, item in enumerate(fields) for pair in _pairs(item, provenance[i], f"{path}[{i}]")]
    return [(path, fields, provenance)]


def _check_shape_and_confidence(extraction: Any) -> list[tuple[str, Any, Any]]:
    assert not [w for w in extraction.warnings if "where the values were read" in w]
    pairs = _pairs(extraction.fields, extraction.provenance)
    for path, value, found in pairs:
        if found is None:
            continue
        assert value is not None, path
        assert found["confidence"] is not None and 0 <= found["confidence"] <= 1, (path, found)
        if found["start"] is not None and found["match"] != "declared":
            assert found["end"] - found["start"] == len(found["text"]), path
    return pairs


def _overlaps(box: dict[str, float], word: Any) -> bool:
    return box["x"] < word.x1 and word.x0 < box["x"] + box["w"] and box["y"] < word.bottom and word.top < box["y"] + box["h"]


def test_embedded_xml_values_name_their_element_and_where_they_are_printed() -> None:
    extraction = parse_document(MUSTANG_PDF.name, MUSTANG_PDF.read_bytes(), {})
    assert extraction.fields_source == "embedded-xml"
    pairs = _check_shape_and_confidence(extraction)
    number = extraction.provenance["invoice_number"]
    assert number["match"] == "declared" and number["confidence"] == 1.0
    assert number["xml_path"] == "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID"
    root = etree.fromstring(MUSTANG_XML.read_bytes())
    namespaces = SYNTAXES[root.tag].namespaces
    (element,) = root.xpath(number["xml_path"], namespaces=namespaces)
    assert element.text.strip() == extraction.fields["invoice_number"] == "RE-20201121/508"
    # printed on page 1, with a box; the declared source is kept
    assert number["page"] == 1 and number["text"] == "RE-20201121/508" and number["box"]["w"] > 0
    # every value with an element resolves to exactly one node there
    declared = [found for _, value, found in pairs if found is not None]
    assert len(declared) > 40
    assert all(len(root.xpath(found["xml_path"], namespaces=namespaces)) == 1 for found in declared)
    assert all(found["confidence"] == 1.0 for found in declared)


def test_xml_paths_of_every_corpus_e_invoice_resolve_to_their_values() -> None:
    files = sorted((CORPUS / "zugferd/xml-rechnung").glob("*/*.cii.xml"))
    assert files
    for file in files:
        data = file.read_bytes()
        fields, sources = read_einvoice_with_sources(data)
        root = etree.fromstring(data)
        namespaces = SYNTAXES[root.tag].namespaces
        for path, value, found in _pairs(fields, sources):
            if value is None:
                assert found is None, (file.name, path)
                continue
            assert found is not None and found.xml_path, (file.name, path)
            nodes = root.xpath(found.xml_path, namespaces=namespaces)
            assert len(nodes) == 1, (file.name, path, found.xml_path)
            node = nodes[0]
            if path == "syntax":  # the root element: its name is the syntax
                continue
            raw = node.text if isinstance(node, etree._Element) else str(node)
            assert " ".join((raw or "").split()) == " ".join(found.text.split()), (file.name, path)


def test_a_bare_e_invoice_declares_element_paths_without_pages() -> None:
    file = CORPUS / "zugferd/xml-rechnung/EN16931_Einfach/EN16931_Einfach.cii.xml"
    extraction = parse_document(file.name, file.read_bytes(), {})
    assert extraction.fields_source == "xml"
    _check_shape_and_confidence(extraction)
    total = extraction.provenance["totals"]["grand_total"]
    assert total["page"] is None and total["match"] == "declared" and total["confidence"] == 1.0
    assert total["xml_path"].endswith("ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:GrandTotalAmount")


def test_layout_boxes_cover_the_pdfium_words_of_the_value() -> None:
    data = MUSTANG_PDF.read_bytes()
    extraction = parse_document(MUSTANG_PDF.name, data, {"embedded_xml": False})
    assert extraction.fields_source == "layout"
    _check_shape_and_confidence(extraction)
    assert extraction.fields["totals"]["grand_total"] == 571.04
    total = extraction.provenance["totals"]["grand_total"]
    assert total["page"] == 1 and total["text"] == "571.04" and total["match"] == "exact"
    words = [w for w in read_pdf(data, max_pages=10).words if w.page == 1 and "571.04" in w.text]
    assert words and any(_overlaps(total["box"], w) for w in words)
    assert (total["box"]["page_width"], total["box"]["page_height"]) == pytest.approx((595.25, 841.86), abs=0.01)
    # the grand total stands right of its label: labelled, exact
    assert total["confidence"] == LABELLED
    # line items mirror, and their amounts sit in their rows (boxes top down)
    items = extraction.provenance["line_items"]
    assert len(items) == len(extraction.fields["line_items"]) == 3
    tops = [item["line_total"]["box"]["y"] for item in items]
    assert tops == sorted(tops) and len(set(tops)) == 3


def test_a_value_without_a_label_is_a_guess() -> None:
    extraction = parse_document(MUSTANG_PDF.name, MUSTANG_PDF.read_bytes(), {"embedded_xml": False})
    seller = extraction.provenance["seller"]["name"]  # the top-most company name, no 'Seller:' label
    assert seller["text"] == extraction.fields["seller"]["name"] and seller["confidence"] == UNLABELLED


def test_template_values_name_their_template_field() -> None:
    pdf = AWS / "AmazonWebServices.pdf"
    extraction = parse_document(pdf.name, pdf.read_bytes(), {"templates": str(AWS)})
    assert extraction.fields_source == "template:template_com.amazon.aws.yml"
    _check_shape_and_confidence(extraction)
    number = extraction.provenance["invoice_number"]
    assert number["template_field"] == "invoice_number" and number["text"] == extraction.fields["invoice_number"]
    assert number["page"] == 1 and number["box"]["w"] > 0 and number["confidence"] == 1.0  # words read for the box
    lines = extraction.provenance["lines"]
    assert len(lines) == len(extraction.fields["lines"]) and lines[0]["name"]["template_field"] == "lines.name"
    # a value the template states without printing it (its description) is declared, not located
    unlocated = [found for _, _, found in _pairs(extraction.fields, extraction.provenance)
                 if found is not None and found["match"] == "declared"]
    assert all(found["confidence"] == TEMPLATE_UNLOCATED and found["page"] is None for found in unlocated)


def _workbook() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Rechnung"
    sheet["A1"] = "ACME GmbH"
    sheet["A3"], sheet["B3"] = "Invoice number", "INV-2024-0042"
    sheet["A4"], sheet["B4"] = "Invoice date", "2024-03-05"
    for column, header in zip("ABCD", ("Description", "Qty", "Price", "Amount")):
        sheet[f"{column}6"] = header
    sheet["A7"], sheet["B7"], sheet["C7"], sheet["D7"] = "Widget", 2, 50.0, 100.0
    sheet["A8"], sheet["B8"], sheet["C8"], sheet["D8"] = "Gadget", 1, 19.5, 19.5
    sheet["C10"], sheet["D10"] = "Total", 119.5
    book.create_sheet("Notes")["B2"] = "Thank you"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_xlsx_values_name_their_sheet_and_cell() -> None:
    import openpyxl

    data = _workbook()
    extraction = parse_document("invoice.xlsx", data, {})
    pairs = _check_shape_and_confidence(extraction)
    book = openpyxl.load_workbook(io.BytesIO(data))
    located = [(path, value, found) for path, value, found in pairs if found is not None]
    assert {path for path, _, _ in located} >= {"invoice_number", "issue_date", "totals.grand_total", "line_items[1].line_total"}
    for path, value, found in located:
        assert found["page"] is None
        cell = book[found["sheet"]][found["cell"]].value
        assert str(cell) == found["text"] or cell == value, (path, found)
    assert extraction.provenance["invoice_number"]["cell"] == "B3"
    assert extraction.provenance["totals"]["grand_total"]["cell"] == "D10"
    assert extraction.provenance["line_items"][1]["line_total"]["cell"] == "D8"  # the Amount column, not the price


def test_plain_text_values_have_offsets_and_no_page() -> None:
    text = "ACME GmbH\nInvoice number: INV-77\nDate: 2024-03-05\n\nTotal: 1.234,50 EUR\n"
    extraction = parse_document("invoice.txt", text.encode(), {})
    _check_shape_and_confidence(extraction)
    total = extraction.provenance["totals"]["grand_total"]
    assert total["page"] is None and text[total["start"]: total["end"]] == total["text"] == "1.234,50"
    assert total["confidence"] == LABELLED
    number = extraction.provenance["invoice_number"]
    assert text[number["start"]: number["end"]] == "INV-77"


def test_ocr_scores_lower_the_confidence_and_boxes_are_in_pixels() -> None:
    words = [
        Word("Invoice", 40, 100, 140, 130, 1, 0.98), Word("number", 150, 100, 260, 130, 1, 0.97),
        Word("A-12345", 300, 100, 420, 130, 1, 0.9),
        Word("Total", 40, 300, 120, 330, 1, 0.99), Word("99.50", 300, 300, 380, 330, 1, 0.6),
    ]
    document = ReadDocument(
        text="Invoice number A-12345\nTotal 99.50", pages=1, media_type="image/png",
        words=words, page_sizes=[PageSize(1000, 1400)],
    )
    fields = {"invoice_number": "A-12345", "totals": {"grand_total": 99.5}, "line_items": []}
    provenance = provenance_of(document, FieldsOutcome(fields, "layout"))
    assert provenance is not None
    number, total = provenance["invoice_number"], provenance["totals"]["grand_total"]
    assert number["box"] == {"x": 300, "y": 100, "w": 120, "h": 30, "page_width": 1000, "page_height": 1400}
    assert number["confidence"] == pytest.approx(LABELLED * 0.9)
    assert total["confidence"] == pytest.approx(LABELLED * 0.6)
    assert provenance["line_items"] == []


def test_provenance_never_fails_the_document() -> None:
    document = ReadDocument(text="Total 5.00", pages=None, media_type="text/plain")
    warnings: list[str] = []

    class Broken:
        fields = {"total": 5.0}
        source = "layout"

        @property
        def declared(self) -> None:
            raise RuntimeError("broken on purpose")

    assert provenance_of(document, Broken(), warnings=warnings) is None
    assert warnings and "broken on purpose" in warnings[0]
