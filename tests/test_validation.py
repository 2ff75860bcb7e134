"""The accountant's checks and the review decision (blocks.validation, tasks.review), on real numbers."""

from __future__ import annotations

from typing import Any

import pytest

from blocks.invoice_schema import empty_invoice
from blocks.models import DocumentRef, DocumentResult
from blocks.validation import (
    currency_check,
    iban_check,
    invoice_checks,
    receipt_checks,
    required_fields,
    review,
    schema_kind,
    tax_breakdown_checks,
    validate,
    vat_id_check,
)


def invoice(**changes: Any) -> dict[str, Any]:
    """A consistent invoice: 2 lines at 19 % (100.00 + 20.00), 22.80 VAT, 142.80 to pay."""
    fields = empty_invoice()
    fields.update(
        invoice_number="INV-1", issue_date="2024-03-05", due_date="2024-04-04", currency="EUR",
        line_items=[
            {"name": "Widget A", "quantity": 2, "net_unit_price": 50.0, "line_total": 100.0, "tax_rate": 19.0},
            {"name": "Widget B", "quantity": 1, "net_unit_price": 20.0, "line_total": 20.0, "tax_rate": 19.0},
        ],
        tax_breakdown=[{"category": "S", "rate": 19.0, "basis": 120.0, "tax": 22.8}],
    )
    fields["seller"].update(name="ACME Supplies GmbH", vat_id="DE136695976")
    fields["buyer"].update(name="Client SARL", vat_id="FR40303265045")
    fields["totals"].update(line_total=120.0, tax_basis_total=120.0, tax_total=22.8, grand_total=142.8, due_payable=142.8)
    fields["payment"].update(iban="DE89 3704 0044 0532 0130 00")
    for key, value in changes.items():
        target, _, leaf = key.rpartition("__")
        node = fields
        for part in target.split("__") if target else []:
            node = node[part]
        node[leaf] = value
    return fields


def by_name(checks: list) -> dict[str, Any]:
    return {c.name: c for c in checks}


def test_a_consistent_invoice_passes_every_check() -> None:
    checks = invoice_checks(invoice())
    assert [c.name for c in checks] == [
        "line_items.sum", "totals.net_total", "totals.net_plus_tax", "tax_breakdown[0].basis_x_rate", "tax_breakdown.sum",
        "dates.due_not_before_issue", "currency.iso4217", "seller.vat_id.checksum", "buyer.vat_id.checksum",
        "payment.iban.checksum",
    ]
    assert all(c.passed for c in checks), [c.message for c in checks if not c.passed]
    assert review(invoice(), checks, required_fields("invoice"), None, 0.5) == ("ok", [])


def test_totals_that_do_not_add_up_fail_with_the_numbers() -> None:
    checks = by_name(invoice_checks(invoice(totals__grand_total=152.8)))
    failed = checks["totals.net_plus_tax"]
    assert not failed.passed
    assert failed.message == "Net 120.00 plus VAT 22.80 is 142.80, but the grand total is 152.80 (off by 10.00)."
    assert failed.fields == ["totals.tax_basis_total", "totals.tax_total", "totals.grand_total"]
    assert checks["line_items.sum"].passed  # the other sums still hold

    lines = by_name(invoice_checks(invoice(totals__line_total=130.0)))["line_items.sum"]
    assert not lines.passed and "add up to 120.00" in lines.message and "130.00" in lines.message and "off by 10.00" in lines.message


