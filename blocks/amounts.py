"""Money amounts and dates as printed on invoices, parsed into floats and ISO dates.

Amounts: '1.234,56', '1,234.56', '1 234,56', "1'234.56", '-12,50', '12.50-', '(12.50)', with or
without a currency symbol or code; the decimal separator is read from the number itself unless
the caller knows it. Dates: numeric dates through a fast regular-expression path (day first
unless the caller or the document says month first), month names in many languages through
`dateparser`, imported only when a month name must be read.
"""

from __future__ import annotations

import re
from datetime import date

# Currency marks as printed, by ISO 4217 code (symbols, codes and common local abbreviations).
CURRENCY_MARKS: dict[str, str] = {
    "€": "EUR", "EUR": "EUR", "EURO": "EUR", "EUROS": "EUR",
    "$": "USD", "US$": "USD", "USD": "USD",
    "£": "GBP", "GBP": "GBP",
    "¥": "JPY", "JPY": "JPY",
    "₹": "INR", "RS": "INR", "RS.": "INR", "INR": "INR",
    "ZŁ": "PLN", "PLN": "PLN",
    "CHF": "CHF", "SEK": "SEK", "NOK": "NOK", "DKK": "DKK", "CZK": "CZK", "HUF": "HUF",
    "CAD": "CAD", "AUD": "AUD", "NZD": "NZD", "CNY": "CNY", "SGD": "SGD", "MYR": "MYR", "RM": "MYR",
    "HKD": "HKD", "ZAR": "ZAR", "BRL": "BRL", "MXN": "MXN", "RON": "RON", "BGN": "BGN", "TRY": "TRY",
}

_NUMBER = re.compile(
    r"(?P<lead>[-−–(]\s*)?"
    r"(?P<num>\d{1,3}(?:[.,'’ \u00a0\u202f]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?|[.,]\d+)"
    r"(?P<trail>\s*[-−)])?"
)
_STRIP = re.compile(r"[^\d.,'’ \u00a0\u202f()\-−–]")


