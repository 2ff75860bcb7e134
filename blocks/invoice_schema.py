"""The default invoice schema: EN 16931's core terms, one shape for every extraction path.

E-invoice XML fills it exactly (`blocks.einvoice`), the layout heuristics fill what they can
(`blocks.layout`), a model will fill it from its JSON Schema. The keys are those of the ZUGFeRD
corpus' `expected.json` files (a flat reading of CII), plus `payment`. Every key is always
present; `None` means "not on the document" (or not found), an empty list "no rows".

Business-term numbers (BT-…) refer to EN 16931-1; they are in the README's field table.
This module imports only pydantic: it is loaded by the parsing workers, which stay small.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The UNTDID 1001 codes EN 16931 invoices commonly carry, by the name docbatch gives them. Other
# codes (204 payment valuation, 575 insurer's invoice, 877 ...) keep their code and get no name:
# the corpus' expected files read them so, and a made-up name would be worse than none.
DOCUMENT_TYPES: dict[str, str] = {
    "380": "commercial_invoice",
    "381": "credit_note",
    "383": "debit_note",
    "384": "corrected_invoice",
    "386": "prepayment_invoice",
    "389": "self_billed_invoice",
    "261": "self_billed_credit_note",
    "326": "partial_invoice",
}


# Every UNTDID 1001 code EN 16931 accepts as an invoice type code (BT-3, business rule BR-CL-01).
INVOICE_TYPE_CODES: frozenset[str] = frozenset(
    "71 80 81 82 83 84 102 130 202 203 204 211 218 219 261 262 295 296 308 325 326 331 380 381 382 383 384 385 386 "
    "387 388 389 390 393 394 395 396 420 456 457 458 527 532 553 575 623 633 751 780 817 870 875 876 877 935".split()
)


def document_type_name(code: str | None) -> str | None:
    """`380` → `commercial_invoice`; codes without a common name, and None, → None."""
    if code is None:
        return None
    return DOCUMENT_TYPES.get(code.strip())


class _Part(BaseModel):
    # Unknown keys are refused: a typo in an extraction path must fail its tests, not vanish.
    model_config = ConfigDict(extra="forbid")


class Address(_Part):
    line1: str | None = Field(default=None, description="Street and number (BT-35 / BT-50).")
    line2: str | None = Field(default=None, description="Additional address line (BT-36 / BT-51).")
    postcode: str | None = Field(default=None, description="Post code (BT-38 / BT-53).")
    city: str | None = Field(default=None, description="City (BT-37 / BT-52).")
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2 country code (BT-40 / BT-55).")


class Party(_Part):
    name: str | None = Field(default=None, description="Legal or trading name (BT-27 / BT-44).")
    vat_id: str | None = Field(default=None, description="VAT identifier with country prefix, e.g. DE123456789 (BT-31 / BT-48).")
    tax_number: str | None = Field(default=None, description="Local tax registration number (BT-32).")
    address: Address = Field(default_factory=Address, description="Postal address (BG-5 / BG-8).")


class Totals(_Part):
    line_total: float | None = Field(default=None, description="Sum of line net amounts (BT-106).")
    charge_total: float | None = Field(default=None, description="Sum of document-level charges (BT-108).")
    allowance_total: float | None = Field(default=None, description="Sum of document-level allowances (BT-107).")
    tax_basis_total: float | None = Field(default=None, description="Total without VAT (BT-109).")
    tax_total: float | None = Field(default=None, description="Total VAT (BT-110).")
    grand_total: float | None = Field(default=None, description="Total with VAT (BT-112).")
    prepaid: float | None = Field(default=None, description="Amount already paid (BT-113).")
    due_payable: float | None = Field(default=None, description="Amount due for payment (BT-115).")


class TaxBreakdown(_Part):
    category: str | None = Field(default=None, description="VAT category code, e.g. S, Z, E, AE (BT-118).")
    rate: float | None = Field(default=None, description="VAT rate in percent (BT-119).")
    basis: float | None = Field(default=None, description="Taxable amount of this category and rate (BT-116).")
    tax: float | None = Field(default=None, description="VAT amount of this category and rate (BT-117).")


class LineItem(_Part):
    line_id: str | None = Field(default=None, description="Line identifier (BT-126).")
    name: str | None = Field(default=None, description="Item name (BT-153).")
    seller_item_id: str | None = Field(default=None, description="Seller's item identifier (BT-155).")
    quantity: float | None = Field(default=None, description="Invoiced quantity (BT-129).")
    unit_code: str | None = Field(default=None, description="UN/ECE Rec 20 unit code, e.g. C62, HUR (BT-130).")
    net_unit_price: float | None = Field(default=None, description="Net price of one unit (BT-146).")
    line_total: float | None = Field(default=None, description="Line net amount (BT-131).")
    tax_rate: float | None = Field(default=None, description="VAT rate of the line in percent (BT-152).")


class Payment(_Part):
    iban: str | None = Field(default=None, description="Payee account IBAN (BT-84).")
    bic: str | None = Field(default=None, description="Payee bank BIC (BT-86).")
    terms: str | None = Field(default=None, description="Payment terms as printed (BT-20).")


class Invoice(_Part):
    """One invoice or credit note, EN 16931's core. Amounts are numbers, dates ISO strings."""

    invoice_number: str | None = Field(default=None, description="Invoice number (BT-1).")
    document_type_code: str | None = Field(default=None, description="UNTDID 1001 code: 380 invoice, 381 credit note, 384 corrected… (BT-3).")
    document_type: str | None = Field(default=None, description="The code's name: commercial_invoice, credit_note, corrected_invoice, self_billed_invoice…")
    issue_date: str | None = Field(default=None, description="Issue date, YYYY-MM-DD (BT-2).")
    due_date: str | None = Field(default=None, description="Payment due date, YYYY-MM-DD (BT-9).")
    currency: str | None = Field(default=None, description="ISO 4217 code of the invoice currency (BT-5).")
    buyer_reference: str | None = Field(default=None, description="Buyer reference, e.g. a Leitweg-ID (BT-10).")
    order_reference: str | None = Field(default=None, description="Purchase order reference (BT-13).")
    seller: Party = Field(default_factory=Party, description="The party that issued the invoice (BG-4).")
    buyer: Party = Field(default_factory=Party, description="The party invoiced (BG-7).")
    totals: Totals = Field(default_factory=Totals, description="Document totals (BG-22).")
    tax_breakdown: list[TaxBreakdown] = Field(default_factory=list, description="One entry per VAT category and rate (BG-23).")
    line_items: list[LineItem] = Field(default_factory=list, description="Invoice lines, in document order (BG-25).")
    payment: Payment = Field(default_factory=Payment, description="Where and how to pay (BG-16, BT-20).")