def test_lines_without_bt106_are_compared_with_the_net_total_and_allowances_count() -> None:
    fields = invoice(totals__line_total=None, totals__tax_basis_total=125.0, totals__grand_total=147.8)
    check = by_name(invoice_checks(fields))["line_items.sum"]
    assert not check.passed and check.fields[-1] == "totals.tax_basis_total" and "(BT-109) is 125.00" in check.message
    discounted = invoice(totals__allowance_total=10.0, totals__tax_basis_total=110.0, totals__tax_total=20.9, totals__grand_total=130.9,
                         tax_breakdown=[{"category": "S", "rate": 19.0, "basis": 110.0, "tax": 20.9}])
    checks = by_name(invoice_checks(discounted))
    assert checks["totals.net_total"].passed, checks["totals.net_total"].message
    assert checks["totals.net_total"].message == "The line total 120.00 less allowances 10.00 is 110.00, matching the total without VAT."
    assert all(c.passed for c in checks.values()), [c.message for c in checks.values() if not c.passed]


@pytest.mark.parametrize(
    ("tax", "passed"),
    [(22.80, True), (22.804, True), (23.80, False), (21.80, False)],  # exact, 0.004 of rounding, 1.00 off either way
)
def test_tax_breakdown_basis_times_rate_within_rounding(tax: float, passed: bool) -> None:
    fields = {"tax_breakdown": [{"category": "S", "rate": 19.0, "basis": 120.0, "tax": tax}], "line_items": []}
    (check,) = tax_breakdown_checks(fields)
    assert check.passed is passed, check.message
    if not passed:
        assert check.message == f"VAT at 19 % of 120.00 is 22.80; the breakdown says {tax:.2f} (off by 1.00, more than 0.01)."


def test_tax_tolerance_grows_with_the_lines_at_that_rate() -> None:
    # 30 lines taxed one by one may each round by half a cent: 0.12 off is rounding, 0.20 is not.
    lines = [{"line_total": 4.0, "tax_rate": 19.0} for _ in range(30)]
    ok = {"line_items": lines, "tax_breakdown": [{"rate": 19.0, "basis": 120.0, "tax": 22.92}]}
    off = {"line_items": lines, "tax_breakdown": [{"rate": 19.0, "basis": 120.0, "tax": 23.0}]}
    assert tax_breakdown_checks(ok)[0].passed and "within 0.15" in tax_breakdown_checks(ok)[0].message
    assert not tax_breakdown_checks(off)[0].passed


def test_a_zero_rate_breakdown_and_a_credit_note_pass() -> None:
    exempt = {"tax_breakdown": [{"category": "E", "rate": 0.0, "basis": 50.0, "tax": 0.0}]}
    assert tax_breakdown_checks(exempt)[0].passed
    credit = invoice(
        line_items=[{"line_total": -100.0, "tax_rate": 19.0}], tax_breakdown=[{"rate": 19.0, "basis": -100.0, "tax": -19.0}],
        totals__line_total=-100.0, totals__tax_basis_total=-100.0, totals__tax_total=-19.0, totals__grand_total=-119.0,
    )
    assert all(c.passed for c in invoice_checks(credit))


def test_due_date_before_issue_date_fails() -> None:
    check = by_name(invoice_checks(invoice(due_date="2024-03-01")))["dates.due_not_before_issue"]
    assert not check.passed
    assert check.message == "The due date 2024-03-01 is 4 day(s) before the issue date 2024-03-05."
    assert by_name(invoice_checks(invoice(due_date="2024-03-05")))["dates.due_not_before_issue"].passed  # due on receipt


def test_currency_must_be_iso_4217() -> None:
    assert currency_check("EUR", "currency").passed
    assert currency_check("eur", "currency").passed
    bad = currency_check("EUX", "currency")
    assert not bad.passed and bad.message == "The currency 'EUX' is not a current ISO 4217 code (such as EUR, USD or CHF)."
    assert not currency_check("€", "currency").passed
    assert currency_check(None, "currency") is None and currency_check("", "currency") is None  # absent: not run


