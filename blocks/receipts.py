"""Receipts read offline: whether a document is a till receipt, and its fields (`ReceiptFields`).

A receipt is laid out for a till roll, not for an accountant: the merchant's name on top, then
its address and registration numbers, the items, a stack of totals (subtotal, tax, rounding,
total, cash, change) and a payment line. The rules below read that shape from the text's lines
(OCR text is laid out in rows, `blocks.ocr`); every value is then located on the page by
`blocks.source_provenance`, like the invoice layout's.

- **merchant_name**: among the first lines, the one that best looks like a business name: mostly
  letters, not a label, an address or a greeting ('Thanks for ordering!'); a legal form (SDN BHD, LTD, GMBH, ENTERPRISE...) weighs
  most, then being followed by an address or a registration number, then coming first. A trailing
  registration number in brackets ('(139386 X)') is not part of the name.
- **merchant_address**: the address-like lines right under the name, up to the first telephone
  (labelled or a bare number), tax or registration line, the date or time, or a till's label
  ('Sales Associate: Paul').
- **total**: of the lines that label one amount as a total (not a subtotal, a quantity, an
  amount before tax or a tax; a row of equal amounts, such as a folio's charges and credits, is one
  amount), the most final one: 'grand total', 'total payable', 'amount due'
  or a bare 'total' over 'total incl. tax' over other totals; a total printed after the rounding
  line, or equal to cash minus change, wins ties; then the larger.
- **tax**: the first line labelling one amount as GST, VAT, SST or tax (not a registration id, not
  an amount before or excluding tax; 'GST Payable' is the tax), else the tax summary table's
  ('GST Summary  Amount  Tax' over rate rows): its total row's tax, or the sum of its rows' taxes.
- **date** / **time**: the first date, labelled ones first (day first unless the receipt is in US
  dollars), and the time of day printed on the date's line, else a labelled one, else the first
  (HH:MM, with seconds and AM/PM when printed).
- **currency**: the first currency mark or code printed (RM -> MYR, € -> EUR ...), else None.
- **payment_method**: the first payment word (cash, visa, mastercard, card ...) after the total.
- **line_items**: read only when the receipt prints an item table: a header row naming at least
  an amount or price column and a description or quantity column ('Item Qty U/P Amount',
  'Description Price Total'...). The rows between it and the total line that end in an amount
  (a separate number, optionally with a currency mark before and a tax code after: 'RM5.60SR',
  '13.76 S', '2.07-' for a discount) are items, except labelled lines (subtotals, tax, rounding,
  discount, cash, change, balance...). The last amount is the line's total; a quantity and unit
  price are the two other numbers whose product is the total (else the unit price is a second
  amount equal to the total, with quantity 1). A row without a name of its own (an item code
  and numbers) takes the text line(s) printed under it, or the one above it when the table
  prints names first (decided once per table, from its first nameless row); a row holding a
  single amount that is the unit price of the nameless row under it is that row's name line
  (an item printed on two rows). Receipts without an item table get no line items: a guess
  would only raise a false `line_items.sum` failure in validation.

`looks_like_receipt` counts receipt marks (a payment at a till: cash/change/tendered/card; who
served, as a label: 'Cashier', 'Server:', 'Sales Associate:', 'Clerk:'; thanks, in the languages
of the receipts met: thank you/come again/merci/danke/gracias...; 'receipt'; a time of day; a
table/pax) against invoice marks (IBAN, due date or payment terms, bill-to / ship-to blocks, an
invoice number label, a BIC): a point-of-sale mark (payment, till or table), at least two receipt
marks, and more receipt marks than invoice marks make a receipt. The bare words 'salesperson',
'server' and 'pos' are no till mark: they head invoice columns, name hosting products and number
German invoice lines ('Pos.'). Measured on the public corpus: the 16 SROIE receipts and 4 of
Azure's 6 unlabeled receipt images are receipts (not the Japanese one, whose marks are Japanese,
nor an e-mailed receipt laid out as an invoice with a 'Bill To' block); none of the 80 other
documents (invoices, office files, OCR samples) is.
"""

from __future__ import annotations

import re
from typing import Any

from blocks.amounts import CURRENCY_MARKS, parse_amount, parse_date
from blocks.document import ReadDocument
from blocks.receipt_schema import ReceiptFields

