"""The default invoice schema filled from a document's layout: labels, their values, the item table.

No templates, no XML: words with boxes (PDFs) are grouped into lines and the lines into cells
(runs of words separated by a wide gap); DOCX/XLSX/HTML/CSV rows give cells directly; plain text
is cut into cells on tabs and runs of spaces. A label finds its value in the rest of its cell, in
the next cell to its right on the same line, or in the cell directly below it. Label vocabularies
are plain data (one table per field, every language together) below; the rules are general.
Imports only the standard library and `blocks.*` (dateparser lazily, through `blocks.amounts`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from blocks.amounts import CURRENCY_MARKS, currency_of, parse_amount, parse_date
from blocks.document import ReadDocument, Word
from blocks.invoice_schema import INVOICE_TYPE_CODES, document_type_name, empty_invoice

# ------------------------------------------------------------------------------- vocabularies
# Label phrases by field, lower case, all languages together. Longer phrases win over shorter
# ones at the same place ('invoice date' is never read as 'invoice'), so labels of things that
# look alike but are not wanted (order date, customer number) are listed under `_ignore`.
LABELS: dict[str, tuple[str, ...]] = {
    "invoice_number": (
        "invoice number", "invoice no", "invoice nr", "invoice #", "invoice id", "invoice num", "inv no", "inv #",
        "rechnungsnummer", "rechnungs-nr", "rechnungsnr", "rechnung nr", "rechnung-nr", "belegnummer", "beleg-nr",
        "gutschriftsnummer", "gutschrift nr",
        "n° de facture", "no de facture", "numéro de facture", "numero de facture", "facture n°", "facture no", "n° facture",
        "factuurnummer", "factuur nr", "factuurnr",
        "número de factura", "numero de factura", "nº de factura", "factura n", "factura nº", "n.º factura",
        "numero fattura", "numero della fattura", "fattura n", "fattura nr", "n. fattura",
        "receipt no", "receipt number", "receipt #", "bill no", "bill number", "document no", "document number",
        "credit note number", "credit note no", "faktura nr", "numer faktury",
    ),
    # document titles: followed by the number on invoices that print 'Invoice 123' or 'Rechnung Nr. 42'
    "title": (
        "invoice", "tax invoice", "commercial invoice", "rechnung", "handelsrechnung", "gutschrift", "rechnungskorrektur",
        "facture", "avoir", "factuur", "creditnota", "factura", "fattura", "credit note", "receipt", "faktura",
    ),
    "issue_date": (
        "invoice date", "date of invoice", "invoice dated", "issue date", "date of issue", "issued at", "issued on", "date issued",
        "rechnungsdatum", "belegdatum", "ausstellungsdatum", "datum", "date", "dated",
        "date de facture", "date de facturation", "date d'émission", "date facture",
        "factuurdatum", "factuur datum", "fecha de factura", "fecha factura", "fecha de emisión", "fecha",
        "data fattura", "data della fattura", "data di emissione", "data", "vom", "du", "del", "data wystawienia",
    ),
    "due_date": (
        "due date", "payment due", "due on", "date due", "pay by", "payable by", "remit until", "payable until", "pay until",
        "fällig am", "fällig", "fälligkeit", "fälligkeitsdatum", "zahlbar bis", "zahlungsziel",
        "échéance", "date d'échéance", "date limite de paiement", "à payer avant le",
        "vervaldatum", "te betalen voor", "vencimiento", "fecha de vencimiento", "scadenza", "data di scadenza",
    ),
    "grand_total": (
        "grand total", "invoice total", "total amount", "total invoice", "total for this invoice", "total incl", "total including vat",
        "gesamtbetrag", "rechnungsbetrag", "bruttobetrag", "bruttosumme", "endbetrag", "gesamtsumme", "rechnungssumme",
        "montant ttc", "total ttc", "total facture", "montant total",
        "totaal", "totaalbedrag", "totaal incl", "importe total", "total factura", "totale", "totale fattura", "importo totale",
        "total", "razem",
    ),
    "due_payable": (
        "amount due", "total due", "balance due", "amount payable", "due payable", "zahlbetrag", "zu zahlen", "zahlbetrag brutto",
        "net à payer", "somme à payer", "reste à payer", "solde à payer", "te betalen", "total a pagar", "importe a pagar",
        "totale da pagare", "netto a pagare", "należność ogółem", "do zapłaty",
    ),
    "tax_total": (
        "tax", "vat", "sales tax", "total tax", "total taxes", "tax total", "vat total", "vat amount", "total vat",
        "mwst", "mehrwertsteuer", "umsatzsteuer", "steuerbetrag", "ust", "total tva", "montant tva", "total taxes", "tva",
        "btw", "btw bedrag", "iva", "total iva", "cuota iva", "totale iva", "imposta",
    ),
    "tax_basis_total": (
        "net total", "total net", "net amount", "total excl", "total excluding vat", "summe netto", "nettobetrag", "nettosumme",
        "rechnungssumme ohne ust", "gesamt netto", "total ht", "montant ht", "exclusief btw", "totaal excl", "base imponible",
        "imponibile", "totale imponibile",
    ),
    "line_total": (
        "subtotal", "sub total", "sub-total", "positionssumme", "zwischensumme", "warenwert", "sous-total", "subtotaal", "subtotale",
    ),
    "seller": (
        "from", "seller", "vendor", "supplier", "sold by", "issued by", "verkäufer", "lieferant", "rechnungssteller", "leistender",
        "vendeur", "fournisseur", "émetteur", "verkoper", "leverancier", "proveedor", "vendedor", "emisor", "fornitore", "venditore",
        "sprzedawca",
    ),
    "buyer": (
        "bill to", "billed to", "invoice to", "sold to", "ship to", "customer", "client", "buyer", "recipient",
        "rechnungsempfänger", "rechnungsadresse", "kunde", "käufer", "leistungsempfänger", "empfänger", "lieferadresse",
        "facturé à", "adresse de facturation", "adresse de livraison", "acheteur", "destinataire",
        "klant", "factuuradres", "afnemer", "cliente", "facturar a", "comprador", "destinatario", "nabywca",
    ),
    "vat_label": (
        "vat", "vat id", "vat no", "vat number", "vat reg", "ust-idnr", "ust-id", "ust.-id.-nr", "ust-id-nr", "ust. id", "ustid",
        "umsatzsteuer-id", "tva", "n° tva", "numéro de tva", "tva intracommunautaire", "btw", "btw-nummer", "btw nr", "iva",
        "p.iva", "partita iva", "nif", "cif", "vat-id",
    ),
    "iban": ("iban",),
    "bic": ("bic", "swift", "swift/bic", "bic/swift", "swift code"),
    "payment_terms": ("payment terms", "terms", "zahlungsbedingungen", "conditions de paiement", "betalingsvoorwaarden",
                      "condiciones de pago", "condizioni di pagamento"),
    "currency": ("currency", "währung", "rechnungswährung", "devise", "monnaie", "valuta", "moneda"),
    "name": ("name", "firma", "company", "nom", "naam", "nombre", "ragione sociale"),
    "_ignore": (
        "order date", "orderdatum", "bestelldatum", "delivery date", "date of delivery", "lieferdatum", "leistungsdatum",
        "liefer- und leistungsdatum", "liefer- bzw. leistungsdatum", "date de livraison", "leverdatum", "fecha de entrega",
        "data di consegna", "training date", "account number", "customer number", "customer id", "kundennummer",
        "klantnummer", "order number", "ordernummer", "order id", "bestellnummer", "auftragsnummer", "page", "seite",
        "invoice summary", "total amount due on", "previous balance", "total taxes", "payment date",
    ),
}

# Words of the item table's header row, by column role.
TABLE_HEADER: dict[str, tuple[str, ...]] = {
    "description": (
        "description", "item", "items", "product", "products", "article", "service", "title", "details", "bezeichnung",
        "beschreibung", "artikel", "artikelbezeichnung", "leistung", "produkt", "désignation", "designation", "libellé",
        "omschrijving", "artikelomschrijving", "descripción", "descripcion", "concepto", "artículo", "descrizione", "articolo",
    ),
    "quantity": ("qty", "quantity", "menge", "anzahl", "quantité", "qté", "aantal", "cantidad", "cant", "quantità", "qta", "hours", "stunden"),
    "price": (
        "price", "unit price", "rate", "preis", "einzelpreis", "einzel", "nettopreis", "prix", "prijs", "precio", "prezzo",
        "unit", "stückpreis", "p.u.",
    ),
    "amount": (
        "amount", "total", "line total", "betrag", "gesamt", "gesamtpreis", "nettobetrag", "summe", "montant", "bedrag",
        "importe", "importo", "totaal", "totale", "subtotal",
    ),
}

# Where an item table ends: a line that starts with one of these and carries an amount.
TABLE_END: tuple[str, ...] = (
    "total", "subtotal", "sub-total", "sum", "net total", "summe", "zwischensumme", "gesamt", "umsatzsteuer", "mwst", "ust",
    "tax", "vat", "taxe", "tva", "btw", "iva", "totaal", "subtotaal", "exclusief", "sous-total", "montant", "importe",
    "base imponible", "imponibile", "totale", "positionssumme", "steuer", "netto", "net", "amount due", "balance",
)

DOCUMENT_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("389", ("selbst ausgestellte rechnung", "self-billed invoice", "self billing invoice", "autofacturation", "autofactura",
             "autofattura", "gutschrift im gutschriftverfahren")),
    ("384", ("rechnungskorrektur", "korrekturrechnung", "corrected invoice", "facture rectificative", "factura rectificativa",
             "fattura correttiva", "gecorrigeerde factuur", "stornorechnung")),
    ("381", ("gutschrift", "credit note", "creditnote", "credit memo", "avoir", "facture d'avoir", "creditnota", "creditfactuur",
             "nota de crédito", "nota di credito", "abono")),
    ("380", ("invoice", "rechnung", "facture", "factuur", "factura", "fattura", "receipt", "bill", "quittung", "faktura")),
)

LEGAL_FORMS: tuple[str, ...] = (
    "gmbh", "ag", "kg", "ohg", "ug", "e.k.", "gbr", "ltd", "ltd.", "limited", "inc", "inc.", "llc", "corp", "corp.", "corporation",
    "plc", "llp", "b.v.", "bv", "n.v.", "nv", "sarl", "s.a.r.l.", "sas", "s.a.s.", "sa", "s.a.", "eurl", "sl", "s.l.", "s.p.a.",
    "spa", "s.r.l.", "srl", "pvt", "a.g.", "co.", "company", "gmbh & co. kg", "sp. z o.o.", "oy", "ab", "as", "a/s", "aps",
)

_VAT_ID = re.compile(
    r"(?<![A-Z0-9])(?P<vat>(?:AT ?U|BE ?[01]?|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|GB|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK|XI|CHE)"
    r"[ .\-]?[0-9A-Z](?:[ .\-]?[0-9A-Z]){6,13})(?![A-Z0-9])"
)
_IBAN = re.compile(r"(?<![A-Z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30})")
_BIC = re.compile(r"(?<![A-Z0-9])([A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?)(?![A-Z0-9])")
# 'Nr.', 'No.', 'n°', '#' before a number inside a title ('Rechnung des Versicherers Nr. 0815')
_NUMBER_MARK = re.compile(r"(?<!\w)(?:nr|no|n°|nº|num|number|nummer|numéro|numero)\.?\s*:?\s*(\S+)|#\s*(\S+)", re.IGNORECASE)
_FILLER = re.compile(r"^(?:[:#.\-–)]|n[°ºo]\.?|nr\.?|no\.?|num\.?|number|nummer|numéro|numero|nº|\(\d{3}\)|\s)+", re.IGNORECASE)


def _fold(text: str) -> str:
    return " ".join(text.lower().replace("’", "'").split())


def _label_regex() -> tuple[re.Pattern[str], dict[str, str]]:
    owner: dict[str, str] = {}
    for field, phrases in LABELS.items():
        for phrase in phrases:
            owner.setdefault(_fold(phrase), field)
    alternation = "|".join(re.escape(p).replace(r"\ ", r"\s*") for p in sorted(owner, key=len, reverse=True))
    return re.compile(rf"(?<![\w])(?:{alternation})(?![^\W\d_])\.?", re.IGNORECASE), owner


_LABEL_RE, _LABEL_OWNER = _label_regex()


# ------------------------------------------------------------------------------------ cells

@dataclass
class Cell:
    text: str
    x0: float
    top: float
    x1: float
    bottom: float
    page: int
    line: int  # index of its line in the document


def _cells_from_words(words: list[Word]) -> list[list[Cell]]:
    """Words (in reading order) grouped into lines, each line cut into cells at wide gaps."""
    lines: list[list[Word]] = []
    for word in words:
        if lines:
            last = lines[-1][-1]
            mid, last_mid = (word.top + word.bottom) / 2, (last.top + last.bottom) / 2
            h = max(min(word.bottom - word.top, last.bottom - last.top), 1.0)
            if word.page == last.page and abs(mid - last_mid) <= 0.4 * h and word.x0 >= last.x0:
                lines[-1].append(word)
                continue
        lines.append([word])
    result: list[list[Cell]] = []
    for index, line in enumerate(lines):
        cells: list[Cell] = []
        for word in line:
            h = max(word.bottom - word.top, 1.0)
            if cells and word.x0 - cells[-1].x1 <= 0.75 * h:
                c = cells[-1]
                c.text += " " + word.text
                c.x1 = max(c.x1, word.x1)
                c.top = min(c.top, word.top)
                c.bottom = max(c.bottom, word.bottom)
            else:
                cells.append(Cell(word.text, word.x0, word.top, word.x1, word.bottom, word.page, index))
        result.append(cells)
    return result


def _cells_from_rows(rows: list[list[str]], start: int) -> list[list[Cell]]:
    """Table rows (or text lines cut into cells): column index as x, row index as y."""
    result: list[list[Cell]] = []
    for r, row in enumerate(rows):
        cells = [
            Cell(" ".join(str(text).split()), float(c * 10), float(start + r) * 10, float(c * 10 + 9), float(start + r) * 10 + 8, 1,
                 start + r)
            for c, text in enumerate(row)
            if str(text).strip()
        ]
        result.append(cells)
    return result


def _text_rows(text: str) -> list[list[str]]:
    return [re.split(r"\t|\s{3,}| \| ", line.strip()) for line in text.splitlines()]


# ----------------------------------------------------------------------------------- labels

@dataclass
class Hit:
    field: str
    cell: Cell
    rest: str  # text of the cell after the label
    start: int


def _find_labels(lines: list[list[Cell]]) -> list[Hit]:
    hits: list[Hit] = []
    for line in lines:
        for cell in line:
            for m in _LABEL_RE.finditer(cell.text):
                field = _LABEL_OWNER.get(_fold(m.group(0).rstrip(".")), _LABEL_OWNER.get(_fold(m.group(0))))
                if field is None:
                    continue
                hits.append(Hit(field, cell, cell.text[m.end():].strip(), m.start()))
    return hits


class _Layout:
    def __init__(self, lines: list[list[Cell]]):
        self.lines = lines

    def right_of(self, cell: Cell, limit: int = 3) -> list[Cell]:
        line = self.lines[cell.line]
        return [c for c in line if c.x0 >= cell.x1 - 0.5][:limit]

    def below(self, cell: Cell) -> Cell | None:
        """The cell directly under `cell` (overlapping it horizontally) on the next lines."""
        height = max(cell.bottom - cell.top, 1.0)
        for line in self.lines[cell.line + 1 : cell.line + 4]:
            if not line or line[0].page != cell.page or line[0].top - cell.bottom > 2.5 * height:
                return None
            for c in line:
                if c.x0 < cell.x1 + 2 and c.x1 > cell.x0 - 2:
                    return c
        return None

    def candidates(self, hit: Hit) -> list[str]:
        """Value texts for a label: rest of its cell, the cells to its right, the cell below."""
        found: list[str] = []
        rest = _FILLER.sub("", hit.rest).strip() if hit.rest else ""
        if rest:
            found.append(rest)
        right = [c for c in self.right_of(hit.cell) if c is not hit.cell]
        for c in right:
            if _LABEL_RE.fullmatch(c.text.rstrip(" :")) and not _NUMBER_MARK.match(c.text):
                break  # the next label, alone in its cell: its own value follows it
            text = _FILLER.sub("", c.text).strip()
            if text:
                found.append(text)
        if not rest and (below := self.below(hit.cell)) is not None:
            found.append(_FILLER.sub("", below.text).strip())
        return found


def _value_token(text: str) -> str | None:
    """An identifier (invoice number) at the start of `text`: has a digit, not a date or amount."""
    parts = text.split()
    token = parts[0] if parts else ""
    if len(parts) > 1 and re.fullmatch(r"[A-Za-z]{1,2}", token) and re.match(r"\d", parts[1]):
        # a series letter printed apart from its number ('F 1234K20/1234/12', 'A 2021-17')
        token = f"{token} {parts[1]}"
    token = token.strip(",;:()").lstrip("#")
    if not token or len(token) > 40 or not any(ch.isdigit() for ch in token):
        return None
    if parse_date(token) and re.fullmatch(r"[\d./-]+", token):
        return None
    if _LABEL_RE.fullmatch(token):
        return None
    return token


# ------------------------------------------------------------------------------------ fill

def fill_invoice(doc: ReadDocument, languages: list[str] | None = None) -> dict[str, Any]:
    """An Invoice-shaped dict (every key present) with what the document's layout gives."""
    result = empty_invoice()
    lines: list[list[Cell]] = []
    if doc.words:
        lines = _cells_from_words(doc.words)
    else:
        seen: set[str] = set()
        for table in doc.tables:
            lines.extend(_cells_from_rows(table, len(lines)))
            seen.update(" ".join(" ".join(str(c) for c in row).split()) for row in table)
        # the text repeats the tables' rows (tab-separated): only the other lines are added
        rest = [row for row in _text_rows(doc.text or "") if " ".join(" ".join(row).split()) not in seen]
        lines.extend(_cells_from_rows(rest, len(lines)))
    if not lines and not doc.text:
        return result
    text = doc.text or "\n".join(" ".join(c.text for c in line) for line in lines)
    layout = _Layout(lines)
    hits = _find_labels(lines)
    by_field: dict[str, list[Hit]] = {}
    header_lines = {line[0].line for line in lines if line and _is_header(line) is not None}
    for hit in hits:
        if hit.cell.line in header_lines and hit.field not in ("invoice_number", "title"):
            continue  # 'Total', 'VAT' as column names of the item table
        by_field.setdefault(hit.field, []).append(hit)

    currency = _currency(text, by_field, layout)
    result["currency"] = currency
    order = "MDY" if currency == "USD" or _us_dates(text) else None

    number_hit = None
    ranked = sorted(
        by_field.get("invoice_number", []) + by_field.get("title", []),
        key=lambda h: (_in_sentence(h), h.field != "invoice_number"),
    )
    for hit in ranked:
        for value in layout.candidates(hit)[:2]:
            marked = _NUMBER_MARK.search(value)
            if (token := _value_token(value) or (_value_token(marked.group(1) or marked.group(2)) if marked else None)) is not None:
                result["invoice_number"] = token
                number_hit = hit
                break
        if number_hit:
            break

    result["issue_date"] = _labelled_date(by_field.get("issue_date", []), layout, languages, order)
    if result["issue_date"] is None and number_hit is not None:
        line_text = " ".join(c.text for c in lines[number_hit.cell.line] if c.x0 >= number_hit.cell.x0)
        result["issue_date"] = parse_date(line_text, languages, order)
    # Unlabelled guesses (the first date, the top-most line as the seller) only for a document
    # that shows itself as an invoice: a letter or a spreadsheet gets no made-up invoice fields.
    invoice_like = number_hit is not None or _document_type(text) is not None or any(
        by_field.get(field) for field in ("grand_total", "due_payable")
    )
    if result["issue_date"] is None and invoice_like:
        result["issue_date"] = parse_date(text[:3000], languages, order)
    result["due_date"] = _labelled_date(by_field.get("due_date", []), layout, languages, order)

    totals = result["totals"]
    for field in ("grand_total", "due_payable", "tax_total", "tax_basis_total", "line_total"):
        totals[field] = _labelled_amount(by_field.get(field, []), layout, last=field in ("grand_total", "due_payable"))
    if totals["grand_total"] is None:
        totals["grand_total"] = totals["due_payable"]

    code = _document_type(text)
    result["document_type_code"] = code
    result["document_type"] = document_type_name(code)
    if code == "381" and (totals["grand_total"] or 0) < 0:
        # a credit note's amounts are positive in EN 16931: the type carries the sign
        for key, value in totals.items():
            if isinstance(value, float | int):
                totals[key] = abs(value)

    buyer_lines = _buyer_lines(by_field.get("buyer", []), layout)
    result["seller"]["name"] = _seller_name(by_field, layout, buyer_lines, guess=invoice_like)
    result["buyer"]["name"] = _buyer_name(by_field, layout) or _window_buyer(layout)
    seller_vat, buyer_vat = _vat_ids(lines, buyer_lines)
    result["seller"]["vat_id"], result["buyer"]["vat_id"] = seller_vat, buyer_vat
    result["payment"]["iban"] = _iban(text)
    result["payment"]["bic"] = _bic(by_field.get("bic", []), layout)
    result["line_items"] = _line_items(lines)
    return result


