"""E-invoice XML read exactly: CII (ZUGFeRD 2.x / Factur-X / XRechnung), ZUGFeRD 1.0 and UBL 2.1.

An e-invoice carries the invoice as data, so nothing here guesses: each syntax has a table of
XPaths (one per schema field), and the values found are typed (amounts as float, dates ISO) and
validated through `InvoiceFields`. A field whose element is absent stays None.

The XML comes from strangers (PDF attachments, uploaded files), so it is parsed with a parser
that never resolves entities, loads no DTD and touches no network, and any document whose DOCTYPE
declares entities is refused outright (billion laughs, external entities).

This module is imported by the small parsing worker processes: it imports lxml and the schema
only; pypdfium2 is imported lazily by `pdf_attachments`, Prefect never.
"""

from __future__ import annotations

import codecs
import ctypes
import re
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from blocks.invoice_schema import InvoiceFields, document_type_name

MAX_XML_BYTES: int = 10 * 1024 * 1024


class EInvoiceError(ValueError):
    """The XML is not a readable e-invoice; the message says what is wrong, for a person."""


# --------------------------------------------------------------------------- syntaxes

CII_NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
}
ZF1_NS = {
    "rsm": "urn:ferd:CrossIndustryDocument:invoice:1p0",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:12",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:15",
}
UBL_COMMON = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
UBL_INVOICE_NS = {"doc": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2", **UBL_COMMON}
UBL_CREDIT_NOTE_NS = {"doc": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2", **UBL_COMMON}

# Value kinds: how the text of the element found is turned into a schema value.
TEXT, AMOUNT, DATE, IBAN = "text", "amount", "date", "iban"


@dataclass(frozen=True)
class Rows:
    """A repeated group (tax breakdown, lines): `path` selects the rows, `columns` are relative to a row."""

    path: str
    columns: dict[str, tuple[str, str]]


@dataclass(frozen=True)
class Syntax:
    """One e-invoice syntax: its name in results, its namespaces and where each field sits.

    `fields` maps a dotted schema path (`seller.address.city`) to (XPath, kind). XPaths are
    evaluated from the root and the first non-empty match wins; a tuple of XPaths lists
    alternatives in order of preference (UBL's legal name before its trading name).
    """

    name: str
    namespaces: dict[str, str]
    fields: dict[str, tuple[str | tuple[str, ...], str]]
    rows: dict[str, Rows] = field(default_factory=dict)


def _cii_party(base: str, party: str, ns: str = "ram") -> dict[str, tuple[str, str]]:
    """Party fields of CII and ZUGFeRD 1.0 (the same element names, different namespaces)."""
    p = f"{base}/{ns}:{party}"
    a = f"{p}/{ns}:PostalTradeAddress"
    key = "seller" if party.startswith("Seller") else "buyer"
    return {
        f"{key}.name": (f"{p}/{ns}:Name", TEXT),
        # schemeID VA = VAT identifier (BT-31/48), FC = the seller's local tax number (BT-32).
        f"{key}.vat_id": (f"{p}/{ns}:SpecifiedTaxRegistration/{ns}:ID[@schemeID='VA']", TEXT),
        f"{key}.tax_number": (f"{p}/{ns}:SpecifiedTaxRegistration/{ns}:ID[@schemeID='FC']", TEXT),
        f"{key}.address.line1": (f"{a}/{ns}:LineOne", TEXT),
        f"{key}.address.line2": (f"{a}/{ns}:LineTwo", TEXT),
        f"{key}.address.postcode": (f"{a}/{ns}:PostcodeCode", TEXT),
        f"{key}.address.city": (f"{a}/{ns}:CityName", TEXT),
        f"{key}.address.country": (f"{a}/{ns}:CountryID", TEXT),
    }


def _cii_syntax() -> Syntax:
    """UN/CEFACT CII D16B: ZUGFeRD 2.x, Factur-X and XRechnung-CII, every profile."""
    tx = "/rsm:CrossIndustryInvoice/rsm:SupplyChainTradeTransaction"
    agreement = f"{tx}/ram:ApplicableHeaderTradeAgreement"
    settlement = f"{tx}/ram:ApplicableHeaderTradeSettlement"
    sums = f"{settlement}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    means = f"{settlement}/ram:SpecifiedTradeSettlementPaymentMeans"
    doc = "/rsm:CrossIndustryInvoice/rsm:ExchangedDocument"
    return Syntax(
        name="UN/CEFACT CII (CrossIndustryInvoice)",
        namespaces=CII_NS,
        fields={
            "profile": ("/rsm:CrossIndustryInvoice/rsm:ExchangedDocumentContext"
                        "/ram:GuidelineSpecifiedDocumentContextParameter/ram:ID", TEXT),
            "invoice_number": (f"{doc}/ram:ID", TEXT),
            "document_type_code": (f"{doc}/ram:TypeCode", TEXT),
            "issue_date": (f"{doc}/ram:IssueDateTime/udt:DateTimeString", DATE),
            "due_date": (f"{settlement}/ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString", DATE),
            "currency": (f"{settlement}/ram:InvoiceCurrencyCode", TEXT),
            "buyer_reference": (f"{agreement}/ram:BuyerReference", TEXT),
            "order_reference": (f"{agreement}/ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID", TEXT),
            **_cii_party(agreement, "SellerTradeParty"),
            **_cii_party(agreement, "BuyerTradeParty"),
            "totals.line_total": (f"{sums}/ram:LineTotalAmount", AMOUNT),
            "totals.charge_total": (f"{sums}/ram:ChargeTotalAmount", AMOUNT),
            "totals.allowance_total": (f"{sums}/ram:AllowanceTotalAmount", AMOUNT),
            "totals.tax_basis_total": (f"{sums}/ram:TaxBasisTotalAmount", AMOUNT),
            # BT-110 is the total in the invoice currency; a second one (BT-111) may follow in
            # the accounting currency, so the one in the invoice currency is picked by `_read`.
            "totals.tax_total": (f"{sums}/ram:TaxTotalAmount", AMOUNT),
            "totals.grand_total": (f"{sums}/ram:GrandTotalAmount", AMOUNT),
            "totals.prepaid": (f"{sums}/ram:TotalPrepaidAmount", AMOUNT),
            "totals.due_payable": (f"{sums}/ram:DuePayableAmount", AMOUNT),
            "payment.iban": (f"{means}/ram:PayeePartyCreditorFinancialAccount/ram:IBANID", IBAN),
            "payment.bic": (f"{means}/ram:PayeeSpecifiedCreditorFinancialInstitution/ram:BICID", TEXT),
            "payment.terms": (f"{settlement}/ram:SpecifiedTradePaymentTerms/ram:Description", TEXT),
        },
        rows={
            "tax_breakdown": Rows(f"{settlement}/ram:ApplicableTradeTax", {
                "category": ("ram:CategoryCode", TEXT),
                "rate": ("ram:RateApplicablePercent", AMOUNT),
                "basis": ("ram:BasisAmount", AMOUNT),
                "tax": ("ram:CalculatedAmount", AMOUNT),
            }),
            "line_items": Rows(f"{tx}/ram:IncludedSupplyChainTradeLineItem", {
                "line_id": ("ram:AssociatedDocumentLineDocument/ram:LineID", TEXT),
                "name": ("ram:SpecifiedTradeProduct/ram:Name", TEXT),
                "seller_item_id": ("ram:SpecifiedTradeProduct/ram:SellerAssignedID", TEXT),
                "quantity": ("ram:SpecifiedLineTradeDelivery/ram:BilledQuantity", AMOUNT),
                "unit_code": ("ram:SpecifiedLineTradeDelivery/ram:BilledQuantity/@unitCode", TEXT),
                "net_unit_price": ("ram:SpecifiedLineTradeAgreement/ram:NetPriceProductTradePrice/ram:ChargeAmount", AMOUNT),
                "line_total": ("ram:SpecifiedLineTradeSettlement/ram:SpecifiedTradeSettlementLineMonetarySummation"
                               "/ram:LineTotalAmount", AMOUNT),
                "tax_rate": ("ram:SpecifiedLineTradeSettlement/ram:ApplicableTradeTax/ram:RateApplicablePercent", AMOUNT),
            }),
        },
    )


def _zugferd1_syntax() -> Syntax:
    """ZUGFeRD 1.0 (CrossIndustryDocument, D13B-based): the CII names of 2013, grouped differently."""
    tx = "/rsm:CrossIndustryDocument/rsm:SpecifiedSupplyChainTradeTransaction"
    agreement = f"{tx}/ram:ApplicableSupplyChainTradeAgreement"
    settlement = f"{tx}/ram:ApplicableSupplyChainTradeSettlement"
    sums = f"{settlement}/ram:SpecifiedTradeSettlementMonetarySummation"
    means = f"{settlement}/ram:SpecifiedTradeSettlementPaymentMeans"
    doc = "/rsm:CrossIndustryDocument/rsm:HeaderExchangedDocument"
    return Syntax(
        name="ZUGFeRD 1.0 (CrossIndustryDocument)",
        namespaces=ZF1_NS,
        fields={
            "profile": ("/rsm:CrossIndustryDocument/rsm:SpecifiedExchangedDocumentContext"
                        "/ram:GuidelineSpecifiedDocumentContextParameter/ram:ID", TEXT),
            "invoice_number": (f"{doc}/ram:ID", TEXT),
            "document_type_code": (f"{doc}/ram:TypeCode", TEXT),
            "issue_date": (f"{doc}/ram:IssueDateTime/udt:DateTimeString", DATE),
            "due_date": (f"{settlement}/ram:SpecifiedTradePaymentTerms/ram:DueDateDateTime/udt:DateTimeString", DATE),
            "currency": (f"{settlement}/ram:InvoiceCurrencyCode", TEXT),
            "buyer_reference": (f"{agreement}/ram:BuyerReference", TEXT),
            "order_reference": (f"{agreement}/ram:BuyerOrderReferencedDocument/ram:ID", TEXT),
            **_cii_party(agreement, "SellerTradeParty"),
            **_cii_party(agreement, "BuyerTradeParty"),
            "totals.line_total": (f"{sums}/ram:LineTotalAmount", AMOUNT),
            "totals.charge_total": (f"{sums}/ram:ChargeTotalAmount", AMOUNT),
            "totals.allowance_total": (f"{sums}/ram:AllowanceTotalAmount", AMOUNT),
            "totals.tax_basis_total": (f"{sums}/ram:TaxBasisTotalAmount", AMOUNT),
            "totals.tax_total": (f"{sums}/ram:TaxTotalAmount", AMOUNT),
            "totals.grand_total": (f"{sums}/ram:GrandTotalAmount", AMOUNT),
            "totals.prepaid": (f"{sums}/ram:TotalPrepaidAmount", AMOUNT),
            "totals.due_payable": (f"{sums}/ram:DuePayableAmount", AMOUNT),
            "payment.iban": (f"{means}/ram:PayeePartyCreditorFinancialAccount/ram:IBANID", IBAN),
            "payment.bic": (f"{means}/ram:PayeeSpecifiedCreditorFinancialInstitution/ram:BICID", TEXT),
            "payment.terms": (f"{settlement}/ram:SpecifiedTradePaymentTerms/ram:Description", TEXT),
        },
        rows={
            # ZUGFeRD 1.0 names the rate ApplicablePercent (RateApplicablePercent came with D16B).
            "tax_breakdown": Rows(f"{settlement}/ram:ApplicableTradeTax", {
                "category": ("ram:CategoryCode", TEXT),
                "rate": ("ram:ApplicablePercent", AMOUNT),
                "basis": ("ram:BasisAmount", AMOUNT),
                "tax": ("ram:CalculatedAmount", AMOUNT),
            }),
            "line_items": Rows(f"{tx}/ram:IncludedSupplyChainTradeLineItem", {
                "line_id": ("ram:AssociatedDocumentLineDocument/ram:LineID", TEXT),
                "name": ("ram:SpecifiedTradeProduct/ram:Name", TEXT),
                "seller_item_id": ("ram:SpecifiedTradeProduct/ram:SellerAssignedID", TEXT),
                "quantity": ("ram:SpecifiedSupplyChainTradeDelivery/ram:BilledQuantity", AMOUNT),
                "unit_code": ("ram:SpecifiedSupplyChainTradeDelivery/ram:BilledQuantity/@unitCode", TEXT),
                "net_unit_price": ("ram:SpecifiedSupplyChainTradeAgreement/ram:NetPriceProductTradePrice"
                                   "/ram:ChargeAmount", AMOUNT),
                "line_total": ("ram:SpecifiedSupplyChainTradeSettlement/ram:SpecifiedTradeSettlementMonetarySummation"
                               "/ram:LineTotalAmount", AMOUNT),
                "tax_rate": ("ram:SpecifiedSupplyChainTradeSettlement/ram:ApplicableTradeTax/ram:ApplicablePercent", AMOUNT),
            }),
        },
    )


def _ubl_party(role: str) -> dict[str, tuple[str, str]]:
    """Party fields of UBL: the legal name (BT-27) first, else the trading name (BT-28)."""
    p = f"/doc:*/cac:{role}/cac:Party"
    a = f"{p}/cac:PostalAddress"
    key = "seller" if role == "AccountingSupplierParty" else "buyer"
    return {
        f"{key}.name": ((f"{p}/cac:PartyLegalEntity/cbc:RegistrationName", f"{p}/cac:PartyName/cbc:Name"), TEXT),
        # PartyTaxScheme with TaxScheme VAT holds the VAT identifier; any other scheme is the
        # seller's tax registration (BT-32), as EN 16931's UBL binding says.
        f"{key}.vat_id": (f"{p}/cac:PartyTaxScheme[cac:TaxScheme/cbc:ID='VAT']/cbc:CompanyID", TEXT),
        f"{key}.tax_number": (f"{p}/cac:PartyTaxScheme[not(cac:TaxScheme/cbc:ID='VAT')]/cbc:CompanyID", TEXT),
        f"{key}.address.line1": (f"{a}/cbc:StreetName", TEXT),
        f"{key}.address.line2": (f"{a}/cbc:AdditionalStreetName", TEXT),
        f"{key}.address.postcode": (f"{a}/cbc:PostalZone", TEXT),
        f"{key}.address.city": (f"{a}/cbc:CityName", TEXT),
        f"{key}.address.country": (f"{a}/cac:Country/cbc:IdentificationCode", TEXT),
    }


def _ubl_syntax(kind: str, namespaces: dict[str, str]) -> Syntax:
    """OASIS UBL 2.1 Invoice or CreditNote (XRechnung-UBL, Peppol BIS 3): the two differ in the
    type code's and the line's element names only."""
    line = "InvoiceLine" if kind == "Invoice" else "CreditNoteLine"
    quantity = "InvoicedQuantity" if kind == "Invoice" else "CreditedQuantity"
    sums = "/doc:*/cac:LegalMonetaryTotal"
    means = "/doc:*/cac:PaymentMeans"
    return Syntax(
        name=f"OASIS UBL 2.1 ({kind})",
        namespaces=namespaces,
        fields={
            "profile": ("/doc:*/cbc:CustomizationID", TEXT),
            "invoice_number": ("/doc:*/cbc:ID", TEXT),
            "document_type_code": (f"/doc:*/cbc:{kind}TypeCode", TEXT),
            "issue_date": ("/doc:*/cbc:IssueDate", DATE),
            # A credit note has no header DueDate; its due date sits in PaymentMeans.
            "due_date": (("/doc:*/cbc:DueDate", f"{means}/cbc:PaymentDueDate"), DATE),
            "currency": ("/doc:*/cbc:DocumentCurrencyCode", TEXT),
            "buyer_reference": ("/doc:*/cbc:BuyerReference", TEXT),
            "order_reference": ("/doc:*/cac:OrderReference/cbc:ID", TEXT),
            **_ubl_party("AccountingSupplierParty"),
            **_ubl_party("AccountingCustomerParty"),
            "totals.line_total": (f"{sums}/cbc:LineExtensionAmount", AMOUNT),
            "totals.charge_total": (f"{sums}/cbc:ChargeTotalAmount", AMOUNT),
            "totals.allowance_total": (f"{sums}/cbc:AllowanceTotalAmount", AMOUNT),
            "totals.tax_basis_total": (f"{sums}/cbc:TaxExclusiveAmount", AMOUNT),
            "totals.tax_total": ("/doc:*/cac:TaxTotal/cbc:TaxAmount", AMOUNT),
            "totals.grand_total": (f"{sums}/cbc:TaxInclusiveAmount", AMOUNT),
            "totals.prepaid": (f"{sums}/cbc:PrepaidAmount", AMOUNT),
            "totals.due_payable": (f"{sums}/cbc:PayableAmount", AMOUNT),
            "payment.iban": (f"{means}/cac:PayeeFinancialAccount/cbc:ID", IBAN),
            "payment.bic": (f"{means}/cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID", TEXT),
            "payment.terms": ("/doc:*/cac:PaymentTerms/cbc:Note", TEXT),
        },
        rows={
            # Only the TaxTotal that has subtotals is the breakdown (BG-23); a second TaxTotal
            # carries the VAT in accounting currency (BT-111) without subtotals.
            "tax_breakdown": Rows("/doc:*/cac:TaxTotal/cac:TaxSubtotal", {
                "category": ("cac:TaxCategory/cbc:ID", TEXT),
                "rate": ("cac:TaxCategory/cbc:Percent", AMOUNT),
                "basis": ("cbc:TaxableAmount", AMOUNT),
                "tax": ("cbc:TaxAmount", AMOUNT),
            }),
            "line_items": Rows(f"/doc:*/cac:{line}", {
                "line_id": ("cbc:ID", TEXT),
                "name": ("cac:Item/cbc:Name", TEXT),
                "seller_item_id": ("cac:Item/cac:SellersItemIdentification/cbc:ID", TEXT),
                "quantity": (f"cbc:{quantity}", AMOUNT),
                "unit_code": (f"cbc:{quantity}/@unitCode", TEXT),
                "net_unit_price": ("cac:Price/cbc:PriceAmount", AMOUNT),
                "line_total": ("cbc:LineExtensionAmount", AMOUNT),
                "tax_rate": ("cac:Item/cac:ClassifiedTaxCategory/cbc:Percent", AMOUNT),
            }),
        },
    )


# Root element (Clark notation) → its syntax. The root decides; file names are never trusted.
SYNTAXES: dict[str, Syntax] = {
    f"{{{CII_NS['rsm']}}}CrossIndustryInvoice": _cii_syntax(),
    f"{{{ZF1_NS['rsm']}}}CrossIndustryDocument": _zugferd1_syntax(),
    f"{{{UBL_INVOICE_NS['doc']}}}Invoice": _ubl_syntax("Invoice", UBL_INVOICE_NS),
    f"{{{UBL_CREDIT_NOTE_NS['doc']}}}CreditNote": _ubl_syntax("CreditNote", UBL_CREDIT_NOTE_NS),
}


# --------------------------------------------------------------------------- safe parsing

def safe_xml_parser() -> etree.XMLParser:
    """A parser that cannot be made to expand entities, read files or use the network."""
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
    )


# A DOCTYPE plus an entity declaration anywhere: checked on the raw bytes before parsing (and on
# the parsed tree afterwards), so an entity bomb is refused before libxml2 expands anything. Outside
# a DTD, "<!ENTITY" can only stand in a comment or CDATA, which an e-invoice has no reason to hold.
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)