# ---------------------------------------------------------------------------- detection

_RECEIPT_MARKS = {
    "payment": re.compile(
        r"\b(?:cash|change|tendered|change due|visa|master\s*card|debit card|credit card|amex|american express|e-?wallet)\b",
        re.I,
    ),
    # who served at the till, as a label ('Cashier', 'Server: Dana', 'Sales Associate: Paul'): the bare
    # words head invoice columns ('SALESPERSON'), name hosting products ('Server #') or line positions ('Pos')
    "till": re.compile(
        r"\bcashier\b|\b(?:server|operator|sales\s*(?:person|associate)|clerk|waiter|waitress|staff|counter|till|pos)"
        r"\s*(?:no\.?|id)?\s*:",
        re.I,
    ),
    "thanks": re.compile(
        r"\bthank\s*you\b|\bthanks\b|\bcome again\b|\bvisit again\b|\bmerci\b|\bremercie|\bdanke\b|\bgracias\b|"
        r"\bgrazie\b|\bobrigad[oa]\b|\bbedankt\b",
        re.I,
    ),
    "receipt": re.compile(r"\breceipt\b", re.I),
    "clock": re.compile(r"\b(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?\b"),
    "table": re.compile(r"\btable\s*(?:no\.?\s*)?\d+|\b(?:pax|dine in|take ?away)\b", re.I),
}
_INVOICE_MARKS = {
    "iban": re.compile(r"\biban\b", re.I),
    "due": re.compile(r"\b(?:due date|payment terms|net \d+ days|zahlbar|échéance|fällig)\b", re.I),
    "parties": re.compile(r"\b(?:bill(?:ed)? to|ship to|invoice to|sold to|deliver to|rechnungsempfänger|customer no)\b", re.I),
    "number": re.compile(r"\b(?:invoice (?:number|no\.?)|rechnungs(?:nummer|-nr))\b", re.I),
    "bank": re.compile(r"\b(?:bic|swift|bank account|account number)\b", re.I),
}


def looks_like_receipt(document: ReadDocument) -> bool:
    """True when the text has the marks of a till receipt more than an invoice's (module docstring)."""
    text = document.text[:20_000]
    found = {name for name, mark in _RECEIPT_MARKS.items() if mark.search(text)}
    invoice = sum(1 for mark in _INVOICE_MARKS.values() if mark.search(text))
    # sold at a point of sale: a payment, till or table mark is required ('Receipt No.' and 'thank
    # you' also appear on invoices and statements)
    return bool(found & {"payment", "till", "table"}) and len(found) >= 2 and len(found) > invoice


# ---------------------------------------------------------------------------- fields

