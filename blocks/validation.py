"""The checks an accountant runs on a document's fields, and whether it needs a person's look.

`validate(fields, schema)` returns one `Check` per rule whose fields are all present; a rule
missing a value is not run (an absent due date is not an error of the dates, and a missing
required field is reported as such by `review`). Amounts are compared as decimals (the float
a field holds is read through its shortest repr, so 19.99 is 19.99, not 19.989999…).

Invoices (the invoice schema, `blocks.invoice_schema`; EN 16931 business terms):

- `line_items.sum`: the line net amounts (BT-131) add up to the sum of line net amounts
  (BT-106), within `TOLERANCE` (EN 16931 defines BT-106 as that sum exactly, BR-CO-10); to the
  total without VAT (BT-109) when BT-106 is absent and there are no allowances or charges.
- `totals.net_total`: BT-106 − allowances (BT-107) + charges (BT-108) = the total without VAT
  (BT-109), within `TOLERANCE` (BR-CO-13).
- `totals.net_plus_tax`: the total without VAT (BT-109; BT-106 when BT-109 is absent and there
  are no allowances or charges) + the VAT total (BT-110) = the grand total (BT-112), within
  `TOLERANCE` (BR-CO-15).
- `tax_breakdown[i].basis_x_rate`: each breakdown's basis (BT-116) × rate (BT-119) / 100 = its
  VAT amount (BT-117), within `tax_tolerance(lines)`: half a cent of rounding per invoice line
  (VAT may be computed line by line, then added), at least `TOLERANCE`.
- `tax_breakdown.sum`: the breakdowns' VAT amounts add up to BT-110, within `TOLERANCE` (BR-CO-14).
- `dates.due_not_before_issue`: the due date (BT-9) is not before the issue date (BT-2).
- `currency.iso4217`: the currency (BT-5) is a current ISO 4217 code (pycountry's list).
- `seller.vat_id.checksum`, `buyer.vat_id.checksum`: the VAT id's check digits, by python-stdnum
  (`stdnum.eu.vat` for EU prefixes, the country's own `vat` module for others such as CHE or
  GB; an id whose country stdnum does not know is not checked).
- `payment.iban.checksum`: the IBAN's country length and mod-97 check digits (`stdnum.iban`).

Receipts (`blocks.receipt_schema`): `line_items.sum` (the lines' totals add up to the total, or
to the total less the tax when the tax is added on top, within `RECEIPT_TOLERANCE`, which allows
the 0.05 cash rounding of countries without one-cent coins) and `currency.iso4217`.

Other schemas (a user's JSON Schema, a template's own fields): `currency.iso4217` when the
fields have a top-level `currency`.

Required fields (`required_fields`), reported by `review` when missing or read with a
confidence below the batch's threshold:

- invoice: `invoice_number`, `issue_date`, `currency`, `seller.name`, `totals.grand_total` (what
  a booking needs: whose invoice, which, when, how much, in what; the buyer's name is left out,
  simplified invoices under 250 EUR do not carry it);
- receipt: the merchant's name, `date`, `total`;
- a user's JSON Schema: its top-level `required` keys;
- a template's fields: none (invoice2data fails a template that misses its required fields).

This module imports no Prefect (the review decision runs in the extraction task, next to the
document's result); stdnum and pycountry are imported on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from blocks.models import Check

# One cent: what rounding a total to two decimals may move it by.
TOLERANCE = Decimal("0.01")
# Half a cent per invoice line: VAT computed line by line and then added may differ so much from
# basis × rate computed once.
TAX_TOLERANCE_PER_LINE = Decimal("0.005")
# Receipts: cash totals are rounded to 0.05 in several countries (Malaysia, Switzerland, …).
RECEIPT_TOLERANCE = Decimal("0.05")

INVOICE_REQUIRED: tuple[str, ...] = ("invoice_number", "issue_date", "currency", "seller.name", "totals.grand_total")
_MISSING = object()

SchemaKind = Literal["invoice", "receipt", "template", "custom", "none"]


# ---------------------------------------------------------------------------- reading the fields


def get_path(fields: Any, path: str) -> Any:
    """The value at a dotted path (`seller.name`, `tax_breakdown[0].basis`), or None."""
    value = fields
    for part in path.replace("[", ".").replace("]", "").split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _amount(value: Any) -> Decimal | None:
    """A field's number as a Decimal (ints, floats, numeric strings); None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    elif isinstance(value, str) and value.strip():
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def _date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def _money(value: Decimal) -> str:
    """An amount as a person reads it: two decimals, more only when it has more."""
    cents = value.quantize(Decimal("0.01"))
    return f"{cents:.2f}" if cents == value else format(value.normalize(), "f")


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


