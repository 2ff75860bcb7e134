"""Where each value the embedded extractor filled was read, and how sure it is (blocks.provenance).

Runs in the parse worker right after the fields are filled (`blocks.parsing.parse_document`),
because the words with their boxes live there and never travel to the batch process. One
function, `provenance_of`, covers every path by what the fields came from:

- **XML** (`xml`, `embedded-xml`): the element each value came from is declared by
  `blocks.einvoice` (`xml_path`, match 'declared', confidence 1.0). For XML embedded in a PDF
  the printed value is also looked up in the page text, for its page, text and box.
- **template** (`template:<file>`): `template_field` is the template's output key (rows of a
  `lines` block as `lines.<group>`); the value is located in the text.
- **layout and the rest** (`layout`, receipts, …): the value is located in the text; among its
  first occurrences the one a label of its field stands next to is taken.
- **model** (`model:<name>`): a model extractor's answer, located in the text the model was sent
  (its first occurrence), with the box of its words; confidence is the text match times OCR.
  Called in the batch process with the words the text reading brought back
  (`Extraction.words`), since the model answers after the parse worker is done.

Locating is `blocks.provenance`'s text search on the page texts. A located value on a page
with positioned words (PDFium's, in PDF points, or OCR's, in pixels) gets a `box`: the union of
the words whose text, whitespace and case ignored, is the located text. XLSX values get the
`sheet` and `cell` of the table cell that holds the located text.

Confidence (see `blocks.provenance` for the table) combines how the value was found with how
the text matched, times the OCR score of the words under the box.

The work is bounded: only values the fields hold are located (at most `MAX_VALUES`), a value's
occurrences are looked at up to `OCCURRENCES`, and a page's words are indexed only when a value
is found on it; a 2,000-page document costs its fields, not its pages.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

from blocks import sniff
from blocks.document import PageSize, ReadDocument, Word
from blocks.provenance import Box, PageIndex, Provenance, to_json

# Confidence factors (blocks.provenance's docstring explains them).
LABELLED = 1.0  # a label of the field stands left of the value on its line, just above it, or heads its column
UNLABELLED = 0.5  # no label next to it: a guess from position or pattern (the top line as merchant, …)
TEMPLATE_UNLOCATED = 0.8  # a template's value not found in the text (its issuer, a static or rewritten value)

# Values located per document at most; later ones get no provenance (a 2,000-page statement's items).
MAX_VALUES = 5000
# Occurrences of one value weighed for its label (the layout's choice), and for a table row's cell.
OCCURRENCES = 8
ROW_OCCURRENCES = 3

# Label vocabularies (blocks.layout.LABELS keys) by field path; '[]' stands for a list's rows.
FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "invoice_number": ("invoice_number", "title"),
    "issue_date": ("issue_date",),
    "due_date": ("due_date",),
    "currency": ("currency",),
    "totals.grand_total": ("grand_total", "due_payable"),
    "totals.due_payable": ("due_payable",),
    "totals.tax_total": ("tax_total",),
    "totals.tax_basis_total": ("tax_basis_total",),
    "totals.line_total": ("line_total",),
    "seller.name": ("seller", "name"),
    "buyer.name": ("buyer", "name"),
    "seller.vat_id": ("vat_label",),
    "buyer.vat_id": ("vat_label",),
    "payment.iban": ("iban",),
    "payment.bic": ("bic",),
    "payment.terms": ("payment_terms",),
    # the receipt schema (blocks.receipt_schema)
    "line_items.tax_rate": ("tax_total",),  # a column headed 'VAT', 'MwSt', 'TVA'…
    "merchant_name": ("seller", "name"),
    "date": ("issue_date",),
    "total": ("grand_total", "due_payable"),
    "tax": ("tax_total",),
}
# Table columns (blocks.layout.TABLE_HEADER roles) by a row's key: the header heads the value.
COLUMN_ROLES: dict[str, str] = {
    "name": "description", "quantity": "quantity", "net_unit_price": "price", "unit_price": "price",
    "line_total": "amount", "total": "amount",
}
# Codes that are rarely printed as such ('380', 'C62', 'S', a row's '1'): not searched, a match
# would be a coincidence. An e-invoice still declares their element.
NOT_SEARCHED = frozenset({"syntax", "profile", "document_type_code", "unit_code", "category", "line_id"})
# Keys whose value, in a row, marks where the row ends (the next row's values follow it).
_ROW_END_KEYS = ("line_total", "total", "amount")

_INVISIBLE = re.compile(r"[\s\x00\x02\u00ad\u200b\ufeff\ufffe]+")


def provenance_of(document: ReadDocument, outcome: Any, data: bytes | None = None,
                  passwords: list[str] | None = None, warnings: list[str] | None = None) -> dict[str, Any] | None:
    """`outcome.fields`' structure with each value's provenance as JSON (None where not found).

    `outcome` is `blocks.field_paths.FieldsOutcome` (fields, source, declared: what the extractor
    declared, e.g. an e-invoice's element paths). `data` lets a PDF read without words (a matched
    template) have the words of the pages its values are on read now, for their boxes.
    Provenance is an addition: if it cannot be worked out, the fields stand without it and
    `warnings` says so.
    """
    try:
        return _provenance(document, outcome.fields, outcome.source or "layout", outcome.declared, data, passwords)
    except Exception as exc:  # noqa: BLE001 - a value's whereabouts must never fail its document
        if warnings is not None:
            warnings.append(f"where the values were read could not be worked out: {type(exc).__name__}: {exc}")
        return None


def _provenance(document: ReadDocument, fields: dict[str, Any], source: str, declared: Any,
                data: bytes | None, passwords: list[str] | None) -> dict[str, Any]:
    finder = _Finder(document, source, data, passwords)
    leaves = finder.tree(fields, declared)
    if finder.kind != "layout":  # placed after the search: a PDF read without words reads its pages' words once
        finder.read_missing_words({leaf.found.page for leaf in _leaves(leaves) if leaf.found and leaf.found.page})
        for leaf in _leaves(leaves):
            if leaf.found is not None:
                leaf.found, leaf.ocr = finder.place(leaf.found)
    return to_json(_map(leaves, finder.finish))


@dataclass
class _Leaf:
    """One value on its way: where it was found, what the extractor declared, how it was found."""

    path: str
    found: Provenance | None
    declared: Provenance | None
    labelled: bool = False
    ocr: float | None = None  # the lowest OCR score of the words under its box


def _leaves(tree: Any) -> list[_Leaf]:
    if isinstance(tree, _Leaf):
        return [tree]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in _leaves(item)]
    if isinstance(tree, list):
        return [leaf for item in tree for leaf in _leaves(item)]
    return []


def _map(tree: Any, function: Any) -> Any:
    if isinstance(tree, _Leaf):
        return function(tree)
    if isinstance(tree, dict):
        return {key: _map(item, function) for key, item in tree.items()}
    if isinstance(tree, list):
        return [_map(item, function) for item in tree]
    return None


# ------------------------------------------------------------------------------------ tokens

@dataclass
class _Tokens:
    """Positioned pieces of one page (words) or of a workbook (cells), squashed and joined once."""

    joined: str  # every token's squashed text, concatenated
    starts: list[int]  # where each token starts in `joined`
    items: list[Any]  # the tokens (Word, or (sheet, cell, text))

    @classmethod
    def of(cls, texts: list[str], items: list[Any]) -> _Tokens:
        starts, parts, position = [], [], 0
        for text in texts:
            squashed = _squash(text)
            starts.append(position)
            parts.append(squashed)
            position += len(squashed)
        return cls("".join(parts), starts, items)

    def width(self, token: int) -> int:
        """Characters of a token's squashed text."""
        end = self.starts[token + 1] if token + 1 < len(self.starts) else len(self.joined)
        return end - self.starts[token]

    def span(self, target: str, nth: int) -> tuple[int, int, int, int] | None:
        """(first token, offset in it, last token, offset after in it) of `target`'s nth
        occurrence (the last one when there are fewer), or None."""
        found = _occurrences(self.joined, target)
        if not found:
            return None
        at = found[min(nth, len(found) - 1)]
        first = bisect.bisect_right(self.starts, at) - 1
        last = bisect.bisect_right(self.starts, at + len(target) - 1) - 1
        return first, at - self.starts[first], last, at + len(target) - self.starts[last]


