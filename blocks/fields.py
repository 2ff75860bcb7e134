"""Basic, language-tolerant invoice fields from plain text.

Deliberately modest: label-anchored regular expressions for the handful of fields nearly every
invoice or receipt prints (number, date, total, currency). Template and model-based extractors
do better; these give a useful first table from any text without configuration.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

_NUMBER_LABEL = r"(?:invoice|rechnung|facture|factuur|fattura|factura|faktura|bill|receipt)"
_INVOICE_NUMBER = re.compile(
    _NUMBER_LABEL
    + r"\s*(?:no\.?|nr\.?|number|num[eé]ro|nummer|n[°ºo]\.?|#|id)?\s*[:#.]?\s*(?:no\.?|nr\.?|n[°º])?\s*[:#]?\s*"
    r"(?P<value>[A-Z0-9][A-Z0-9\-/._]{2,40})",
    re.IGNORECASE,
)
_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("jan", "january", "januar", "janvier", "januari"),
            ("feb", "february", "februar", "février", "fevrier", "februari"),
            ("mar", "march", "märz", "maerz", "mars", "maart"),
            ("apr", "april", "avril"),
            ("may", "mai", "mei"),
            ("jun", "june", "juni", "juin"),
            ("jul", "july", "juli", "juillet"),
            ("aug", "august", "août", "aout", "augustus"),
            ("sep", "sept", "september", "septembre"),
            ("oct", "october", "oktober", "octobre"),
            ("nov", "november", "novembre"),
            ("dec", "december", "dezember", "décembre", "decembre"),
        ],
        start=1,
    )
    for name in names
}
_DATE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?P<y>(?:19|20)\d\d)-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b"), "ymd"),
    (re.compile(r"\b(?P<d>\d{1,2})[./](?P<m>\d{1,2})[./](?P<y>(?:19|20)\d\d)\b"), "dmy"),
    (re.compile(r"\b(?P<d>\d{1,2})\.?\s+(?P<mon>[A-Za-zéûä]{3,10})\.?,?\s+(?P<y>(?:19|20)\d\d)\b"), "d mon y"),
    (re.compile(r"\b(?P<mon>[A-Za-zéûä]{3,10})\.?\s+(?P<d>\d{1,2}),?\s+(?P<y>(?:19|20)\d\d)\b"), "mon d y"),
)
_TOTAL_LABEL = re.compile(
    r"(?:grand\s+total|total\s+amount|amount\s+due|total\s+due|balance\s+due|total\s+ttc|"
    r"gesamtbetrag|rechnungsbetrag|endbetrag|totaal|total|summe|montant)"
    r"[^\n0-9]{0,40}?(?P<amount>-?\d{1,3}(?:[ .,'\u00a0]\d{3})*(?:[.,]\d{1,2})?|-?\d+(?:[.,]\d{1,2})?)",
    re.IGNORECASE,
)
_CURRENCY_CODES = ("EUR", "USD", "GBP", "CHF", "INR", "PLN", "SEK", "NOK", "DKK", "CAD", "AUD", "JPY", "CNY", "MYR", "SGD")
_CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "₹": "INR", "¥": "JPY", "zł": "PLN", "RM": "MYR"}


def basic_fields(text: str) -> dict[str, Any]:
    """Best-effort invoice_number, date (ISO), total (float) and currency; absent when not found."""
    fields: dict[str, Any] = {}
    if not text:
        return fields
    if (number := _invoice_number(text)) is not None:
        fields["invoice_number"] = number
    if (found := _first_date(text)) is not None:
        fields["date"] = found
    if (total := _total(text)) is not None:
        fields["total"] = total
    if (currency := _currency(text)) is not None:
        fields["currency"] = currency
    return fields


def _invoice_number(text: str) -> str | None:
    for match in _INVOICE_NUMBER.finditer(text):
        value = match.group("value").strip("._-/")
        if any(ch.isdigit() for ch in value) and not re.fullmatch(r"(?:19|20)\d\d[-/.]\d\d?[-/.]\d\d?", value):
            return value
    return None


def _first_date(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for pattern, shape in _DATE_PATTERNS:
        for match in pattern.finditer(text):
            parsed = _to_date(match.groupdict(), shape)
            if parsed is not None:
                if best is None or match.start() < best[0]:
                    best = (match.start(), parsed.isoformat())
                break
    return best[1] if best else None


def _to_date(parts: dict[str, str], shape: str) -> date | None:
    try:
        year = int(parts["y"])
        day = int(parts["d"])
        if "mon" in parts and parts.get("mon"):
            month = _MONTHS.get(parts["mon"].lower().rstrip("."))
            if month is None:
                return None
        else:
            month = int(parts["m"])
        return date(year, month, day)
    except (ValueError, KeyError):
        return None


def parse_amount(raw: str) -> float | None:
    """'1.234,56' → 1234.56, '1,234.56' → 1234.56, '12,5' → 12.5."""
    cleaned = raw.replace("\u00a0", "").replace(" ", "").replace("'", "")
    if "," in cleaned and "." in cleaned:
        if cleaned.rfind(",") > cleaned.rfind("."):
            cleaned = cleaned.replace(".", "").replace(",", ".")
        else:
            cleaned = cleaned.replace(",", "")
    elif "," in cleaned:
        head, _, tail = cleaned.rpartition(",")
        cleaned = f"{head.replace(',', '')}.{tail}" if len(tail) in (1, 2) else cleaned.replace(",", "")
    elif cleaned.count(".") > 1 or (cleaned.count(".") == 1 and len(cleaned.rpartition(".")[2]) == 3):
        cleaned = cleaned.replace(".", "")
    try:
        return round(float(cleaned), 2)
    except ValueError:
        return None


def _total(text: str) -> float | None:
    """The amount after the last total-like label: invoices print subtotals before the total."""
    amounts = [parse_amount(m.group("amount")) for m in _TOTAL_LABEL.finditer(text)]
    amounts = [a for a in amounts if a is not None]
    return amounts[-1] if amounts else None


def _currency(text: str) -> str | None:
    counts: dict[str, int] = {}
    for code in _CURRENCY_CODES:
        n = len(re.findall(rf"\b{code}\b", text))
        if n:
            counts[code] = counts.get(code, 0) + n
    for symbol, code in _CURRENCY_SYMBOLS.items():
        pattern = rf"\b{symbol}\b" if symbol.isalpha() else re.escape(symbol)
        n = len(re.findall(pattern, text))
        if n:
            counts[code] = counts.get(code, 0) + n
    return max(counts, key=lambda c: counts[c]) if counts else None