def _in_sentence(hit: Hit) -> bool:
    """A label inside running text ('... und Belegnummer 123 angeben') is a weaker witness."""
    return len(hit.cell.text[: hit.start].split()) > 2


def _us_dates(text: str) -> bool:
    """True when a numeric date in the text can only be month first (its second number is over 12)."""
    for m in re.finditer(r"(?<![\d.])(\d{1,2})/(\d{1,2})/((?:19|20)\d\d)(?!\d)", text):
        if int(m.group(2)) > 12 and int(m.group(1)) <= 12:
            return True
    return False


def _labelled_date(hits: list[Hit], layout: _Layout, languages: list[str] | None, order: str | None) -> str | None:
    for hit in hits:
        for value in layout.candidates(hit)[:2]:
            if (found := parse_date(value, languages, order)) is not None:
                return found
    return None


def _amount_of(text: str) -> float | None:
    value = parse_amount(text)
    if value is None:
        # '29.99 € TTC', '571.04 €' at the end of a cell: the number with its currency mark
        m = re.search(r"[-−]?\s*[€$£]?\s*\d[\d.,' ]*\d(?:\s*[€$£])?|[-−]?\d+", text)
        if m and not re.search(r"[^\W\d_]{4,}", text[: m.start()]):
            value = parse_amount(m.group(0))
    return value