# ---------------------------------------------------------------------------- which schema


@functools.cache
def _receipt_shape() -> dict[str, Any]:
    from blocks.receipt_schema import ReceiptFields

    return ReceiptFields().model_dump()


def _first_path(shape: dict[str, Any], candidates: Iterable[str]) -> str | None:
    for path in candidates:
        head, _, rest = path.partition(".")
        if head in shape and (not rest or isinstance(shape[head], dict) and rest in shape[head]):
            return path
    return None


def receipt_paths() -> dict[str, str | None]:
    """Where the receipt schema keeps the merchant's name, the date, total, tax, currency and a
    line's amount (read from `ReceiptFields`, so a renamed key is followed)."""
    shape = _receipt_shape()
    from blocks.receipt_schema import ReceiptLine

    line = ReceiptLine().model_dump()
    return {
        "merchant": _first_path(shape, ("merchant_name", "merchant.name", "merchant")),
        "date": _first_path(shape, ("date",)),
        "total": _first_path(shape, ("total", "total_amount")),
        "tax": _first_path(shape, ("tax", "tax_amount")),
        "currency": _first_path(shape, ("currency",)),
        "line_items": _first_path(shape, ("line_items", "items")),
        "line_total": _first_path(line, ("total", "line_total", "amount")),
    }


def schema_kind(fields: dict[str, Any], schema_name: str | None, fields_source: str | None = None) -> SchemaKind:
    """Which rules apply: the schema the extraction names, else what the fields look like."""
    if schema_name in ("invoice", "receipt"):
        return schema_name  # type: ignore[return-value]
    if fields_source and fields_source.startswith("template:"):
        return "template"
    if schema_name:
        return "custom"
    if not fields:
        return "none"
    if isinstance(fields.get("totals"), dict) and "seller" in fields:
        return "invoice"
    merchant = receipt_paths()["merchant"]
    if merchant and merchant.split(".")[0] in fields and "total" in fields:
        return "receipt"
    return "custom"


def required_fields(kind: SchemaKind, json_schema: dict[str, Any] | None = None) -> list[str]:
    """The dotted paths a document of this kind must have (see the module docstring)."""
    if kind == "invoice":
        return list(INVOICE_REQUIRED)
    if kind == "receipt":
        paths = receipt_paths()
        return [p for p in (paths["merchant"], paths["date"], paths["total"]) if p]
    if kind == "custom" and json_schema:
        required = json_schema.get("required")
        return [str(key) for key in required] if isinstance(required, list) else []
    return []


# ---------------------------------------------------------------------------- the checks


def validate(fields: dict[str, Any], kind: SchemaKind) -> list[Check]:
    """Every check whose fields are present, passed or not, in a fixed order."""
    if kind == "invoice":
        return invoice_checks(fields)
    if kind == "receipt":
        return receipt_checks(fields)
    if kind in ("custom", "template") and isinstance(fields.get("currency"), str):
        return [c for c in [currency_check(fields.get("currency"), "currency")] if c]
    return []


def invoice_checks(fields: dict[str, Any]) -> list[Check]:
    checks: list[Check | None] = [
        line_sum_check(fields),
        net_total_check(fields),
        net_plus_tax_check(fields),
        *tax_breakdown_checks(fields),
        tax_sum_check(fields),
        due_date_check(fields),
        currency_check(fields.get("currency"), "currency"),
        vat_id_check(get_path(fields, "seller.vat_id"), "seller", get_path(fields, "seller.address.country")),
        vat_id_check(get_path(fields, "buyer.vat_id"), "buyer", get_path(fields, "buyer.address.country")),
        iban_check(get_path(fields, "payment.iban")),
    ]
    return [c for c in checks if c is not None]