_LEGAL_FORM = re.compile(
    r"\b(?:sdn\.?\s*bhd|bhd|berhad|enterprise|trading|ltd|limited|llc|inc|corp|plc|pty|gmbh|ag|s\.?a\.?r\.?l|"
    r"s\.?a|s\.?l|b\.?v|n\.?v|oy|ab|as|co|company|restaurant|store|mart|supermarket|pharmacy|cafe|bakeries)\b\.?",
    re.I,
)
_LABEL_LINE = re.compile(
    r"^(?:tel|fax|phone|gst|vat|sst|tax|invoice|receipt|cash|date|time|cashier|no\b|reg|company|co\.|"
    r"bill|doc|table|order|simplified|welcome|email|www|http)",
    re.I,
)
_REGISTRATION = re.compile(r"\(?\b[A-Z]{0,3}\d{4,}[- ]?[A-Z]\b\)?|\breg(?:istration)?\b|\bcompany no\b|\bco\.? ?reg", re.I)
_ADDRESS = re.compile(
    r"\b(?:jalan|jln|lot|no\.?\s*\d|road|rd|street|st|avenue|ave|strasse|straße|rue|taman|tmn|floor|level|"
    r"blk|block|unit|suite|\d{5})\b",
    re.I,
)
_CONTACT = re.compile(r"\b(?:tel|fax|phone|gst|vat|sst|reg|email|www)\b", re.I)
_TRAILING_ID = re.compile(r"\s*\([^()]*\d[^()]*\)\s*$")
_AMOUNT = re.compile(r"-?(?:[A-Z]{2,3}\s?)?-?\d{1,3}(?:[,.' ]\d{3})*[.,]\d{2}(?![\d%])|-?\d+[.,]\d{2}(?![\d%])")
_PERCENT = re.compile(r"\d+(?:[.,]\d+)?\s*%")
_TOTAL = re.compile(r"\btotal\b|\bamount due\b|\bbalance due\b|\bpayable\b|\bto pay\b", re.I)
_NOT_TOTAL = re.compile(
    r"\bsub[- ]?total|\bqty\b|\bquantity\b|\bitems?\b|\bexcl|\bexcluding\b|\bbefore\b|\bsaving|\bdiscount|\bpoints?\b",
    re.I,
)
_TAX_WORD = re.compile(r"\b(?:gst|vat|sst|tax|mwst|tva|iva)\b", re.I)
_INCLUSIVE = re.compile(r"\binc(?:l|lusive|\.)?\b|\bincl\.", re.I)
_FINAL = re.compile(
    r"grand total|total payable|amount payable|amount due|total due|balance due|nett? total|total to pay|amt payable",
    re.I,
)
_ROUNDING = re.compile(r"\bround", re.I)
_CASH = re.compile(r"^\s*(?:cash|tendered|paid)\b", re.I)
_CHANGE = re.compile(r"^\s*change\b", re.I)
_TIME = re.compile(r"(?<![\d.:])([01]?\d|2[0-3])[:.]([0-5]\d)(?:[:.]([0-5]\d))?\s*([AaPp][Mm])?(?![\d])")
_PAYMENT = (
    ("mastercard", re.compile(r"\bmaster\s*card\b|\bmastercard\b", re.I)),
    ("visa", re.compile(r"\bvisa\b", re.I)),
    ("amex", re.compile(r"\bamex\b|\bamerican express\b", re.I)),
    ("debit card", re.compile(r"\bdebit\b", re.I)),
    ("credit card", re.compile(r"\bcredit card\b", re.I)),
    ("e-wallet", re.compile(r"\be-?wallet\b|\bgrabpay\b|\bboost\b|\btouch ?n ?go\b|\btng\b", re.I)),
    ("card", re.compile(r"\bcard\b", re.I)),
    ("cash", re.compile(r"\bcash\b", re.I)),
)


def fill_receipt(document: ReadDocument, languages: list[str] | None = None) -> dict[str, Any]:
    """A ReceiptFields-shaped dict (every key present) with what the receipt's text gives."""
    lines = [" ".join(line.split()) for line in document.text.replace("\f", "\n").splitlines()]
    lines = [line for line in lines if line]
    result = ReceiptFields().model_dump()
    name_at = _merchant(lines)
    if name_at is not None:
        result["merchant_name"] = _TRAILING_ID.sub("", lines[name_at]).strip(" .,:;-")
        result["merchant_address"] = _address(lines, name_at)
    result["currency"] = _currency(lines)
    total_at, result["total"] = _total(lines)
    result["tax"] = _tax(lines)
    order = "MDY" if result["currency"] == "USD" else None
    result["date"], result["time"] = _date_time(lines, languages, order)
    result["payment_method"] = _payment(lines, total_at)
    result["line_items"] = _line_items(lines, total_at)
    return result


def _merchant(lines: list[str]) -> int | None:
    best: tuple[float, int] | None = None
    for index, line in enumerate(lines[:10]):
        name = _TRAILING_ID.sub("", line)
        letters = sum(c.isalpha() for c in name)
        visible = sum(not c.isspace() for c in name)
        if letters < 3 or letters < 0.6 * visible or _LABEL_LINE.match(name) or _ADDRESS.search(name):
            continue
        if _RECEIPT_MARKS["thanks"].search(name):
            continue  # 'Thanks for ordering!' greets, it names no one
        score = -0.5 * index
        if _LEGAL_FORM.search(name):
            score += 4
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if _REGISTRATION.search(following) or _ADDRESS.search(following):
            score += 2
        if best is None or score > best[0]:
            best = (score, index)
    return best[1] if best else None


_PHONE_LINE = re.compile(r"^(?=(?:\D*\d){7})[\d\s()+./-]+$")  # '03-7845 8155', '123-456-7890': a number, no words
_NUMERIC_DATE = re.compile(r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}\b")
_LABELLED = re.compile(r"^[^\W\d_][\w .#/]{0,24}:\s*\S")  # 'Sales Associate: Paul'