# A rate printed between a tax label and its amount ('VAT 19%: 22.80', 'MwSt. (7 %) 1,40').
_RATE_PREFIX = re.compile(r"^\s*\(?\s*\d{1,2}(?:[.,]\d{1,3})?\s*%\s*\)?\s*")


def _labelled_amount(hits: list[Hit], layout: _Layout, last: bool) -> float | None:
    """The amount after a label: in the rest of its cell, else the last amount of the cells to its
    right before the next label, else the amount below it. The label's last occurrence wins for
    totals (subtotals come first). An amount beside its label outranks one read below a label: a
    label with its value under it heads a column ('VAT amount' over a VAT breakdown's rows), whose
    first row is one rate's share, not the document's total."""
    found: list[tuple[tuple[bool, int], float]] = []
    for hit in hits:
        value, beside = None, True
        rest = _RATE_PREFIX.sub("", hit.rest)  # 'VAT 19 %: 22.80': the rate is part of the label
        if rest and not _LABEL_RE.match(_FILLER.sub("", rest)):
            value = _amount_of(rest.lstrip(":").strip())
        if value is None and not rest.strip(" :*"):
            for cell in layout.right_of(hit.cell, limit=8):
                if cell is hit.cell:
                    continue
                if _LABEL_RE.match(cell.text) and parse_amount(cell.text) is None:
                    break
                amount = parse_amount(cell.text)
                if amount is not None:
                    value = amount
        if value is None and not rest.strip(" :*"):
            below = layout.below(hit.cell)
            if below is not None and (amount := parse_amount(below.text)) is not None:
                value, beside = amount, False
        if value is not None:
            found.append(((beside, _specificity(hit)), value))
    if not found:
        return None
    best = max(s for s, _ in found)
    values = [v for s, v in found if s == best]
    return values[-1] if last else values[0]