def _squash(text: str) -> str:
    """Text without whitespace and invisible characters, lower case (same length per character)."""
    kept = _INVISIBLE.sub("", text)
    low = kept.lower()
    if len(low) == len(kept):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in kept)  # 'İ' lowers to two characters


def _occurrences(haystack: str, needle: str, limit: int = 10_000) -> list[int]:
    found: list[int] = []
    at = haystack.find(needle)
    while at >= 0 and len(found) < limit:
        found.append(at)
        at = haystack.find(needle, at + 1)
    return found


# ------------------------------------------------------------------------------------ finder

class _Finder:
    def __init__(self, document: ReadDocument, source: str, data: bytes | None, passwords: list[str] | None) -> None:
        self.document = document
        self.source = source
        self.kind = (
            "xml" if source in ("xml", "embedded-xml")
            else "template" if source.startswith("template:")
            else "model" if source.startswith("model:")
            else "layout"
        )
        self.paged = document.pages is not None and document.media_type not in (sniff.XLSX, sniff.XLSM)
        text = document.text or ""
        self.pages = text.split("\f") if self.paged else [text]
        self.index = PageIndex(self.pages, self.paged)
        self.data = data
        self.passwords = passwords
        self.located = 0
        self._words: dict[int, list[Word]] | None = None
        self._sizes: dict[int, PageSize] = {}
        self._page_tokens: dict[int, _Tokens | None] = {}
        self._cells: _Tokens | None = None
        self._grid: dict[tuple[str, int, int], str] = {}  # (sheet, column from 0, row from 1) -> text
        self._columns: dict[tuple[str, int], list[tuple[int, str]]] = {}  # (sheet, column) -> (row, text), top down
        self._headers: dict[tuple[Any, ...], int | None] = {}

    # -- the tree

    def tree(self, fields: Any, declared: Any, path: str = "", cursor: int = 0) -> Any:
        if isinstance(fields, dict):
            return {
                key: self.tree(value, declared.get(key) if isinstance(declared, dict) else None,
                               f"{path}.{key}" if path else str(key), cursor)
                for key, value in fields.items()
            }
        if isinstance(fields, (list, tuple)):
            rows = declared if isinstance(declared, list) else []
            out, row_cursor = [], 0
            for number, item in enumerate(fields):
                given = rows[number] if number < len(rows) else None
                if isinstance(item, dict):
                    found = self.tree(item, given, f"{path}[]", row_cursor)
                    row_cursor = self._row_end(found, row_cursor)
                else:
                    found = self.tree(item, given, f"{path}[]", cursor)
                out.append(found)
            return out
        return self.value(fields, path, declared if isinstance(declared, Provenance) else None, cursor)

    def _row_end(self, row: dict[str, Any], cursor: int) -> int:
        """Where the next row's values are looked for: after this row's amount (else its last value)."""
        ends = {key: self.index.position(leaf.found) + len(leaf.found.text) for key, leaf in row.items()
                if isinstance(leaf, _Leaf) and leaf.found is not None and leaf.found.start is not None}
        for key in _ROW_END_KEYS:
            if key in ends:
                return ends[key]
        return max(ends.values(), default=cursor)

    # -- one value

    def value(self, value: Any, path: str, declared: Provenance | None, cursor: int) -> _Leaf | None:
        if value is None or isinstance(value, bool) or value == "":
            return None
        leaf = _Leaf(path, None, declared)
        if self.located >= MAX_VALUES or self.source == "xml" or path.rsplit(".", 1)[-1] in NOT_SEARCHED:
            return leaf
        self.located += 1
        in_row = "[]." in path
        limit = (ROW_OCCURRENCES if in_row else OCCURRENCES) if self.kind == "layout" else 1
        found = self.index.find(value, start=cursor, limit=limit)
        if not found and cursor:
            found = self.index.find(value, limit=limit)
        short = _short(value)
        if self.kind != "layout":
            leaf.found = found[0] if found and not short else None
            return leaf
        first = None
        for one in found:
            one, ocr = self.place(one)
            if self._labelled(one, path):
                leaf.found, leaf.ocr, leaf.labelled = one, ocr, True
                return leaf
            first = first or (one, ocr)
        if first is not None and not short:
            leaf.found, leaf.ocr = first
        return leaf

    def finish(self, leaf: _Leaf) -> Provenance | None:
        """The leaf's provenance with its confidence (see blocks.provenance)."""
        found, declared = leaf.found, leaf.declared
        ocr = 1.0 if leaf.ocr is None else max(0.0, min(1.0, float(leaf.ocr)))
        if self.kind == "xml":
            if declared is None or found is None:
                return declared
            update = {k: getattr(found, k) for k in ("page", "text", "start", "end", "score", "box", "sheet", "cell")}
            return declared.model_copy(update=update)  # printed here; the value is still the element's
        if self.kind == "template":
            field = leaf.path.replace("[]", "")
            if found is None:
                return Provenance(text="", match="declared", template_field=field, confidence=TEMPLATE_UNLOCATED)
            return found.model_copy(update={"template_field": field, "confidence": _round((found.score or 0) * ocr)})
        if found is None:
            return None
        if self.kind == "model":  # a model says no more than what it answered: how well the text matches it
            return found.model_copy(update={"confidence": _round((found.score or 0) * ocr)})
        factor = LABELLED if leaf.labelled else UNLABELLED
        return found.model_copy(update={"confidence": _round(factor * (found.score or 0) * ocr)})

    # -- boxes and cells

    def place(self, found: Provenance) -> tuple[Provenance, float | None]:
        """`found` with the box of its words (pages with words) or its XLSX sheet and cell, and
        the lowest OCR score of those words (None: not OCR'd)."""
        target = _squash(found.text)
        if not target:
            return found, None
        if self.document.media_type in (sniff.XLSX, sniff.XLSM):
            return self._cell(found, target), None
        page = found.page
        if page is None:
            return found, None
        tokens = self._tokens(page)
        if tokens is None:
            return found, None
        span = tokens.span(target, self._nth(page, found, target))
        if span is None:
            return found, None
        first, head, last, tail = span
        words = tokens.items[first: last + 1]
        x0 = min(w.x0 for w in words)
        x1 = max(w.x1 for w in words)
        top = min(w.top for w in words)
        bottom = max(w.bottom for w in words)
        if len(words) == 1 or words[0].top >= words[-1].top - 0.5 * (words[0].bottom - words[0].top):
            # one line: cut off the parts of the first and last word outside the value
            a, b = words[0], words[-1]
            if (width := tokens.width(first)):
                x0 = a.x0 + (a.x1 - a.x0) * head / width
            if (width := tokens.width(last)):
                x1 = b.x0 + (b.x1 - b.x0) * tail / width
        size = self._sizes.get(page)
        if size is None or size.width <= 0 or size.height <= 0:
            return found, None
        box = Box(x=round(x0, 2), y=round(top, 2), w=round(max(0.0, x1 - x0), 2), h=round(max(0.0, bottom - top), 2),
                  page_width=size.width, page_height=size.height)
        scores = [s for w in words if (s := w.score) is not None]
        return found.model_copy(update={"box": box}), (min(scores) if scores else None)

    def _nth(self, page: int, found: Provenance, target: str) -> int:
        """How many times the squashed value occurs on its page before the located place."""
        text = self.pages[page - 1] if self.paged else self.pages[0]
        return len(_occurrences(_squash(text[: found.start or 0]), target))

    def _tokens(self, page: int) -> _Tokens | None:
        if page not in self._page_tokens:
            words = self._page_words().get(page) or []
            self._page_tokens[page] = _Tokens.of([w.text for w in words], words) if words else None
        return self._page_tokens[page]

    def _page_words(self) -> dict[int, list[Word]]:
        """The document's words by page; for a PDF read without words, those of the pages that hold
        located values, read now (only the first pages a reader would have read words of)."""
        if self._words is None:
            self._words = {}
            for word in self.document.words:
                self._words.setdefault(word.page, []).append(word)
            for number, size in enumerate(self.document.page_sizes, start=1):
                self._sizes[number] = size
        return self._words

    def read_missing_words(self, pages: set[int]) -> None:
        """Words of PDF pages that hold located values, when the reader kept none (a matched template)."""
        if self.document.media_type != sniff.PDF or not self.data or not pages:
            return
        from blocks.readers import WORD_PAGES, pdf_words

        words_by_page = self._page_words()
        # pages read by OCR came with their words; the text layer's were kept only without templates
        wanted = sorted(p for p in pages if 1 <= p <= WORD_PAGES and p not in words_by_page)
        if not wanted:
            return
        for number, (found, size) in pdf_words(self.data, self.passwords, wanted).items():
            words_by_page[number] = found
            self._sizes[number] = size

    def _cell(self, found: Provenance, target: str) -> Provenance:
        from openpyxl.utils import get_column_letter

        if self._cells is None:
            texts, items = [], []
            names, numbers = self.document.table_names, self.document.table_rows
            for t, table in enumerate(self.document.tables):
                if t >= len(names) or t >= len(numbers):
                    break
                for r, row in enumerate(table):
                    for c, text in enumerate(row):
                        if text:
                            texts.append(text)
                            items.append((names[t], c, numbers[t][r]))
                            self._grid[(names[t], c, numbers[t][r])] = text
                            self._columns.setdefault((names[t], c), []).append((numbers[t][r], text))
            self._cells = _Tokens.of(texts, items)
        span = self._cells.span(target, self._nth(1, found, target))
        if span is None:
            return found
        sheet, column, row = self._cells.items[span[0]]
        return found.model_copy(update={"sheet": sheet, "cell": f"{get_column_letter(column + 1)}{row}"})

    # -- labels

    def _labelled(self, found: Provenance, path: str) -> bool:
        """Does a label of the field's vocabulary stand next to the value (left on its line, on the
        line just above), or, in a table row, a header of its column above it?"""
        in_row = "[]." in path
        role = COLUMN_ROLES.get(path.rsplit(".", 1)[-1]) if in_row else None
        phrases = _phrases(FIELD_LABELS.get(path.replace("[]", ""), ()))
        if role is None and not phrases:
            return False
        if found.box is not None and found.page is not None:
            return self._labelled_on_page(found.box, found.page, phrases, role, in_row)
        if found.sheet is not None and found.cell is not None:
            return self._labelled_in_sheet(found.sheet, found.cell, phrases, role, in_row)
        return self._labelled_in_text(found, phrases, role, in_row)

    def _labelled_in_sheet(self, sheet: str, cell: str, phrases: frozenset[str], role: str | None, in_row: bool) -> bool:
        """XLSX: a label in a cell left of the value on its row or in the cell above; a row's
        column header anywhere above it in its column."""
        from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

        letters, row = coordinate_from_string(cell)
        column = column_index_from_string(letters) - 1
        cells = self._columns.get((sheet, column), [])
        if in_row:
            key = (sheet, column, role, phrases)
            if key not in self._headers:  # the column's first header cell of this kind, once
                self._headers[key] = next((r for r, text in cells if (role is not None and _role(text) == role)
                                           or _fold_label(text) in phrases), None)
            header = self._headers[key]
            return header is not None and header < row
        left = " ".join(self._grid[(sheet, c, row)] for c in range(min(column, 200)) if (sheet, c, row) in self._grid)
        if _last_label(left) in phrases:
            return True
        above = bisect.bisect_left(cells, (row, "")) - 1
        return above >= 0 and bool(_labels(cells[above][1]) & phrases)

    def _labelled_on_page(self, box: Box, page: int, phrases: frozenset[str], role: str | None, in_row: bool) -> bool:
        words = self._page_words().get(page) or []
        height = max(box.h, 1.0)
        if in_row:
            return any(
                w.bottom <= box.y + 1 and w.x1 > box.x - 15 and w.x0 < box.x + box.w + 15
                and ((role is not None and _role(w.text) == role) or _fold_label(w.text) in phrases)
                for w in words
            )
        middle = box.y + height / 2
        left = sorted((w for w in words if w.top < middle < w.bottom and w.x1 <= box.x + 1), key=lambda w: w.x0)
        if _last_label(" ".join(w.text for w in left)) in phrases:
            return True
        above = [w for w in words if box.y - 3 * height <= w.top and w.bottom <= box.y + 1
                 and w.x1 > box.x - 2 and w.x0 < box.x + box.w + 2]
        if not above:
            return False
        nearest = max(w.bottom for w in above)
        line = sorted((w for w in above if w.bottom >= nearest - 0.5 * height), key=lambda w: w.x0)
        return bool(_labels(" ".join(w.text for w in line)) & phrases)

    def _labelled_in_text(self, found: Provenance, phrases: frozenset[str], role: str | None, in_row: bool) -> bool:
        page = found.page or 1
        text = self.pages[page - 1] if self.paged else self.pages[0]
        start = found.start or 0
        line_start = text.rfind("\n", 0, start) + 1
        if in_row:
            earlier = text[max(0, line_start - 4000): line_start].split("\n")[-60:]
            return any((role is not None and _role(cell) == role) or _fold_label(cell) in phrases
                       for line in earlier for cell in re.split(r"\t|\s{2,}", line))
        if _last_label(text[line_start:start]) in phrases:
            return True
        previous = text[:max(0, line_start - 1)].rstrip("\n").rsplit("\n", 1)[-1]
        return bool(_labels(previous) & phrases)