def _lines(fields: dict[str, Any], key: str = "line_items") -> list[dict[str, Any]]:
    items = fields.get(key)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def line_sum_check(fields: dict[str, Any]) -> Check | None:
    """Σ line net amounts (BT-131) = BT-106, when every line has its amount.

    Without BT-106 (the layout path rarely prints it apart) and with no allowances or charges, the
    lines are compared with the total without VAT (BT-109), which then equals BT-106.
    """
    lines = _lines(fields)
    stated, path, label = _amount(get_path(fields, "totals.line_total")), "totals.line_total", "line total (BT-106)"
    if stated is None and get_path(fields, "totals.allowance_total") is None and get_path(fields, "totals.charge_total") is None:
        stated, path, label = _amount(get_path(fields, "totals.tax_basis_total")), "totals.tax_basis_total", "total without VAT (BT-109)"
    amounts = [_amount(line.get("line_total")) for line in lines]
    if not lines or stated is None or any(a is None for a in amounts):
        return None
    total = sum(amounts, Decimal(0))  # type: ignore[arg-type]
    difference = abs(total - stated)
    passed = difference <= TOLERANCE
    message = (
        f"The {len(lines)} line net amount(s) add up to {_money(total)}, "
        + (f"matching the invoice's {label.split(' (')[0]} {_money(stated)}." if passed
           else f"but the invoice's {label} is {_money(stated)} (off by {_money(difference)}).")
    )
    return Check(
        name="line_items.sum", passed=passed, message=message,
        fields=[*(f"line_items[{n}].line_total" for n in range(len(lines))), path],
    )


def net_total_check(fields: dict[str, Any]) -> Check | None:
    """BT-106 − BT-107 + BT-108 = BT-109."""
    lines = _amount(get_path(fields, "totals.line_total"))
    basis = _amount(get_path(fields, "totals.tax_basis_total"))
    if lines is None or basis is None:
        return None
    allowances = _amount(get_path(fields, "totals.allowance_total")) or Decimal(0)
    charges = _amount(get_path(fields, "totals.charge_total")) or Decimal(0)
    expected = lines - allowances + charges
    difference = abs(expected - basis)
    passed = difference <= TOLERANCE
    off = f"{_money(basis)} (off by {_money(difference)})"
    if allowances or charges:
        how = f"The line total {_money(lines)}"
        how += f" less allowances {_money(allowances)}" if allowances else ""
        how += f" plus charges {_money(charges)}" if charges else ""
        how += f" is {_money(expected)}"
        message = f"{how}, matching the total without VAT." if passed else f"{how}, but the total without VAT (BT-109) is {off}."
    else:
        message = (
            f"The line total {_money(lines)} matches the total without VAT." if passed
            else f"The line total {_money(lines)} differs from the total without VAT (BT-109), {off}."
        )
    return Check(
        name="totals.net_total", passed=passed, message=message,
        fields=["totals.line_total", "totals.allowance_total", "totals.charge_total", "totals.tax_basis_total"],
    )


def net_plus_tax_check(fields: dict[str, Any]) -> Check | None:
    """Total without VAT + VAT = grand total."""
    tax = _amount(get_path(fields, "totals.tax_total"))
    grand = _amount(get_path(fields, "totals.grand_total"))
    net = _amount(get_path(fields, "totals.tax_basis_total"))
    net_path = "totals.tax_basis_total"
    if net is None and get_path(fields, "totals.allowance_total") is None and get_path(fields, "totals.charge_total") is None:
        net, net_path = _amount(get_path(fields, "totals.line_total")), "totals.line_total"
    if tax is None or grand is None or net is None:
        return None
    expected = net + tax
    difference = abs(expected - grand)
    passed = difference <= TOLERANCE
    message = (
        f"Net {_money(net)} plus VAT {_money(tax)} is {_money(expected)}, "
        + ("matching the grand total." if passed
           else f"but the grand total is {_money(grand)} (off by {_money(difference)}).")
    )
    return Check(name="totals.net_plus_tax", passed=passed, message=message, fields=[net_path, "totals.tax_total", "totals.grand_total"])


def tax_tolerance(lines: int) -> Decimal:
    """How far basis × rate may be from a breakdown's VAT: half a cent per line, at least a cent."""
    return max(TOLERANCE, TAX_TOLERANCE_PER_LINE * lines)