def _specificity(hit: Hit) -> int:
    """Longer labels are more specific ('grand total' over 'total')."""
    return len(hit.cell.text) - len(hit.rest) - hit.start


def _currency(text: str, by_field: dict[str, list[Hit]], layout: _Layout) -> str | None:
    for hit in by_field.get("currency", []):
        for value in layout.candidates(hit)[:2]:
            if (code := currency_of(value)) is not None:
                return code
    counts: dict[str, int] = {}
    for m in re.finditer(r"(?<![A-Za-z])([A-Z]{3}|Rs\.?|US\$)(?![A-Za-z])|([€$£¥₹])", text):
        code = CURRENCY_MARKS.get((m.group(1) or m.group(2)).upper())
        if code:
            counts[code] = counts.get(code, 0) + 1
    if re.search(r"\b(?:US|U\.S\.) Dollars?\b", text, re.IGNORECASE):
        counts["USD"] = counts.get("USD", 0) + 5
    return max(counts, key=lambda c: counts[c]) if counts else None


def _document_type(text: str) -> str | None:
    """The code of the first document-type word (the title); a more specific phrase (corrected,
    self-billed) right after it refines it. German compounds count ('Handelsrechnung'). A code
    printed after the title on its line, as e-invoice viewers render BT-3 ('Baurechnung (204)
    Nr. 181301674', 'Rechnung des Versicherers (575)'), is the document's own word and wins."""
    head = _fold(text[:4000])
    found: list[tuple[int, int, str, str]] = []
    for rank, (code, words) in enumerate(DOCUMENT_TYPES):
        for word in words:
            prefix = r"\w*" if word in ("rechnung", "gutschrift") else ""
            m = re.search(rf"(?<!\w){prefix}{re.escape(word)}(?!\w)", head)
            if m:
                found.append((m.start(), rank, code, m.group(0)))
    if not found:
        return None
    first = min(found)
    for line in text[:4000].splitlines():
        folded = _fold(line)
        if (title := re.search(rf"(?<!\w){re.escape(first[3])}(?!\w)", folded)) is not None:
            for printed in re.finditer(r"\((\d{2,3})\)", folded[title.start() : title.start() + 120]):
                if printed.group(1) in INVOICE_TYPE_CODES:
                    return printed.group(1)
            break
    near = [f for f in found if f[0] - first[0] <= 80 and f[1] < first[1]]
    return min(near, key=lambda f: f[1])[2] if near else first[2]


