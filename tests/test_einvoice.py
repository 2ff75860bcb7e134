"""E-invoice XML (`blocks.einvoice`): the ZUGFeRD corpus read exactly, UBL, and hostile XML refused."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pypdfium2
import pytest

from blocks.einvoice import MAX_XML_BYTES, EInvoiceError, is_einvoice, pdf_attachments, read_einvoice
from blocks.invoice_schema import InvoiceFields
from tests.conftest import corpus

ZUGFERD = corpus("zugferd")
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "einvoice"
CASES = sorted(
    path.parent for pattern in ("embedded/*/*.expected.json", "xml-rechnung/*/*.expected.json")
    for path in ZUGFERD.glob(pattern)
)
INVALID = sorted((ZUGFERD / "invalid").glob("*.pdf"))


def _expected(case: Path) -> dict:
    (path,) = case.glob("*.expected.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _assert_matches(got: dict, expected: dict) -> None:
    """Every key of expected.json but `source_xml` equals the reading, whole nested value per key."""
    assert set(got) == set(InvoiceFields().model_dump()), "the result must have the schema's shape"
    for key, value in expected.items():
        if key == "source_xml":
            continue
        assert got[key] == value, f"{key}: expected {value!r}, read {got[key]!r}"


def _pdf_xml(pdf_bytes: bytes) -> tuple[list[tuple[str, bytes]], list[str]]:
    pdf = pypdfium2.PdfDocument(pdf_bytes)
    try:
        return pdf_attachments(pdf)
    finally:
        pdf.close()


def test_corpus_cases_found() -> None:
    assert len(CASES) >= 15 and len(INVALID) >= 4


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_corpus_xml_read_exactly(case: Path) -> None:
    expected = _expected(case)
    data = (case / expected["source_xml"]).read_bytes()
    assert is_einvoice(data)
    _assert_matches(read_einvoice(data), expected)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_corpus_pdf_attachment_read_exactly(case: Path) -> None:
    expected = _expected(case)
    (pdf_path,) = case.glob("*.pdf")
    attachments, warnings = _pdf_xml(pdf_path.read_bytes())
    assert warnings == []
    invoices = [data for _name, data in attachments if is_einvoice(data)]
    assert len(invoices) == 1, [name for name, _ in attachments]
    _assert_matches(read_einvoice(invoices[0]), expected)


def test_only_xml_attachments_are_returned() -> None:
    # The Elektron PDF also carries a PNG and a PDF: they are not e-invoice candidates.
    (pdf_path,) = (ZUGFERD / "xml-rechnung" / "EN16931_Elektron").glob("*.pdf")
    attachments, warnings = _pdf_xml(pdf_path.read_bytes())
    assert [name for name, _ in attachments] == ["factur-x.xml"] and warnings == []


def test_payment_is_read() -> None:
    case = ZUGFERD / "embedded" / "Mustangproject__MustangGnuaccountingBeispielRE-20190610_507"
    (xml,) = case.glob("*.xml")
    assert read_einvoice(xml.read_bytes())["payment"] == {
        "iban": "DE88200800000970375700",
        "bic": "COBADEFFXXX",
        "terms": "Zahlbar ohne Abzug bis 01.07.2019",
    }


def test_declared_encoding_is_honoured() -> None:
    # The same invoice re-encoded as ISO-8859-1 (declared so) reads the same: umlauts included.
    case = ZUGFERD / "xml-rechnung" / "EN16931_Einfach"
    original = (case / "EN16931_Einfach.cii.xml").read_bytes()
    text = original.decode("utf-8")
    latin1 = text.replace(text[: text.index("?>") + 2], "<?xml version='1.0' encoding='ISO-8859-1'?>", 1)
    latin1_bytes = latin1.encode("iso-8859-1", errors="xmlcharrefreplace")  # only the licence comment has such characters
    assert b"\xe4" in latin1_bytes  # an ISO-8859-1 umlaut (Trennbl\xe4tter)
    assert read_einvoice(latin1_bytes) == read_einvoice(original)


@pytest.mark.parametrize("pdf_path", INVALID, ids=lambda path: path.name)
def test_invalid_corpus_pdfs_fail_only_with_einvoice_error(pdf_path: Path) -> None:
    attachments, warnings = _pdf_xml(pdf_path.read_bytes())
    assert all(isinstance(warning, str) for warning in warnings)
    assert attachments, "each upstream 'fail' PDF embeds an XML"
    for _name, data in attachments:
        is_einvoice(data)  # never raises
        try:
            result = read_einvoice(data)
        except EInvoiceError as exc:
            message = str(exc)
            assert message[:1].isupper() and message.endswith("."), message
            assert len(message.split()) >= 5, message
        else:
            InvoiceFields(**result)


def test_wrong_encoding_attribute_is_named() -> None:
    pdf_path = ZUGFERD / "invalid" / "Mustangproject_factur-x-invalid-xml-encoding-attribute.pdf"
    (attachment,), _ = _pdf_xml(pdf_path.read_bytes())
    with pytest.raises(EInvoiceError, match="encoding 'UTF-8-W/O-BOM'"):
        read_einvoice(attachment[1])


# --------------------------------------------------------------------------- UBL

def test_ubl_invoice() -> None:
    data = (FIXTURES / "ubl-tc434-example2.xml").read_bytes()
    assert is_einvoice(data)
    got = read_einvoice(data)
    assert got["syntax"] == "OASIS UBL 2.1 (Invoice)"
    assert got["profile"] == "urn:cen.eu:en16931:2017"
    assert (got["invoice_number"], got["document_type_code"], got["document_type"]) == (
        "TOSL108", "380", "commercial_invoice")
    assert (got["issue_date"], got["due_date"], got["currency"]) == ("2013-06-30", "2013-07-20", "NOK")
    assert got["order_reference"] == "123"
    assert (got["seller"]["name"], got["seller"]["vat_id"]) == ("Salescompany ltd.", "NO123456789MVA")
    assert got["seller"]["address"] == {
        "line1": "Main street 34", "line2": "Suite 123", "postcode": "303", "city": "Big city", "country": "NO"}
    assert (got["buyer"]["name"], got["buyer"]["vat_id"]) == ("The Buyercompany", "NO987654321MVA")
    assert got["totals"] == {
        "line_total": 1436.5, "charge_total": 100.0, "allowance_total": 100.0, "tax_basis_total": 1436.5,
        "tax_total": 365.28, "grand_total": 1801.78, "prepaid": 1000.0, "due_payable": 801.78,
    }
    assert got["tax_breakdown"] == [
        {"category": "S", "rate": 25, "basis": 1460.5, "tax": 365.13},
        {"category": "S", "rate": 15, "basis": 1.0, "tax": 0.15},
        {"category": "E", "rate": 0, "basis": -25.0, "tax": 0.0},
    ]
    assert len(got["line_items"]) == 5
    assert got["line_items"][1] == {
        "line_id": "2", "name": 'Returned "Advanced computing" book', "seller_item_id": "JB008",
        "quantity": -1, "unit_code": "EA", "net_unit_price": 3.96, "line_total": -3.96, "tax_rate": 15,
    }
    assert got["payment"]["iban"] == "NO9386011117947" and got["payment"]["bic"] == "DNBANOKK"
    assert got["payment"]["terms"].startswith("2 % discount if paid within 2 days")


def test_ubl_credit_note() -> None:
    data = (FIXTURES / "ubl-tc434-creditnote1.xml").read_bytes()
    assert is_einvoice(data)
    got = read_einvoice(data)
    assert got["syntax"] == "OASIS UBL 2.1 (CreditNote)"
    assert (got["invoice_number"], got["document_type_code"], got["document_type"]) == (
        "018304 / 28865", "381", "credit_note")
    assert (got["issue_date"], got["due_date"], got["currency"]) == ("2019-09-23", None, "EUR")
    assert got["buyer_reference"] == "018304 / 28865"
    # The legal name (BT-27, RegistrationName) wins over the trading name (PartyName).
    assert (got["seller"]["name"], got["seller"]["vat_id"]) == ("My Supplier Company", "BE0000000196")
    assert (got["buyer"]["name"], got["buyer"]["vat_id"]) == ("My Customer Company", "BE0000000295")
    assert got["totals"]["line_total"] == 100.11 and got["totals"]["grand_total"] == 100.11
    assert got["totals"]["tax_total"] == 0 and got["totals"]["due_payable"] == 100.11
    assert got["tax_breakdown"] == [{"category": "E", "rate": 0, "basis": 100.11, "tax": 0}]
    assert got["line_items"] == [{
        "line_id": "1", "name": "Exonération du versement du PP", "seller_item_id": "V55", "quantity": 1,
        "unit_code": "C62", "net_unit_price": 100.11, "line_total": 100.11, "tax_rate": 0,
    }]
    assert got["payment"] == {"iban": "BE91000000143476", "bic": "BPOTBEB1", "terms": None}


# --------------------------------------------------------------------------- refusals and safety

CII_OPEN = (
    '<rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100" '
    'xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100">'
)

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10))
    + "]>\n" + CII_OPEN + "<rsm:ExchangedDocument><ram:ID>&lol9;</ram:ID></rsm:ExchangedDocument>"
    "</rsm:CrossIndustryInvoice>"
).encode()

EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE r [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>\n' + CII_OPEN
    + "<rsm:ExchangedDocument><ram:ID>&xxe;</ram:ID></rsm:ExchangedDocument></rsm:CrossIndustryInvoice>"
).encode()

PARAMETER_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE r [ <!ENTITY % p SYSTEM "file:///etc/passwd"> %p; ]>\n' + CII_OPEN
    + "</rsm:CrossIndustryInvoice>"
).encode()


# A "]" inside a quoted default value must not hide the entity declaration after it.
HIDDEN_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE r [ <!ATTLIST r a CDATA "]"> <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>\n'
    + CII_OPEN + "<rsm:ExchangedDocument><ram:ID>&xxe;</ram:ID></rsm:ExchangedDocument></rsm:CrossIndustryInvoice>"
).encode()


@pytest.mark.parametrize("data", [BILLION_LAUGHS, EXTERNAL_ENTITY, PARAMETER_ENTITY, HIDDEN_ENTITY],
                         ids=["billion-laughs", "external-entity", "parameter-entity", "hidden-entity"])
def test_entity_declarations_are_refused_quickly(data: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(EInvoiceError, match="declares entities: not read") as caught:
        read_einvoice(data)
    assert "root:" not in str(caught.value)
    # The root is an e-invoice's, so the check says so and `read_einvoice` gives the refusal's reason.
    assert is_einvoice(data)
    assert time.monotonic() - started < 2


def test_parser_never_expands_entities_even_unchecked() -> None:
    # Defence in depth: the parser itself, given the hostile documents, neither expands nor fetches.
    from lxml import etree

    from blocks.einvoice import safe_xml_parser

    for data in (EXTERNAL_ENTITY, BILLION_LAUGHS):
        started = time.monotonic()
        try:
            root = etree.fromstring(data, parser=safe_xml_parser())
        except etree.XMLSyntaxError:
            continue
        text = etree.tostring(root, encoding="unicode")
        assert "root:" not in text and "lollollol" not in text
        assert time.monotonic() - started < 2


_OPENS_NOTHING = """
import sys
from lxml import etree
from blocks.einvoice import EInvoiceError, safe_xml_parser, is_einvoice, read_einvoice
fifo = sys.argv[1]
docs = [
    f'<!DOCTYPE r [<!ENTITY % p SYSTEM "file://{fifo}"> %p;]><r>&leak;</r>',
    f'<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{fifo}">]><r>&xxe;</r>',
    f'<!DOCTYPE r SYSTEM "file://{fifo}"><r/>',
]
for doc in docs:
    data = doc.encode()
    is_einvoice(data)
    try:
        read_einvoice(data)
    except EInvoiceError:
        pass
    try:
        etree.fromstring(data, parser=safe_xml_parser())
    except etree.XMLSyntaxError:
        pass