def _address(lines: list[str], name_at: int) -> str | None:
    parts: list[str] = []
    for line in lines[name_at + 1 : name_at + 7]:
        if _CONTACT.search(line) or (_LABEL_LINE.match(line) and not _ADDRESS.search(line)):
            break
        if _PHONE_LINE.match(line) or _NUMERIC_DATE.search(line) or _TIME.search(line) or (
            _LABELLED.match(line) and not _ADDRESS.search(line)
        ):
            break  # an unlabelled telephone number, the date and time, a till's labels: the address is over
        if _REGISTRATION.fullmatch(line.strip()) or (not _ADDRESS.search(line) and not parts and _REGISTRATION.search(line)):
            continue  # a registration number under the name
        parts.append(line.strip(" ,"))
    return ", ".join(parts) or None


_OCR_ZERO = re.compile(r"(?:(?<=\s)|(?<=^)|(?<=RM)|(?<=[$€£]))O(?=[.,]\d{2}\b)")


def _amounts(line: str) -> list[float]:
    found = []
    line = _OCR_ZERO.sub("0", line)  # 'RMO.47': OCR's letter O for a leading zero
    for match in _AMOUNT.finditer(_PERCENT.sub(" ", line)):
        value = parse_amount(re.sub(r"^-?[A-Z]{2,3}\s?", "", match.group(0)).replace("O", "0"))
        if value is not None:
            found.append(abs(value))
    return found


def _total(lines: list[str]) -> tuple[int | None, float | None]:
    cash = change = None
    rounding_at = None
    for index, line in enumerate(lines):
        if _ROUNDING.search(line) and rounding_at is None:
            rounding_at = index
        if cash is None and _CASH.match(line) and len(amounts := _amounts(line)) == 1:
            cash = amounts[0]
        if change is None and _CHANGE.match(line) and len(amounts := _amounts(line)) == 1:
            change = amounts[0]
    paid = round(cash - change, 2) if cash is not None and change is not None else None
    best: tuple[float, float, int] | None = None
    for index, line in enumerate(lines):
        if not _TOTAL.search(line) or _NOT_TOTAL.search(line):
            continue
        if _TAX_WORD.search(line) and not _INCLUSIVE.search(line) and not _FINAL.search(line):
            continue  # 'Total GST': the tax
        amounts = _amounts(line)
        if not amounts or len(set(amounts)) != 1:
            continue  # a table's total row (amount and tax), or no amount; a folio's equal charges and credits are one
        label = re.sub(r"[^a-z ]", " ", _AMOUNT.sub(" ", line).lower())
        label = " ".join(w for w in label.split() if w.upper() not in CURRENCY_MARKS)
        score = 2.0 if _FINAL.search(line) or label == "total" else 1.0 if _INCLUSIVE.search(line) else 0.0
        if rounding_at is not None and index > rounding_at:
            score += 0.5
        if paid is not None and abs(paid - amounts[0]) < 0.005:
            score += 0.5
        candidate = (score, amounts[0], index)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return (best[2], best[1]) if best else (None, None)


def _tax(lines: list[str]) -> float | None:
    for line in lines:
        if not _TAX_WORD.search(line) or _INCLUSIVE.search(line) or re.search(r"\b(?:id|reg|no|summary|code|excl\w*|before)\b", line, re.I):
            continue
        if _TOTAL.search(line) and not re.search(r"total\s+(?:gst|vat|sst|tax)|(?:gst|vat|sst|tax)\s+(?:payable|due|amount)", line, re.I):
            continue
        amounts = _amounts(line)
        if len(amounts) == 1:
            return amounts[0]
    return _summary_tax(lines)


_SUMMARY_HEADER = re.compile(r"\b(?:gst|vat|sst|tax)\b.*\b(?:summary|amt|amount|code)\b|\b(?:summary|amt|amount|code)\b.*\b(?:gst|vat|sst|tax)\b", re.I)


def _summary_tax(lines: list[str]) -> float | None:
    """The tax of a tax summary table ('GST Summary  Amount  Tax' over 'SR 6%  140.00  8.40'): its
    total row's last amount, else the sum of its rows' last amounts."""
    for index, line in enumerate(lines):
        if _amounts(line) or not _SUMMARY_HEADER.search(line):
            continue
        taxes: list[float] = []
        for row in lines[index + 1 : index + 8]:
            amounts = _amounts(row)
            if len(amounts) != 2:
                if taxes or amounts:
                    break
                continue  # a second header row ('(MYR)  (MYR)')
            if re.search(r"\btotal\b", row, re.I):
                return amounts[1]
            taxes.append(amounts[1])
        if taxes:
            return round(sum(taxes), 2)
    return None