def _short(value: Any) -> bool:
    """A value found anywhere by coincidence ('0', '7', 'S'): located only next to its label."""
    if isinstance(value, (int, float)):
        return float(value).is_integer() and abs(value) < 10
    return isinstance(value, str) and len(value.strip()) < 2


def _fold_label(text: str) -> str:
    from blocks.layout import _fold

    return _fold(text).strip(" :.%()")


def _round(value: float) -> float:
    return round(max(0.0, min(1.0, value)), 3)


_PHRASES: dict[tuple[str, ...], frozenset[str]] = {}


def _phrases(keys: tuple[str, ...]) -> frozenset[str]:
    if keys not in _PHRASES:
        from blocks.layout import LABELS, _fold

        _PHRASES[keys] = frozenset(_fold(phrase) for key in keys for phrase in LABELS.get(key, ()))
    return _PHRASES[keys]


def _labels(text: str) -> set[str]:
    from blocks.layout import _LABEL_RE, _fold

    return {_fold(m.group(0).rstrip(".")) for m in _LABEL_RE.finditer(text)}


def _last_label(text: str) -> str | None:
    from blocks.layout import _LABEL_RE, _fold

    last = None
    for last in _LABEL_RE.finditer(text):
        pass
    return _fold(last.group(0).rstrip(".")) if last is not None else None


def _role(text: str) -> str | None:
    from blocks.layout import _header_role

    return _header_role(text) if not any(ch.isdigit() for ch in text) else None