print("done")
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_no_external_file_is_ever_opened(tmp_path: Path) -> None:
    # A FIFO blocks whoever opens it: if any path opened the external entity or DTD, the child hangs.
    fifo = tmp_path / "probe.fifo"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-c", _OPENS_NOTHING, str(fifo)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60,
    )
    assert done.stdout.strip() == "done", done.stderr


def test_external_dtd_is_never_fetched() -> None:
    # No entity declared, only an external DTD: it is neither loaded nor used; the invoice reads.
    data = (
        '<?xml version="1.0"?>\n<!DOCTYPE rsm:CrossIndustryInvoice SYSTEM "file:///etc/passwd">\n' + CII_OPEN
        + "<rsm:ExchangedDocument><ram:ID>A-1</ram:ID></rsm:ExchangedDocument></rsm:CrossIndustryInvoice>"
    ).encode()
    got = read_einvoice(data)
    assert got["invoice_number"] == "A-1"
    assert "root:" not in json.dumps(got)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"<?xml version='1.0'?><rsm:CrossIndustryInvoice", "not well-formed"),
    (b"<?xml version='1.0'?><Invoice xmlns='urn:example'/>", "not an e-invoice"),
    (b"<html><body>hello</body></html>", "not an e-invoice"),
])
def test_not_an_einvoice(data: bytes, reason: str) -> None:
    assert not is_einvoice(data)
    with pytest.raises(EInvoiceError, match=reason):
        read_einvoice(data)


def _pdf_with_attachments(files: dict[str, bytes]) -> bytes:
    pdf = pypdfium2.PdfDocument.new()
    pdf.new_page(595, 842)
    for name, data in files.items():
        pdf.new_attachment(name).set_data(data)
    buffer = io.BytesIO()
    pdf.save(buffer)
    pdf.close()
    return buffer.getvalue()


def test_oversized_attachment_is_skipped_with_a_warning() -> None:
    case = ZUGFERD / "xml-rechnung" / "EN16931_Einfach"
    invoice = (case / "EN16931_Einfach.cii.xml").read_bytes()
    big = b"<x>" + b" " * (12 * 1024 * 1024) + b"</x>"
    assert len(big) > MAX_XML_BYTES
    pdf_bytes = _pdf_with_attachments({"huge.xml": big, "factur-x.xml": invoice, "notes.txt": b"hello"})
    attachments, warnings = _pdf_xml(pdf_bytes)
    assert attachments == [("factur-x.xml", invoice)]
    assert len(warnings) == 1 and "huge.xml" in warnings[0] and "12 MB" in warnings[0]
    assert "10 MB limit: ignored" in warnings[0]