def _buyer_lines(hits: list[Hit], layout: _Layout) -> set[int]:
    """Lines of the buyer's address block: under a buyer label, until a blank gap."""
    lines: set[int] = set()
    for hit in hits:
        if hit.start > 2:
            continue  # the label must open its cell ('Bill to:', 'Kunde')
        lines.add(hit.cell.line)
        height = max(hit.cell.bottom - hit.cell.top, 1.0)
        bottom = hit.cell.bottom
        for line in layout.lines[hit.cell.line + 1 : hit.cell.line + 9]:
            column = [c for c in line if c.x1 > hit.cell.x0 - 5 and c.x0 < hit.cell.x0 + 200]
            if line and line[0].page != hit.cell.page:
                break
            if not column:
                continue
            if column[0].top - bottom > 2.6 * height:
                break
            if any(h.cell.line == column[0].line and h.field in ("seller",) for h in hits):
                break
            lines.add(column[0].line)
            bottom = column[0].bottom
    return lines


def _buyer_name(by_field: dict[str, list[Hit]], layout: _Layout) -> str | None:
    """The name opening the buyer's block: after its label in the same cell, a 'Name:' line of
    the block, or the line under the label."""
    for hit in by_field.get("buyer", []):
        if hit.start > 2:
            continue
        rest = hit.rest.strip(" :/")
        while rest and (label := _LABEL_RE.match(rest)):  # 'Rechnungsempfänger/Leistungsempfänger'
            rest = rest[label.end():].strip(" :/")
        rest = _NAME_LABEL.sub("", rest)
        if rest:
            if (name := _clean_name(rest)):
                return name
            continue  # the label's own line holds something else ('Your order AB321')
        for named in [h for h in by_field.get("name", []) if 0 < h.cell.line - hit.cell.line <= 4 and h.start == 0]:
            for value in layout.candidates(named)[:1]:
                if (name := _clean_name(value)):
                    return name
        below = layout.below(hit.cell)
        if below is not None and not _LABEL_RE.match(below.text) and (name := _clean_name(_NAME_LABEL.sub("", below.text))):
            return name
    return None