def tax_breakdown_checks(fields: dict[str, Any]) -> list[Check]:
    """basis × rate / 100 = tax, for each breakdown that has all three."""
    checks = []
    lines = _lines(fields)
    for n, breakdown in enumerate(_lines(fields, "tax_breakdown")):
        basis, rate, tax = (_amount(breakdown.get(k)) for k in ("basis", "rate", "tax"))
        if basis is None or rate is None or tax is None:
            continue
        at_rate = [line for line in lines if _amount(line.get("tax_rate")) == rate]
        tolerance = tax_tolerance(len(at_rate) if at_rate else len(lines))
        expected = basis * rate / 100
        difference = abs(expected - tax)
        passed = difference <= tolerance
        rounded = expected.quantize(Decimal("0.01"))
        message = (
            f"VAT at {format(rate.normalize(), 'f')} % of {_money(basis)} is {_money(rounded)}; "
            f"the breakdown says {_money(tax)} "
            + (f"(within {_money(tolerance)})." if passed else f"(off by {_money(difference.quantize(Decimal('0.0001')).normalize())}, more than {_money(tolerance)}).")
        )
        checks.append(Check(
            name=f"tax_breakdown[{n}].basis_x_rate", passed=passed, message=message,
            fields=[f"tax_breakdown[{n}].basis", f"tax_breakdown[{n}].rate", f"tax_breakdown[{n}].tax"],
        ))
    return checks


def tax_sum_check(fields: dict[str, Any]) -> Check | None:
    """Σ breakdown VAT = BT-110, when every breakdown has its VAT amount."""
    breakdowns = _lines(fields, "tax_breakdown")
    stated = _amount(get_path(fields, "totals.tax_total"))
    amounts = [_amount(b.get("tax")) for b in breakdowns]
    if not breakdowns or stated is None or any(a is None for a in amounts):
        return None
    total = sum(amounts, Decimal(0))  # type: ignore[arg-type]
    difference = abs(total - stated)
    passed = difference <= TOLERANCE
    message = (
        f"The {len(breakdowns)} VAT breakdown(s) add up to {_money(total)}, "
        + ("matching the VAT total." if passed else f"but the VAT total is {_money(stated)} (off by {_money(difference)}).")
    )
    return Check(
        name="tax_breakdown.sum", passed=passed, message=message,
        fields=[*(f"tax_breakdown[{n}].tax" for n in range(len(breakdowns))), "totals.tax_total"],
    )


def due_date_check(fields: dict[str, Any]) -> Check | None:
    issued, due = _date(fields.get("issue_date")), _date(fields.get("due_date"))
    if issued is None or due is None:
        return None
    passed = due >= issued
    message = (
        f"Due {due.isoformat()}, {(due - issued).days} day(s) after the issue date {issued.isoformat()}." if passed
        else f"The due date {due.isoformat()} is {(issued - due).days} day(s) before the issue date {issued.isoformat()}."
    )
    return Check(name="dates.due_not_before_issue", passed=passed, message=message, fields=["issue_date", "due_date"])


@functools.cache
def _currency_name(code: str) -> str | None:
    import pycountry

    found = pycountry.currencies.get(alpha_3=code)
    return found.name if found is not None else None


def currency_check(value: Any, path: str) -> Check | None:
    """The currency is a current ISO 4217 code (upper case; 'eur' is read as EUR)."""
    if not isinstance(value, str) or not value.strip():
        return None
    code = value.strip()
    name = _currency_name(code.upper()) if len(code) == 3 and code.isalpha() else None
    message = (
        f"{code} is the ISO 4217 code of the {name}." if name
        else f"The currency {code!r} is not a current ISO 4217 code (such as EUR, USD or CHF)."
    )
    return Check(name="currency.iso4217", passed=name is not None, message=message, fields=[path])


def _vat_module(number: str, country: Any) -> Any:
    """stdnum's module for a VAT id: by its prefix, else by the party's country; None if unknown."""
    import stdnum
    from stdnum.eu import vat as eu_vat

    prefix = number[:2].lower()
    if prefix.isalpha():
        if prefix in eu_vat.MEMBER_STATES or prefix == "el":
            return eu_vat
        module = stdnum.get_cc_module(prefix, "vat")
        if module is not None:
            return module
        return None
    if isinstance(country, str) and len(country.strip()) == 2:
        return stdnum.get_cc_module(country.strip().lower(), "vat")
    return None


def vat_id_check(value: Any, party: str, country: Any = None) -> Check | None:
    """A VAT id's check digits (python-stdnum); ids whose country stdnum does not know are not checked."""
    if not isinstance(value, str) or not value.strip():
        return None
    from stdnum.exceptions import ValidationError

    number = value.strip()
    try:
        module = _vat_module("".join(number.split()).upper(), country)
    except Exception:  # noqa: BLE001 - an unknown country is "not checkable", never an error
        module = None
    if module is None:
        return None
    try:
        module.validate(number)
    except ValidationError as exc:
        passed, why = False, _stdnum_reason(exc)
    else:
        passed, why = True, ""
    message = f"The {party}'s VAT id {number} " + ("has valid check digits." if passed else f"is not valid: {why}.")
    return Check(name=f"{party}.vat_id.checksum", passed=passed, message=message, fields=[f"{party}.vat_id"])