@pytest.mark.parametrize(
    ("vat_id", "passed"),
    [
        ("DE136695976", True), ("DE 136 695 976", True), ("DE136695977", False), ("DE123456789", False),
        ("FR40303265045", True), ("FR 40 303 265 045", True), ("FR41303265045", False),
        ("CHE-116.281.710 MWST", True), ("CHE-116.281.715 MWST", False),  # Swiss: stdnum.ch.vat
    ],
)
def test_vat_id_checksums(vat_id: str, passed: bool) -> None:
    check = vat_id_check(vat_id, "seller")
    assert check is not None and check.passed is passed, check
    assert check.name == "seller.vat_id.checksum" and check.fields == ["seller.vat_id"]
    if not passed:
        assert vat_id in check.message and "is not valid" in check.message


def test_a_vat_id_of_a_country_stdnum_does_not_know_is_not_checked() -> None:
    assert vat_id_check("US123456789", "seller") is None
    assert vat_id_check("123456789", "buyer") is None  # no prefix, no country
    assert vat_id_check("136695976", "buyer", country="DE").passed  # the party's country says which rules


@pytest.mark.parametrize(
    ("iban", "passed"),
    [
        ("DE89 3704 0044 0532 0130 00", True), ("DE89370400440532013000", True), ("GB82WEST12345698765432", True),
        ("DE89370400440532013001", False), ("DE8937040044053201300", False), ("FR7630006000011234567890189", True),
    ],
)
def test_iban_checksums(iban: str, passed: bool) -> None:
    check = iban_check(iban)
    assert check.passed is passed, check.message
    if not passed:
        assert check.message.startswith(f"The IBAN {iban} is not valid:")


def test_checks_run_only_on_the_fields_they_need() -> None:
    fields = empty_invoice()
    assert invoice_checks(fields) == []
    fields["currency"] = "CHF"
    assert [c.name for c in invoice_checks(fields)] == ["currency.iso4217"]
    # Junk where numbers belong is skipped, never raised.
    junk = {"totals": {"tax_basis_total": "abc", "tax_total": [], "grand_total": True}, "line_items": ["x", None], "tax_breakdown": "no"}
    assert invoice_checks(junk) == []


def test_receipt_lines_sum_to_the_total_or_to_the_total_less_tax() -> None:
    inclusive = {"merchant_name": "Kedai", "date": "2018-01-02", "total": 10.5, "tax": 0.6, "currency": "MYR",
                 "line_items": [{"name": "Tea", "total": 4.5}, {"name": "Rice", "total": 6.0}]}
    checks = by_name(receipt_checks(inclusive))
    assert checks["line_items.sum"].passed and checks["currency.iso4217"].passed
    added = {**inclusive, "total": 11.1}  # tax added on top of the lines
    check = by_name(receipt_checks(added))["line_items.sum"]
    assert check.passed and "plus tax 0.60" in check.message
    rounded = {**inclusive, "tax": None, "total": 10.55}  # cash rounding to 0.05
    assert by_name(receipt_checks(rounded))["line_items.sum"].passed
    wrong = {**inclusive, "total": 12.5}
    check = by_name(receipt_checks(wrong))["line_items.sum"]
    assert not check.passed and check.message == "The 2 line amount(s) add up to 10.50, but the total is 12.50 (and 11.10 with the tax 0.60)."
    partial = {**inclusive, "line_items": [{"name": "Tea", "total": 4.5}, {"name": "Rice", "total": None}]}
    assert "line_items.sum" not in by_name(receipt_checks(partial))