_NAME_LABEL = re.compile(r"^(?:name|nom|naam|nombre|nome)\s*:\s*", re.IGNORECASE)

# A letter's return-address line ('Acme GmbH | Europa-Allee 1980 | 60486 Frankfurt'): at least
# three parts split by a bar or a dot, one holding a postal code. ' - ' is left out: letterheads
# join their parts with it too, with no recipient under them.
_RETURN_SPLIT = re.compile(r"\s*[|●•·]\s*")
_POSTCODE = re.compile(r"(?<!\d)\d{4,5}(?!\d)")
_SALUTATION = re.compile(
    r"^(?:herrn?|frau|firma|an|mr\.?|mrs\.?|ms\.?|messrs\.?|monsieur|madame|mme\.?|m\.|dhr\.?|mevr\.?|sr\.?|sra\.?|sig\.?|sig\.ra)$",
    re.IGNORECASE,
)


def _runs(line: list[Cell]) -> list[list[Cell]]:
    """A line's cells in runs set close together (a gap under three character heights): a
    return-address line's parts and their separators are read as cells of their own."""
    runs: list[list[Cell]] = []
    for cell in line:
        if runs and cell.x0 - runs[-1][-1].x1 < 3 * max(cell.bottom - cell.top, 1.0):
            runs[-1].append(cell)
        else:
            runs.append([cell])
    return runs