def iban_check(value: Any) -> Check | None:
    if not isinstance(value, str) or not value.strip():
        return None
    from stdnum import iban
    from stdnum.exceptions import ValidationError

    number = value.strip()
    try:
        iban.validate(number)
    except ValidationError as exc:
        passed, why = False, _stdnum_reason(exc)
    else:
        passed, why = True, ""
    message = f"The IBAN {number} " + ("has valid check digits." if passed else f"is not valid: {why}.")
    return Check(name="payment.iban.checksum", passed=passed, message=message, fields=["payment.iban"])


def _stdnum_reason(exc: Exception) -> str:
    from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidFormat, InvalidLength

    if isinstance(exc, InvalidChecksum):
        return "its check digits do not match"
    if isinstance(exc, InvalidLength):
        return "it has the wrong number of characters"
    if isinstance(exc, InvalidFormat):
        return "it is not in the number's format"
    if isinstance(exc, InvalidComponent):
        return "a part of it (such as the country code) is not valid"
    return str(exc).rstrip(".")


def receipt_checks(fields: dict[str, Any]) -> list[Check]:
    paths = receipt_paths()
    checks: list[Check | None] = [
        receipt_line_sum_check(fields, paths),
        currency_check(get_path(fields, paths["currency"]) if paths["currency"] else None, paths["currency"] or "currency"),
    ]
    return [c for c in checks if c is not None]


def receipt_line_sum_check(fields: dict[str, Any], paths: dict[str, str | None]) -> Check | None:
    """Σ line amounts = total (tax included in the prices) or = total − tax (tax added on top)."""
    if not paths["line_items"] or not paths["total"] or not paths["line_total"]:
        return None
    lines = _lines(fields, paths["line_items"])
    total = _amount(get_path(fields, paths["total"]))
    amounts = [_amount(line.get(paths["line_total"])) for line in lines]
    if not lines or total is None or any(a is None for a in amounts):
        return None
    tax = _amount(get_path(fields, paths["tax"])) if paths["tax"] else None
    summed = sum(amounts, Decimal(0))  # type: ignore[arg-type]
    passed = abs(summed - total) <= RECEIPT_TOLERANCE
    how = "matching the total"
    if not passed and tax is not None and abs(summed + tax - total) <= RECEIPT_TOLERANCE:
        passed, how = True, f"plus tax {_money(tax)} matching the total"
    message = (
        f"The {len(lines)} line amount(s) add up to {_money(summed)}, "
        + (f"{how} {_money(total)}." if passed
           else f"but the total is {_money(total)}"
           + (f" (and {_money(summed + tax)} with the tax {_money(tax)})." if tax is not None else ".")
           )
    )
    field_paths = [f"{paths['line_items']}[{n}].{paths['line_total']}" for n in range(len(lines))]
    return Check(name="line_items.sum", passed=passed, message=message, fields=[*field_paths, paths["total"], *([paths["tax"]] if tax is not None else [])])


# ---------------------------------------------------------------------------- the review decision


def _confidence(provenance: Any, path: str) -> float | None:
    found = get_path(provenance, path) if isinstance(provenance, dict) else None
    if isinstance(found, dict):
        value = found.get("confidence")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return None


def review(
    fields: dict[str, Any],
    checks: list[Check],
    required: list[str],
    provenance: dict[str, Any] | None,
    min_confidence: float,
) -> tuple[Literal["ok", "needs_review"], list[str]]:
    """'needs_review' with one sentence per reason, or 'ok' with none.

    Reasons: each failed check (its message), each required field that is missing (None, empty
    string or list), and each required field whose provenance `confidence` is below
    `min_confidence` (0 turns this part off; a value without a confidence is not judged by it).
    """
    reasons = [check.message for check in checks if not check.passed]
    for path in required:
        value = get_path(fields, path)
        if not _present(value):
            reasons.append(f"The required field {path} is missing.")
            continue
        if min_confidence > 0:
            confidence = _confidence(provenance, path)
            if confidence is not None and confidence < min_confidence:
                reasons.append(
                    f"The required field {path} ({str(value)[:60]}) was read with confidence {confidence:.2f}, "
                    f"below the batch's threshold {min_confidence:.2f}."
                )
    return ("needs_review" if reasons else "ok"), reasons