def parse_amount(raw: str, decimal_separator: str | None = None) -> float | None:
    """The amount in `raw` ('1.234,56 €' → 1234.56, '12.50-' → -12.5), or None when it holds
    no single number. `decimal_separator` ('.' or ',') settles ambiguous forms like '1.234'."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text or len(text) > 40:
        return None
    if "%" in text:
        return None
    for word in re.findall(r"[^\W\d_]+\.?\$?", text):
        if word.upper() not in CURRENCY_MARKS and word.upper().rstrip(".") not in CURRENCY_MARKS:
            return None  # words besides a currency mark: not an amount ('1 Stk', 'Nr. 42')
    core = _STRIP.sub(" ", text).strip()
    match = _NUMBER.fullmatch(core)
    if match is None:
        return _price_parser(text, decimal_separator)
    number = match.group("num")
    negative = bool(match.group("lead") and match.group("lead").strip() in "-−–(") or bool(match.group("trail"))
    value = _number(number, decimal_separator)
    if value is None:
        return None
    return -value if negative else value


def _number(number: str, decimal_separator: str | None) -> float | None:
    digits = re.sub(r"[ '’\u00a0\u202f]", "", number)
    dots, commas = digits.count("."), digits.count(",")
    if dots and commas:
        decimal = "," if digits.rfind(",") > digits.rfind(".") else "."
    elif dots or commas:
        mark = "." if dots else ","
        head, _, tail = digits.rpartition(mark)
        if digits.count(mark) > 1:
            decimal = None  # '1.234.567': only grouping
        elif decimal_separator in (".", ","):
            decimal = mark if mark == decimal_separator else None
        elif len(tail) == 3 and head not in ("", "0") and head != "-":
            decimal = None  # '1.000' / '1,000': a thousands group
        else:
            decimal = mark
    else:
        decimal = None
    if decimal is None:
        cleaned = digits.replace(".", "").replace(",", "")
    else:
        other = "," if decimal == "." else "."
        cleaned = digits.replace(other, "").replace(decimal, ".")
    try:
        return round(float(cleaned), 6)
    except ValueError:
        return None


def _price_parser(text: str, decimal_separator: str | None) -> float | None:
    """Amounts embedded in words ('Total EUR 12,50 incl.'): price-parser finds the number."""
    if not any(ch.isdigit() for ch in text):
        return None
    from price_parser import Price

    price = Price.fromstring(text, decimal_separator=decimal_separator)
    if price.amount is None:
        return None
    value = float(price.amount)
    stripped = text.strip()
    if stripped.startswith(("-", "−")) or stripped.endswith(("-", "−")) or re.search(r"[-−]\s*\d", stripped):
        value = -abs(value)
    return value


def currency_of(raw: str) -> str | None:
    """ISO code of a currency mark in `raw` ('€ 12,00' → EUR, '12.00 USD' → USD), else None."""
    for token in re.findall(r"[A-Za-zł.]+\$?|[€$£¥₹]", raw):
        code = CURRENCY_MARKS.get(token.upper())
        if code:
            return code
    return None


# ----------------------------------------------------------------------------------- dates

_ISO = re.compile(r"(?<!\d)(?P<y>(?:19|20)\d\d)[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?!\d)")
_NUMERIC = re.compile(r"(?<![\d.])(?P<a>\d{1,2})\s?(?P<sep>[./-])\s?(?P<b>\d{1,2})\s?(?P=sep)\s?(?P<y>(?:19|20)?\d\d)(?![\d])")
_COMPACT = re.compile(r"(?<!\d)(?P<y>(?:19|20)\d\d)(?P<m>[01]\d)(?P<d>[0-3]\d)(?!\d)")
# A month name (any language dateparser knows) next to a day and a year: '5 March 2018',
# '19 avril 2014', '5. März 2021', 'March 5, 2018', 'Aug 3 , 2014', '02 Juillet 2015', '02/Jan/2017', '5-Mar-2018'.
_WORDY = re.compile(
    r"(?<!\w)(?:(?P<d1>\d{1,2})(?:st|nd|rd|th|er|º|°)?\.?[\s/-]*(?:de\s+)?(?P<m1>[^\W\d_]{3,12})\.?,?[\s/-]*(?:de\s+)?(?P<y1>(?:19|20)\d\d)"
    r"|(?P<m2>[^\W\d_]{3,12})\.?\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)?\s*,?\s*(?P<y2>(?:19|20)\d\d))(?!\d)"
)
_MONTH_CACHE: dict[tuple[str, tuple[str, ...]], int | None] = {}


def parse_date(raw: str, languages: list[str] | None = None, order: str | None = None) -> str | None:
    """The first date in `raw` as YYYY-MM-DD, or None.

    Numeric dates are day first ('DMY') unless `order` is 'MDY' (US documents) or the first
    number can only be a month (the second is over 12); ISO and compact YYYYMMDD forms are read
    as such. Month names are read in `languages` (dateparser codes) or any language.
    """
    if not raw:
        return None
    text = str(raw)
    found: list[tuple[int, str]] = []
    if (m := _ISO.search(text)) and (d := _make(int(m["y"]), int(m["m"]), int(m["d"]))):
        found.append((m.start(), d))
    for m in _NUMERIC.finditer(text):
        a, b, y = int(m["a"]), int(m["b"]), int(m["y"])
        if y < 100:
            y += 2000 if y < 70 else 1900
        month_first = (order or "").upper().startswith("M") and a <= 12
        if a > 12 and b <= 12:
            month_first = False
        elif b > 12 and a <= 12:
            month_first = True
        d = _make(y, a, b) if month_first else _make(y, b, a)
        if d:
            found.append((m.start(), d))
            break
    if not found and (m := _COMPACT.search(text)) and (d := _make(int(m["y"]), int(m["m"]), int(m["d"]))):
        found.append((m.start(), d))
    for m in _WORDY.finditer(text):
        if found and m.start() > min(found)[0]:
            break
        day, name, year = (m["d1"], m["m1"], m["y1"]) if m["d1"] else (m["d2"], m["m2"], m["y2"])
        month = month_number(name, languages)
        if month and (d := _make(int(year), month, int(day))):
            found.append((m.start(), d))
            break
    return min(found)[1] if found else None


def _make(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def month_number(name: str, languages: list[str] | None = None) -> int | None:
    """1-12 for a month name or abbreviation in any language dateparser knows, else None."""
    key = (name.lower().rstrip("."), tuple(languages or ()))
    if key in _MONTH_CACHE:
        return _MONTH_CACHE[key]
    month: int | None = None
    if key[0].isalpha() and len(key[0]) >= 3:
        import dateparser

        settings = {"PREFER_DAY_OF_MONTH": "first", "DATE_ORDER": "DMY", "REQUIRE_PARTS": ["month", "year"]}
        parsed = dateparser.parse(f"1 {key[0]} 2000", languages=list(languages) if languages else None, settings=settings)
        if parsed is None and languages:
            parsed = dateparser.parse(f"1 {key[0]} 2000", settings=settings)
        if parsed is not None and parsed.year == 2000 and parsed.day == 1:
            month = parsed.month
    _MONTH_CACHE[key] = month
    return month