def _window_buyer(layout: _Layout) -> str | None:
    """The recipient under a return-address line, as window envelopes print it (DIN 5008, and
    most European business letters): with no buyer label on the page, the first line under that
    small sender line, in its column and past a salutation ('Herr', 'Mrs'), names the buyer."""
    lines = [line for line in layout.lines if line]
    if not lines:
        return None
    page = lines[0][0].page
    for line in [line for line in lines if line[0].page == page][:30]:
        for run in _runs(line):
            cell = run[0]
            parts = [part for part in _RETURN_SPLIT.split(" ".join(c.text for c in run).strip(" ,")) if part]
            if len(parts) < 3 or not any(_POSTCODE.search(part) for part in parts):
                continue
            height = max(cell.bottom - cell.top, 1.0)
            bottom = cell.bottom
            for below in layout.lines[cell.line + 1 : cell.line + 6]:
                column = [c for c in below if c.x0 < cell.x0 + 60 and c.x1 > cell.x0 - 40]
                if not column:
                    continue
                if column[0].page != page or column[0].top - bottom > 4 * height:
                    break
                text, bottom = column[0].text.strip(), column[0].bottom
                if _SALUTATION.match(text):
                    continue
                name = _clean_name(text)
                return name if name and not re.search(r"\d", name) and not _LABEL_RE.match(text) else None
    return None


def _clean_name(text: str) -> str | None:
    parts = re.split(r"\s+[-–−|●•·]\s+|\s*[|●•]\s*", text)
    name = parts[0].strip(" ,;:")
    words = name.split()
    for i, word in enumerate(words[1:], start=1):
        tail = words[i + 1 :]
        if word.lower().strip(",;:") in LEGAL_FORMS and tail and tail[0].lower().strip(",;:") not in LEGAL_FORMS and (
            len(tail) > 2 or not tail[0][:1].isupper()
        ):
            # 'Free SAS au capital de …' → 'Free SAS'; a short capitalised rest stays ('Kunden AG Mitte')
            name = " ".join(words[: i + 1]).strip(",;: ")
            break
    # a document title printed beside the name ('Amazon Web Services Invoice')
    name = re.sub(r"\s+(?:invoice|rechnung|facture|factuur|factura|fattura|receipt)\s*$", "", name, flags=re.IGNORECASE)
    if len(name) < 2 or not re.search(r"[^\W\d_]{2}", name) or _LABEL_RE.fullmatch(name):
        return None
    if parse_date(name) or parse_amount(name) is not None or "@" in name or "www." in name.lower():
        return None
    return name


def _has_legal_form(text: str) -> bool:
    words = [w.strip(",;:()") for w in _fold(text).split()]
    return any(w in LEGAL_FORMS for w in words[1:]) or any(f in _fold(text) for f in (" gmbh", " b.v.", " s.a.", " ltd"))


def _seller_name(by_field: dict[str, list[Hit]], layout: _Layout, buyer_lines: set[int], guess: bool = True) -> str | None:
    # 1. a seller label: its value, or a 'Name:' line of the block under it
    for hit in by_field.get("seller", []):
        if hit.start > 2:
            continue
        rest = hit.rest.strip(" :")
        if rest and (name := _clean_name(rest)):
            return name
        names = [h for h in by_field.get("name", []) if 0 < h.cell.line - hit.cell.line <= 4 and h.start == 0]
        for h in names:
            for value in layout.candidates(h)[:1]:
                if (name := _clean_name(value)):
                    return name
        below = layout.below(hit.cell)
        if below is not None and not _LABEL_RE.match(below.text) and (name := _clean_name(below.text)):
            return name
    # 2. a company name (with a legal form) outside the buyer block, top-most first
    lines = [line for line in layout.lines if line]  # a document can start with empty lines
    first_page = [line for line in lines if line[0].page == lines[0][0].page] if lines else []
    candidates: list[Cell] = []
    for line in first_page:
        if line[0].line in buyer_lines:
            continue
        for cell in line:
            if _has_legal_form(cell.text.split(" - ")[0]) and not _LABEL_RE.match(cell.text):
                candidates.append(cell)
    for cell in candidates:
        if (name := _clean_name(cell.text)):
            return name
    # 3. the top-most line that reads like a name
    for line in first_page[:6] if guess else []:
        if line[0].line in buyer_lines:
            continue
        for cell in line:
            if _LABEL_RE.match(cell.text) and _LABEL_OWNER.get(_fold(_LABEL_RE.match(cell.text).group(0))) == "title":
                rest = cell.text[_LABEL_RE.match(cell.text).end():].strip()
                if rest:
                    continue
            if not _LABEL_RE.match(cell.text) and (name := _clean_name(cell.text)):
                return name
    return None


def _vat_ids(lines: list[list[Cell]], buyer_lines: set[int]) -> tuple[str | None, str | None]:
    seller = buyer = None
    for line in lines:
        line_text = " ".join(c.text for c in line)
        for m in _VAT_ID.finditer(line_text.upper()):
            raw = m.group("vat")
            vat = re.sub(r"[ .\-]", "", raw)
            if sum(ch.isdigit() for ch in vat) < 7 or sum(ch.isalpha() for ch in vat[2:]) > 3 or _iban_valid(vat):
                continue
            before = _fold(line_text[: m.start()])
            is_buyer = line[0].line in buyer_lines or re.search(
                r"client|customer|kunde|käufer|buyer|acheteur|klant|cliente|afnemer|empfänger", before
            )
            if is_buyer:
                buyer = buyer or vat
            else:
                seller = seller or vat
    return seller, buyer