def _date_time(lines: list[str], languages: list[str] | None, order: str | None) -> tuple[str | None, str | None]:
    day = clock = None
    day_line = ""
    for line in sorted(lines, key=lambda l: not re.search(r"\bdate\b", l, re.I)):  # labelled lines first
        day = parse_date(line, languages, order)
        if day is not None:
            day_line = line
            break
    # the time printed beside the date, then a labelled time, then the first time of day
    for line in [day_line, *sorted(lines, key=lambda l: not re.search(r"\btime\b", l, re.I))]:
        match = _TIME.search(line)
        if match and (":" in match.group(0) or re.search(r"\btime\b", line, re.I)):
            hour, minute, second, half = match.groups()
            hour_value = int(hour)
            if half:
                if hour_value > 12:
                    continue
                hour_value = hour_value % 12 + (12 if half.lower() == "pm" else 0)
            clock = f"{hour_value:02d}:{minute}" + (f":{second}" if second else "")
            break
    return day, clock


def _currency(lines: list[str]) -> str | None:
    for line in lines:
        for token in re.findall(r"[A-Za-z]{2,3}(?=\s?-?\d)|(?<=\()[A-Z]{2,3}(?=\))|[€$£¥₹]|\b[A-Z]{3}\b", line):
            code = CURRENCY_MARKS.get(token.upper())
            if code:
                return code
    return None


def _payment(lines: list[str], total_at: int | None) -> str | None:
    after = lines[total_at + 1 :] if total_at is not None else lines
    for window in (after, lines):
        for line in window:
            for method, pattern in _PAYMENT:
                if pattern.search(line):
                    return method
    return None


# ---------------------------------------------------------------------------- line items

_HEADER_ROLES = {
    "description": re.compile(r"^(?:item|items|description|desc|descr\w*|product|article|particulars|code&desc|name)$", re.I),
    "quantity": re.compile(r"^(?:qty|quantity|qt[yv]|cty|pcs|iss|sale)$", re.I),
    "price": re.compile(r"^(?:price|u/?p|u\.p\.?|s/price|u\.price|unit|rsp|rate|each|@)$", re.I),
    "amount": re.compile(r"^(?:amount|amt|amou\w*|total|amt\(rm\)|amount\(rm\)|rm|value)$", re.I),
}
# a separate money token: an optional currency mark, the number with two decimals, an optional
# trailing minus (a discount) and an optional tax code glued to it ('RM5.60SR', '2.07-')
# other words of a header row: tax code, discount, currency columns, OCR's fragments of them
_HEADER_OTHER = re.compile(r"^(?:tax|code|cod|disc\w*|exc|d|gst|rm|\(rm\)|no|#|s/no|%|\W+)$", re.I)
_MONEY_TOKEN = re.compile(r"^(?P<mark>RM|[$€£]|[A-Z]{3})?(?P<num>-?\d{1,3}(?:,\d{3})*\.\d{2}|-?\d+\.\d{2})(?P<minus>-)?[A-Z]{0,2}$")
_INT_TOKEN = re.compile(r"^\d{1,3}(?:\.\d{1,3})?$")
_ITEM_LABEL = re.compile(
    r"\b(?:sub\s*-?\s*total|subtotal|total|tot|rounding|round\w*|discount|disc|gst|vat|sst|tax|service charge|cash|"
    r"change|tendered|balance|saving\w*|points?|deposit|adj\w*|settled|paid|payment|tips?|supplies|qty\s*:|"
    r"excl\w*|incl\w*|summary)\b",
    re.I,
)
_NAME_WORD = re.compile(r"^[^\W\d_]{2,}(?:[.'&/-][^\W\d_]*)*[.,]?$|^(?:[^\W\d_]\.){2,}[^\W\d_]?\.?$")