class InvoiceFields(Invoice):
    """An `Invoice` as a result's fields: with the metadata the XML path adds."""

    syntax: str | None = Field(default=None, description="E-invoice syntax read (XML path only), e.g. 'UN/CEFACT CII (CrossIndustryInvoice)'.")
    profile: str | None = Field(default=None, description="Guideline/profile URN of the e-invoice (XML path only).")


def empty_invoice() -> dict[str, Any]:
    """Every key of the schema, all empty: the shape a path fills in."""
    return Invoice().model_dump()


def invoice_columns() -> list[str]:
    """The schema's scalar leaves as flattened export columns (`seller.name`, `totals.grand_total`)."""
    columns: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif not isinstance(value, list):
            columns.append(prefix)

    walk("", empty_invoice())
    return columns


# Where the headline values sit in the invoice schema, then in invoice2data templates' usual
# field names (issuer, date, amount), so a table or summary shows either kind of record.
_HEADLINE: dict[str, tuple[str, ...]] = {
    "invoice_number": ("invoice_number",),
    "issue_date": ("issue_date", "date"),
    "seller": ("seller.name", "issuer", "partner_name"),
    "grand_total": ("totals.grand_total", "amount", "total"),
    "currency": ("currency",),
}


def headline(fields: dict[str, Any]) -> dict[str, Any]:
    """The few values a person scans a batch for, whichever path filled the fields."""
    found: dict[str, Any] = {}
    for name, paths in _HEADLINE.items():
        value = None
        for path in paths:
            value = fields
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value not in (None, ""):
                break
        found[name] = value
    items = fields.get("line_items", fields.get("lines"))
    found["line_items"] = len(items) if isinstance(items, list) else None
    return found