def test_schema_kind_and_required_fields() -> None:
    assert schema_kind(invoice(), None) == "invoice"
    assert schema_kind({"merchant_name": "x", "total": 1.0}, None) == "receipt"
    assert schema_kind({"issuer": "x", "amount": 1.0}, None, "template:acme.yml") == "template"
    assert schema_kind({}, None) == "none"
    assert schema_kind({"po_number": "1"}, "Purchase order") == "custom"
    assert required_fields("invoice") == ["invoice_number", "issue_date", "currency", "seller.name", "totals.grand_total"]
    assert len(required_fields("receipt")) == 3 and "date" in required_fields("receipt") and "total" in required_fields("receipt")
    assert required_fields("custom", {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"]}) == ["a"]
    assert required_fields("template") == [] and required_fields("none") == []
    assert validate({"po_number": "1", "currency": "XYZ"}, "custom")[0].passed is False


def test_review_reasons_missing_and_uncertain_required_fields() -> None:
    fields = invoice(invoice_number=None, seller__name="ACME Supplies GmbH")
    provenance = {"seller": {"name": {"page": 1, "text": "ACME", "match": "fuzzy", "score": 0.8, "confidence": 0.3}},
                  "currency": {"page": 1, "text": "EUR", "match": "exact", "score": 1.0, "confidence": 0.9}}
    checks = invoice_checks(fields)
    state, reasons = review(fields, checks, required_fields("invoice"), provenance, 0.5)
    assert state == "needs_review"
    assert reasons == [
        "The required field invoice_number is missing.",
        "The required field seller.name (ACME Supplies GmbH) was read with confidence 0.30, below the batch's threshold 0.50.",
    ]
    # 0 turns the confidence part off; a missing field still counts.
    assert review(fields, checks, required_fields("invoice"), provenance, 0.0) == ("needs_review", ["The required field invoice_number is missing."])
    # A value without a confidence is not judged by it.
    assert review(invoice(), invoice_checks(invoice()), required_fields("invoice"), {"seller": {"name": None}}, 0.9) == ("ok", [])


def test_apply_review_on_results() -> None:
    from blocks.embedded import EmbeddedExtractor
    from tasks.review import apply_review

    ref = DocumentRef(index=0, uri="/x/a.pdf", name="a.pdf", size=1, fingerprint="1:1")
    extractor = EmbeddedExtractor()
    bad = apply_review(DocumentResult(ref=ref, status="succeeded", fields=invoice(currency="EUX")), extractor, 0.5)
    assert bad.review == "needs_review" and bad.review_reasons == ["The currency 'EUX' is not a current ISO 4217 code (such as EUR, USD or CHF)."]
    assert any(c.name == "currency.iso4217" and not c.passed for c in bad.checks)
    good = apply_review(DocumentResult(ref=ref, status="succeeded", fields=invoice()), extractor, 0.5)
    assert good.review == "ok" and good.review_reasons == [] and len(good.checks) == 10
    receipt = apply_review(
        DocumentResult(ref=ref, status="succeeded", schema_name="receipt", fields={"merchant_name": "Kedai", "date": None, "total": 3.0}),
        extractor, 0.5,
    )
    assert receipt.review == "needs_review" and receipt.review_reasons == ["The required field date is missing."]
    failed = apply_review(DocumentResult(ref=ref, status="failed", error="x"), extractor, 0.5)
    assert failed.review is None and failed.checks == [] and failed.review_reasons == []
    text_only = apply_review(DocumentResult(ref=ref, status="succeeded", fields={}), extractor, 0.5)
    assert text_only.review == "ok" and text_only.checks == []


def test_a_model_extractors_json_schema_required_keys(tmp_path) -> None:
    import json

    from blocks.openai_compatible import OpenAICompatibleExtractor
    from tasks.review import apply_review

    schema = tmp_path / "po.json"
    schema.write_text(json.dumps({"title": "Purchase order", "type": "object", "required": ["po_number"],
                                  "properties": {"po_number": {"type": ["string", "null"]}, "currency": {"type": ["string", "null"]}}}))
    extractor = OpenAICompatibleExtractor(base_url="http://127.0.0.1:9", model="m", target_schema=str(schema))
    ref = DocumentRef(index=0, uri="/x/po.pdf", name="po.pdf", size=1, fingerprint="1:1")
    result = apply_review(DocumentResult(ref=ref, status="succeeded", fields={"po_number": None, "currency": "USD"}), extractor, 0.5)
    assert result.review == "needs_review" and result.review_reasons == ["The required field po_number is missing."]
    assert [c.name for c in result.checks] == ["currency.iso4217"]