def _header_at(lines: list[str], end: int) -> int | None:
    """The index of the item table's header row before `end`, or None."""
    previous: set[str] = set()  # a header may take two rows ('Description' over 'Unit Price ... Amount')
    for index, line in enumerate(lines[:end]):
        roles = _header_roles(line)
        if not roles:
            previous = set()
            continue
        both = roles | previous
        if both & {"amount", "price"} and both & {"description", "quantity"}:
            return index
        previous = roles
    return None


def _header_roles(line: str) -> set[str] | None:
    """The column roles a header row names, or None for a row with digits or a word that heads no
    column ('Vege item' is an item's name, 'Description' or 'Unit Price Amount Tax' a header)."""
    tokens = [t.strip(":()") for t in line.split() if t.strip(":()")]
    if not tokens or any(re.search(r"\d", t) for t in tokens):
        return None
    roles = set()
    unknown = 0
    for token in tokens:
        role = next((r for r, pattern in _HEADER_ROLES.items() if pattern.match(token)), None)
        if role:
            roles.add(role)
        elif not _HEADER_OTHER.match(token):
            unknown += 1
    return roles if roles and unknown <= len(roles) // 2 else None


def _row(line: str) -> dict[str, Any] | None:
    """A table row's numbers and name, or None when it holds no separate amount."""
    tokens = line.split()
    money = [(i, m) for i, t in enumerate(tokens) if (m := _MONEY_TOKEN.match(t))]
    if not money:
        return None
    values = [float(m.group("num").replace(",", "")) * (-1 if m.group("minus") else 1) for _, m in money]
    first = money[0][0]
    if first and tokens[first - 1].endswith(":"):
        return None  # 'Label: 1.00' is a labelled value, not an item
    words = [t for t in tokens[:first] if re.search(r"[^\W\d_]", t) and t.upper() not in CURRENCY_MARKS]
    name = " ".join(words) if any(_NAME_WORD.match(w) for w in words) else None
    counts = [float(t) for t in tokens if _INT_TOKEN.match(t) and not _MONEY_TOKEN.match(t)]
    total = values[-1]
    item: dict[str, Any] = {"name": name, "quantity": None, "unit_price": None, "total": total}
    numbers = [*counts, *values[:-1]]
    for quantity in numbers:
        for price in values[:-1]:
            if price is not quantity and quantity > 0 and abs(quantity * price - total) < 0.015:
                item["quantity"], item["unit_price"] = quantity, price
                return item
    if any(abs(v - total) < 0.005 for v in values[:-1]) and total:
        item["quantity"], item["unit_price"] = 1.0, total
    return item


def _line_items(lines: list[str], total_at: int | None) -> list[dict[str, Any]]:
    if total_at is None:
        return []
    header = _header_at(lines, total_at)
    if header is None:
        return []
    body = [line for line in lines[header + 1 : total_at] if not _header_roles(line)]
    rows: list[tuple[dict[str, Any] | None, str]] = []
    for line in body:
        if _ITEM_LABEL.search(line):
            rows.append((None, ""))  # a labelled line (subtotal, tax...) ends what a row may take as its name
            continue
        rows.append((_row(line), line))
    # an item printed on two rows: a name and its unit price, then the quantity and the line amount
    for index in range(len(rows) - 1):
        row, nxt = rows[index][0], rows[index + 1][0]
        if row and nxt and row["name"] and not nxt["name"] and row["total"] == nxt["unit_price"] and row["quantity"] is None:
            nxt["name"] = row["name"]
            rows[index] = (None, "")
    names_first = None
    for index, (row, _) in enumerate(rows):
        if row and not row["name"]:
            above = rows[index - 1] if index else (None, "")
            names_first = above[0] is None and bool(_text_name(above[1]))
            break
    items = []
    for index, (row, _) in enumerate(rows):
        if row is None:
            continue
        if not row["name"]:
            if names_first:
                row["name"] = _text_name(rows[index - 1][1]) if index and rows[index - 1][0] is None else None
            else:
                parts = []
                for below, text in rows[index + 1 : index + 3]:
                    if below is not None or not _text_name(text):
                        break
                    parts.append(_text_name(text))
                row["name"] = " ".join(parts) or None
        items.append(row)
    return items


def _text_name(line: str) -> str | None:
    """A text-only line that can be an item's name (letters, not a label), else None."""
    line = line.strip()
    if not line or _ITEM_LABEL.search(line) or not any(_NAME_WORD.match(w) for w in line.split()):
        return None
    return line