def _iban_valid(candidate: str) -> bool:
    iban = candidate.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", iban):
        return False
    digits = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def _iban(text: str) -> str | None:
    for m in _IBAN.finditer(text.upper()):
        raw = m.group(1).replace(" ", "")
        # the match may run into the next word: try the longest valid prefix
        for end in range(len(raw), 14, -1):
            if _iban_valid(raw[:end]):
                return raw[:end]
    return None


def _bic(hits: list[Hit], layout: _Layout) -> str | None:
    for hit in hits:
        for value in layout.candidates(hit)[:2]:
            m = _BIC.match(value.strip(" :").upper())
            if m and value.strip(" :")[:8].isupper():
                return m.group(1)
    return None


# ------------------------------------------------------------------------------- line items

_ROLE_ORDER = ("amount", "price", "quantity", "description")
_HEADER_WORDS: dict[str, str] = {}
for _role in reversed(_ROLE_ORDER):
    for _word in TABLE_HEADER[_role]:
        _HEADER_WORDS[_word] = _role
_HEADER_CACHE: dict[str, str | None] = {}


def _header_role(text: str) -> str | None:
    """The column role of a header cell: the whole cell as a phrase, else its strongest word."""
    if text in _HEADER_CACHE:
        return _HEADER_CACHE[text]
    folded = _fold(text).rstrip(".:")
    role = _HEADER_WORDS.get(folded)
    if role is None and len(folded) <= 40:
        roles = {_HEADER_WORDS.get(t.strip(".")) for t in re.split(r"[^\w.]+", folded)} - {None}
        role = next((r for r in _ROLE_ORDER if r in roles), None)
    if len(_HEADER_CACHE) < 4096:
        _HEADER_CACHE[text] = role
    return role


def _is_header(line: list[Cell]) -> dict[str, list[Cell]] | None:
    roles: dict[str, list[Cell]] = {}
    for cell in line:
        if any(ch.isdigit() for ch in cell.text) and not re.search(r"\(%\)", cell.text):
            return None
        role = _header_role(cell.text)
        if role:
            roles.setdefault(role, []).append(cell)
    if len(roles) >= 2 and ("amount" in roles or "price" in roles) and ("description" in roles or "quantity" in roles):
        return roles
    return None


def _line_items(lines: list[list[Cell]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        roles = _is_header(line) if line else None
        if roles is None:
            index += 1
            continue
        page = line[0].page
        height = max(line[0].bottom - line[0].top, 1.0)
        # header cells on the lines just above and below (two-line headers) join the columns
        for near in lines[max(0, index - 2) : index + 3]:
            if near is line or not near or near[0].page != page or abs(near[0].top - line[0].top) > 2.2 * height:
                continue
            for cell in near:
                role = _header_role(cell.text)
                if role and not any(ch.isdigit() for ch in cell.text):
                    roles.setdefault(role, []).append(cell)
        amount_cols = roles.get("amount") or roles.get("price") or []
        amount_col = max(amount_cols, key=lambda c: c.x1)
        price_cols = [c for c in roles.get("price", []) if c is not amount_col]
        index += 1
        block: list[list[Cell]] = []
        while index < len(lines):
            row = lines[index]
            if not row or row[0].page != page or _is_header(row) is not None:
                break
            first = _fold(row[0].text)
            has_amount = any(parse_amount(c.text) is not None for c in row)
            if has_amount and any(
                first == w or first.startswith((w + " ", w + ":")) or (len(w) >= 6 and first.startswith(w)) for w in TABLE_END
            ):
                break
            block.append(row)
            index += 1
        for row_index, row in enumerate(block):
            money = [c for c in row if c.x1 > amount_col.x0 - 15 and parse_amount(c.text) is not None]
            if not money:
                continue
            cell = max(money, key=lambda c: c.x1)
            item = {
                "line_id": None, "name": None, "seller_item_id": None, "quantity": None, "unit_code": None,
                "net_unit_price": None, "line_total": parse_amount(cell.text), "tax_rate": None,
            }
            item["name"] = _column_text(block, row_index, roles.get("description", []))
            if (q := _column_number(row, roles.get("quantity", []))) is not None:
                item["quantity"] = q
            if (p := _column_number(row, price_cols)) is not None:
                item["net_unit_price"] = p
            for c in row:
                if m := re.fullmatch(r"(\d{1,2}(?:[.,]\d+)?)\s?%", c.text.strip()):
                    item["tax_rate"] = parse_amount(m.group(1))
            items.append(item)
    return items


def _column_text(block: list[list[Cell]], row_index: int, columns: list[Cell]) -> str | None:
    if not columns:
        return None
    col = columns[0]
    for offset in (0, -1, -2, 1):
        r = row_index + offset
        if 0 <= r < len(block):
            texts = [c.text for c in block[r] if c.x1 > col.x0 - 20 and c.x0 < col.x1 + 150 and parse_amount(c.text) is None]
            if texts:
                return texts[0]
    return None


def _column_number(row: list[Cell], columns: list[Cell]) -> float | None:
    for col in columns:
        for c in row:
            if c.x1 > col.x0 - 10 and c.x0 < col.x1 + 10:
                m = re.match(r"-?[\d.,']+", c.text.strip())
                if m and (v := parse_amount(m.group(0))) is not None:
                    return v
    return None