def _declares_entities(text: bytes) -> bool:
    return bool(_DOCTYPE.search(text) and _ENTITY.search(text))


_ENCODING_DECL = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([^\"']*)[\"']")


def _head_text(data: bytes) -> bytes:
    """The document's bytes as ASCII-compatible text for the cheap checks (UTF-16 decoded)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:4] in (b"<\x00?\x00", b"\x00<\x00?"):
        try:
            encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else (
                "utf-16-le" if data[:1] == b"<" else "utf-16-be")
            return data.decode(encoding, errors="replace").encode("utf-8", errors="replace")
        except LookupError:  # pragma: no cover - utf-16 always exists
            return data
    return data


def _parse(data: bytes) -> etree._Element:
    """The root element of `data`, or EInvoiceError saying why the XML cannot be read."""
    if not data or not data.strip():
        raise EInvoiceError("The e-invoice XML is empty.")
    text = _head_text(data)
    if _declares_entities(text):
        raise EInvoiceError("The e-invoice XML declares entities: not read (entity declarations can expand "
                            "without limit or read local files).")
    try:
        root = etree.fromstring(data, parser=safe_xml_parser())
    except etree.XMLSyntaxError as exc:
        raise EInvoiceError(_syntax_message(text, exc)) from None
    except (ValueError, LookupError) as exc:  # lxml refuses e.g. unicode strings with a declaration
        raise EInvoiceError(f"The e-invoice XML cannot be read: {exc}.") from None
    if root is None:
        raise EInvoiceError("The e-invoice XML has no root element.")
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise EInvoiceError("The e-invoice XML declares entities: not read.")
    return root


def _syntax_message(text: bytes, exc: etree.XMLSyntaxError) -> str:
    """A sentence for a parse failure; a bad encoding declaration is named as the cause."""
    detail = str(exc).strip().rstrip(".")
    problem = _encoding_problem(text, detail)
    if problem:
        return f"The e-invoice XML {problem}, so it cannot be read (the parser said: {detail})."
    return f"The e-invoice XML is not well-formed: {detail}."


# XML 1.0's EncName production: what an encoding declaration may hold at all.
_ENC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")


def _encoding_problem(text: bytes, detail: str) -> str | None:
    """What is wrong with the declared encoding, when the parse failure comes from it."""
    declared = _ENCODING_DECL.match(text)
    if declared is None:
        return None
    name = declared.group(1).decode("ascii", errors="replace")
    if not _ENC_NAME.fullmatch(name):
        return f"declares the encoding '{name}', which is not a valid encoding name"
    try:
        codecs.lookup(name)
    except LookupError:
        return f"declares the encoding '{name}', which is unknown"
    if "encoding" in detail.lower():
        return f"is not in the encoding it declares ('{name}')"
    return None


def is_einvoice(data: bytes) -> bool:
    """Cheap check that bytes are XML whose root is CII CrossIndustryInvoice, ZUGFeRD 1.0
    CrossIndustryDocument, or UBL 2 Invoice / CreditNote.

    Only the root's start tag is read, with an incremental parser that stops there, so a large
    document is not parsed whole. The answer is about the root alone: a document that declares
    entities but has an e-invoice root answers True, so that `read_einvoice` refuses it with the
    reason (a DTD's declarations are read, never expanded, before the root's start tag). Broken
    XML answers False.
    """
    if not data:
        return False
    try:
        for _event, element in etree.iterparse(
            _BytesReader(data), events=("start",), resolve_entities=False, no_network=True,
            load_dtd=False, huge_tree=False, remove_comments=True,
        ):
            return element.tag in SYNTAXES
    except (etree.LxmlError, ValueError, LookupError):
        return False
    return False


class _BytesReader:
    """A file-like view of bytes for iterparse (which wants `.read`)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        chunk = bytes(self._data[self._pos:end])
        self._pos += len(chunk)
        return chunk


# --------------------------------------------------------------------------- values

def _clean(text: str | None) -> str | None:
    """Whitespace collapsed (XML pretty-printing splits names across lines); empty → None."""
    if text is None:
        return None
    value = " ".join(text.split())
    return value or None


def _amount(text: str | None) -> float | None:
    """A decimal as float; anything that is not a plain number (e.g. '19.00e') is None, not a guess."""
    value = _clean(text)
    if value is None or not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", value):
        return None
    return float(value)


def _date(node: Any, text: str | None) -> str | None:
    """ISO YYYY-MM-DD from CII format 102 (YYYYMMDD) or UBL's ISO date; other formats → None."""
    value = _clean(text)
    if value is None:
        return None
    fmt = node.get("format") if isinstance(node, etree._Element) else None
    if fmt in (None, "102") and re.fullmatch(r"\d{8}", value):
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    if fmt is None and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    return None


def _value(node: Any, kind: str) -> Any:
    """The typed value of an element or attribute found by XPath."""
    text = node.text if isinstance(node, etree._Element) else str(node)
    if kind == AMOUNT:
        return _amount(text)
    if kind == DATE:
        return _date(node, text)
    value = _clean(text)
    if kind == IBAN and value:
        return value.replace(" ", "")  # IBANs are often printed in groups of four
    return value


def _first(context: Any, path: str | tuple[str, ...], kind: str, namespaces: dict[str, str]) -> tuple[Any, Any]:
    """The first non-empty value at `path` (or at the first of its alternatives that has one) and
    the element or attribute it came from, or (None, None)."""
    for alternative in (path,) if isinstance(path, str) else path:
        for node in context.xpath(alternative, namespaces=namespaces):
            value = _value(node, kind)
            if value is not None:
                return value, node
    return None, None


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value


def _tax_total(root: Any, syntax: Syntax, path: str, currency: str | None) -> tuple[float | None, Any]:
    """BT-110: the tax total in the invoice currency, when BT-111 (accounting currency) is also
    given; with the element it came from."""
    nodes = [n for n in root.xpath(path, namespaces=syntax.namespaces) if _amount(n.text) is not None]
    for node in nodes:
        if currency and node.get("currencyID") == currency:
            return _amount(node.text), node
    return (_amount(nodes[0].text), nodes[0]) if nodes else (None, None)


def element_path(node: Any, prefixes: dict[str, str]) -> str:
    """An absolute XPath of an element (or attribute) found by XPath, written with the syntax's
    prefixes (`prefixes`: namespace URI -> prefix), e.g.
    /rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID; a position [n] (1-based) only where
    the parent has several children of that name. It resolves with the syntax's namespaces
    (`Syntax.namespaces`, e.g. `CII_NS`), whatever prefixes the document itself uses."""
    attribute = None
    if not isinstance(node, etree._Element):  # an attribute value (lxml's smart string)
        attribute = getattr(node, "attrname", None)
        node = node.getparent()
    steps: list[str] = []
    while node is not None:
        qname = etree.QName(node)
        prefix = prefixes.get(qname.namespace or "")
        if qname.namespace is None:
            step = qname.localname
        elif prefix:
            step = f"{prefix}:{qname.localname}"
        else:
            step = f"*[local-name()='{qname.localname}' and namespace-uri()='{qname.namespace}']"
        parent = node.getparent()
        if parent is not None:
            before = sum(1 for _ in node.itersiblings(node.tag, preceding=True))
            if before or next(node.itersiblings(node.tag), None) is not None:
                step += f"[{before + 1}]"
        steps.append(step)
        node = parent
    path = "/" + "/".join(reversed(steps))
    if attribute:
        path += f"/@{etree.QName(attribute).localname}"
    return path


# --------------------------------------------------------------------------- reading

def read_einvoice(data: bytes) -> dict[str, Any]:
    """The invoice as a dict shaped exactly like InvoiceFields(...).model_dump() (every key
    present, None when absent), validated through InvoiceFields.

    Raises EInvoiceError for malformed XML, an unknown root, or hostile XML.
    """
    return read_einvoice_with_sources(data)[0]


def read_einvoice_with_sources(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """`read_einvoice`'s fields and, mirroring them, where each value came from: a `Provenance`
    with `xml_path` (see `element_path`), `text` the element's own text, match 'declared' and
    confidence 1.0 (the value is the element's content, nothing is guessed); None where the
    field is absent. `syntax` points at the root element, `document_type` at the type code."""
    from blocks.provenance import Provenance

    root = _parse(data)
    syntax = SYNTAXES.get(root.tag)
    if syntax is None:
        name = etree.QName(root).localname if isinstance(root.tag, str) else "?"
        raise EInvoiceError(
            f"The XML root element '{name}' is not an e-invoice (expected CII CrossIndustryInvoice, "
            "ZUGFeRD 1.0 CrossIndustryDocument, or UBL Invoice / CreditNote)."
        )
    prefixes = {uri: prefix for prefix, uri in syntax.namespaces.items()}

    def declared(node: Any) -> Provenance | None:
        if node is None:
            return None
        text = node.text if isinstance(node, etree._Element) else str(node)
        return Provenance(
            text=(text or "").strip(), match="declared", confidence=1.0, xml_path=element_path(node, prefixes)
        )

    fields = InvoiceFields().model_dump()
    sources: dict[str, Any] = {key: ({k: None for k in value} if isinstance(value, dict) else None)
                               for key, value in fields.items()}
    for key in ("seller", "buyer"):
        sources[key]["address"] = {k: None for k in fields[key]["address"]}
    fields["syntax"] = syntax.name
    sources["syntax"] = Provenance(text=etree.QName(root).localname, match="declared", confidence=1.0,
                                   xml_path=element_path(root, prefixes))
    for dotted, (path, kind) in syntax.fields.items():
        value, node = _first(root, path, kind, syntax.namespaces)
        _set(fields, dotted, value)
        _set(sources, dotted, declared(node))
    value, node = _tax_total(root, syntax, syntax.fields["totals.tax_total"][0], fields["currency"])
    fields["totals"]["tax_total"] = value
    sources["totals"]["tax_total"] = declared(node)
    for key, rows in syntax.rows.items():
        fields[key], sources[key] = [], []
        for row in root.xpath(rows.path, namespaces=syntax.namespaces):
            found = {column: _first(row, path, kind, syntax.namespaces) for column, (path, kind) in rows.columns.items()}
            fields[key].append({column: value for column, (value, _) in found.items()})
            sources[key].append({column: declared(node) for column, (_, node) in found.items()})
    fields["document_type"] = document_type_name(fields["document_type_code"])
    sources["document_type"] = sources.get("document_type_code") if fields["document_type"] else None
    try:
        checked = InvoiceFields(**fields).model_dump()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise EInvoiceError(f"The e-invoice XML holds values the invoice schema refuses: {exc}") from None
    return checked, _mirror(checked, sources)


def _mirror(fields: Any, sources: Any) -> Any:
    """`sources` cut to `fields`' exact shape (a key or row the schema dropped has no source)."""
    if isinstance(fields, dict):
        return {key: _mirror(value, sources.get(key) if isinstance(sources, dict) else None) for key, value in fields.items()}
    if isinstance(fields, list):
        rows = sources if isinstance(sources, list) else []
        return [_mirror(value, rows[i] if i < len(rows) else None) for i, value in enumerate(fields)]
    return sources if fields is not None and not isinstance(sources, (dict, list)) else None


# --------------------------------------------------------------------------- PDF attachments

def pdf_attachments(pdf: Any) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Given an OPEN pypdfium2.PdfDocument (caller holds the PDFium lock), return the embedded
    files that may be e-invoice XML (name ends with .xml, any case), as (name, bytes), plus
    warnings for the attachments skipped.

    The size is asked of PDFium before any buffer is made, so an oversized attachment never
    gets copied into Python. A broken attachment is warned about and skipped, never raised.
    """
    import pypdfium2.raw as pdfium_c

    found: list[tuple[str, bytes]] = []
    warnings: list[str] = []
    try:
        count = pdf.count_attachments()
    except Exception as exc:  # noqa: BLE001 - a broken name tree must not fail the document
        return [], [f"the PDF's attachments cannot be listed: {exc}"]
    for index in range(count):
        try:
            attachment = pdf.get_attachment(index)
            name = attachment.get_name() or f"attachment {index + 1}"
        except Exception as exc:  # noqa: BLE001
            warnings.append(f"attachment {index + 1} cannot be read: {exc}: skipped")
            continue
        if not name.lower().endswith(".xml"):
            continue
        try:
            size = ctypes.c_ulong()
            pdfium_c.FPDFAttachment_GetFile(attachment, None, 0, size)
            if size.value > MAX_XML_BYTES:
                warnings.append(
                    f"attachment {name} is {_megabytes(size.value)}, over the "
                    f"{_megabytes(MAX_XML_BYTES)} limit: ignored"
                )
                continue
            if size.value == 0:
                warnings.append(f"attachment {name} is empty: ignored")
                continue
            found.append((name, bytes(attachment.get_data())))
        except Exception as exc:  # noqa: BLE001
            warnings.append(f"attachment {name} cannot be read: {exc}: skipped")
    return found, warnings


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB"
