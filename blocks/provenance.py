"""Where an extracted value stands in its document: page, verbatim text and character span.

Every extractor and the review page speak one form. `DocumentResult.provenance` (and
`Extraction.provenance`) mirrors `fields`: an object becomes an object with the same keys, a
list a list of the same length, and each value a `Provenance` (as JSON: page, text, start, end,
match and score always, the other fields only when set) or `null` where the value was not
found or has nothing to find (null, empty, booleans):

    "fields":     {"total": 1234.5, "seller": {"name": "ACME GmbH"}, "lines": [{"sku": "A-1"}]}
    "provenance": {"total": {"page": 2, "text": "1.234,50", "start": 118, "end": 126, "match": "exact", "score": 1.0},
                   "seller": {"name": {"page": 1, "text": "Acme  G.m.b.H.", "start": 5, "end": 19, "match": "fuzzy", "score": 0.87}},
                   "lines": [null]}

`start`/`end` are offsets into that page's text (the extracted text split at form feeds, as
`Extraction.text` holds it), so `page_text[start:end] == text`. A document without pages (plain
text) has `page` null and offsets into its whole text.

Locating (`locate`), on the page texts only, first match in reading order wins:

1. exact: numbers in their usual printed forms (1234.5 as 1234.5, 1234.50, 1,234.50,
   1.234,50, 1 234,50, 1'234.50…; never inside a longer number), ISO dates as printed
   (2021-03-05, 05.03.2021, 5.3.2021, 05/03/2021, 03/05/2021, 5 March 2021, March 5, 2021,
   5. März 2021…), strings case-insensitively with any whitespace between their words and
   not inside a longer word;
2. fuzzy, strings of `MIN_FUZZY_CHARS` to `MAX_FUZZY_CHARS` characters only: the page passage most similar to the
   value (`difflib.SequenceMatcher` ratio, whitespace collapsed, case ignored) when it reaches
   `FUZZY_THRESHOLD`; `score` is that ratio. Candidate passages start near words of the value
   (the same word, or one that shares most character trigrams with it), so the cost grows with
   the value's occurrences, not with the document's length.

Fields the embedded extractor adds (`blocks.source_provenance`, in the parse worker): `box`
(the union of the page's positioned words that hold `text`: PDF points for PDFs, pixels for
OCR'd images, with the page's size), `xml_path` (an e-invoice's element, e.g.
/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID, written with the prefixes of
`blocks.einvoice`'s namespace tables: rsm/ram/udt for CII, doc/cac/cbc for UBL),
`sheet`/`cell` (XLSX, e.g. 'B7'), `template_field` (the invoice2data template's output key;
a row of its `lines` as 'lines.<group>') and `confidence`. `match` is "declared" when the
extractor says where the value came from (e-invoice XML; a template value not found in the
text, then with `text` ""): for XML embedded in a PDF, `page`/`text`/`start`/`end`/`box` say
where the value is printed when the text search finds it; the element stays its source.

Confidence, in [0, 1], says how sure the extractor is of the value itself:

| path | confidence |
| --- | --- |
| e-invoice XML (bare or embedded) | 1.0: the value is the element's content |
| template | the text match: 1.0 found as printed, the fuzzy ratio when found approximately; 0.8 when the template gives a value the text does not show (its issuer, a static or rewritten value) |
| layout, receipts | label × match: 1.0 when a label of the field stands left of the value on its line or on the line just above it (a column header above a table cell), 0.5 for a value without a label (a guess from position or pattern), times the text match (1.0 exact, else the fuzzy ratio) |
| OCR'd text (any path but XML) | the above times the lowest OCR score of the words under the box |

Codes rarely printed as such (type code, unit code, tax category, line id) and one-character or
one-digit values ('0', '7', 'S') are not searched, except a layout value standing by its label:
such a match would be a coincidence.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import re
from collections import Counter
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# A fuzzy passage must reach this difflib ratio (2·matching / total characters, case and
# whitespace ignored): 0.8 takes "ACME Corporatoin" for "Acme Corporation" (0.94) and
# "ACME G.m.b.H." for "Acme GmbH." (0.87), and refuses one changed letter in five.
FUZZY_THRESHOLD = 0.8
# Shorter strings are located exactly or not at all: one changed character in "INV-7" is
# another invoice number, not a typo.
MIN_FUZZY_CHARS = 6
# Longer strings (descriptions, addresses in full) are located exactly or not at all: difflib's
# cost grows with the square of their length.
MAX_FUZZY_CHARS = 200
# Candidate passages examined per value at most (the rarest of its words first).
MAX_ANCHORS = 60

Match = Literal["exact", "fuzzy", "declared"]
# Keys every stored provenance has, null where unknown; the others appear only when set.
_CORE = ("page", "text", "start", "end", "match", "score")


class Box(BaseModel):
    """A rectangle on a page, origin top-left, y downwards, in the page's units (PDF points; pixels for an OCR'd image)."""

    model_config = ConfigDict(extra="forbid")

    x: float = Field(description="Left edge.")
    y: float = Field(description="Top edge.")
    w: float = Field(ge=0, description="Width.")
    h: float = Field(ge=0, description="Height.")
    page_width: float = Field(gt=0, description="The page's width, so the box can be scaled to a rendering.")
    page_height: float = Field(gt=0, description="The page's height.")


class Provenance(BaseModel):
    """Where one value was found. JSON-friendly; every field but `text` and `match` may be absent."""

    model_config = ConfigDict(extra="forbid")

    page: int | None = Field(default=None, ge=1, description="1-based page; None for a document without pages.")
    text: str = Field(description="The document's text that holds the value, verbatim (not normalised).")
    start: int | None = Field(default=None, ge=0, description="Offset of `text` in the page's text (characters).")
    end: int | None = Field(default=None, ge=0, description="Offset just after `text`: page_text[start:end] == text.")
    match: Match = Field(
        description="'exact': the value as printed (numbers and dates in their usual forms, strings ignoring case and "
        "whitespace); 'fuzzy': the most similar passage (see score); 'declared': the extractor says where it came from."
    )
    score: float | None = Field(
        default=None, ge=0, le=1, description="How well `text` matches the value: 1.0 exact, else difflib's ratio."
    )
    confidence: float | None = Field(default=None, ge=0, le=1, description="The extractor's confidence in the value itself.")
    box: Box | None = Field(default=None, description="Where `text` is on the page.")
    xml_path: str | None = Field(default=None, description="The e-invoice XML element the value came from.")
    sheet: str | None = Field(default=None, description="The XLSX sheet the value came from.")
    cell: str | None = Field(default=None, description="The cell on that sheet, e.g. 'B7'.")
    template_field: str | None = Field(default=None, description="The invoice2data template field that gave the value.")


# ---------------------------------------------------------------------------- public functions


def locate(value: Any, pages: list[str], *, paged: bool = True) -> Provenance | None:
    """Where a scalar `value` stands in `pages` (page texts in order), or None.

    `paged=False`: `pages` holds one text without page structure (plain text): `page` is None.
    Objects and lists are not located: see `provenance_for`.
    """
    return PageIndex(pages, paged).locate(value)


def provenance_for(fields: Any, pages: list[str], *, paged: bool = True) -> Any:
    """`fields`' structure with every scalar replaced by its `Provenance` (or None).

    Dicts become dicts with the same keys, lists lists of the same length. The pages are
    indexed once for all values, and equal values are located once.
    """
    index = PageIndex(pages, paged)
    memo: dict[tuple[str, Any], Provenance | None] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        if isinstance(node, (list, tuple)):
            return [walk(item) for item in node]
        try:
            key = (type(node).__name__, node)
            if key not in memo:
                memo[key] = index.locate(node)
            return memo[key]
        except TypeError:  # unhashable odd scalar
            return index.locate(node)

    return walk(fields)


def to_json(tree: Any) -> Any:
    """A provenance tree as plain JSON data (what results store). `page`, `text`, `start`, `end`,
    `match` and `score` are always there (null where unknown); the other fields only when set."""
    if isinstance(tree, Provenance):
        data = tree.model_dump(mode="json")
        return {key: value for key, value in data.items() if value is not None or key in _CORE}
    if isinstance(tree, dict):
        return {key: to_json(item) for key, item in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_json(item) for item in tree]
    return None


def from_json(tree: Any) -> Any:
    """Stored provenance (`DocumentResult.provenance`) back into `Provenance` objects."""
    if isinstance(tree, dict):
        if isinstance(tree.get("match"), str) and isinstance(tree.get("text"), str):
            return Provenance.model_validate(tree)
        return {key: from_json(item) for key, item in tree.items()}
    if isinstance(tree, list):
        return [from_json(item) for item in tree]
    return None


# ---------------------------------------------------------------------------- the search

_SEPARATOR = "\x00"  # between pages in the joined text: not whitespace, so no match crosses pages
# Spaces printed inside numbers (no-break, narrow no-break, figure, thin) searched as spaces.
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2007": " ", "\u2009": " "})
_WORD = re.compile(r"\w+")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_PLAIN_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_MONTHS = {
    "en": ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"],
    "de": ["januar", "februar", "märz", "april", "mai", "juni", "juli", "august", "september", "oktober",
           "november", "dezember"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"],
}


class PageIndex:
    """One document's pages, lowered and joined once; the word index for fuzzy search on demand.

    `locate` gives a value's first place; `find` its first places in a window of the joined
    text (`position` turns a provenance back into such a position), for callers that weigh
    several occurrences (the layout's labels) or search a table's rows in order."""

    def __init__(self, pages: list[str], paged: bool) -> None:
        self.pages = list(pages)
        self.paged = paged
        lowered = []
        for page in self.pages:
            low = page.lower()
            if len(low) != len(page):  # 'İ' lowers to two characters: keep offsets aligned
                low = "".join(c if len(c.lower()) != 1 else c.lower() for c in page)
            lowered.append(low.translate(_SPACES))
        self.starts: list[int] = []
        position = 0
        for low in lowered:
            self.starts.append(position)
            position += len(low) + len(_SEPARATOR)
        self.hay = _SEPARATOR.join(lowered)
        self._words: _Words | None = None

    # -- results

    def _page_of(self, position: int) -> int:
        return bisect.bisect_right(self.starts, position) - 1

    def _provenance(self, start: int, end: int, match: Match, score: float) -> Provenance:
        number = self._page_of(start)
        offset = self.starts[number]
        text = self.pages[number][start - offset: end - offset]
        return Provenance(
            page=number + 1 if self.paged else None, text=text, start=start - offset, end=end - offset,
            match=match, score=round(score, 3),
        )

    # -- dispatch

    def locate(self, value: Any) -> Provenance | None:
        found = self.find(value)
        return found[0] if found else None

    def find(self, value: Any, *, start: int = 0, stop: int | None = None, limit: int = 1) -> list[Provenance]:
        """Up to `limit` places of `value` between positions `start` and `stop` of the joined
        text (see `position`), in reading order: its exact matches, else its best fuzzy one."""
        window = (max(0, start), len(self.hay) if stop is None else min(stop, len(self.hay)), max(1, limit))
        if value is None or isinstance(value, bool) or not self.hay or window[0] >= window[1]:
            return []
        if isinstance(value, (int, float, Decimal)):
            return self._number(value, window)
        if isinstance(value, date):
            return self._all(_date_forms(value), window)
        if not isinstance(value, str):
            return []
        text = value.strip()
        if not text:
            return []
        iso = _ISO_DATE.match(text)
        if iso:
            try:
                day = date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
            except ValueError:
                day = None
            if day is not None:
                found = self._all(_date_forms(day), window)
                if found:
                    return found
        found = self._all([_literal(text.lower().translate(_SPACES), "word")], window)
        if not found and _PLAIN_NUMBER.match(text):
            return self._number(Decimal(text), window)
        if not found and not iso and MIN_FUZZY_CHARS <= len(" ".join(text.split())) <= MAX_FUZZY_CHARS:
            fuzzy = self._fuzzy(text)  # never for dates and numbers: 2021-03-06 is not 2021-03-05
            if fuzzy is not None and window[0] <= self.position(fuzzy) < window[1]:
                found = [fuzzy]
        return found

    def position(self, found: Provenance) -> int:
        """Where a provenance this index made starts in the joined text (for `find`'s window)."""
        return self.starts[(found.page or 1) - 1] + (found.start or 0)

    def _number(self, value: int | float | Decimal, window: tuple[int, int, int]) -> list[Provenance]:
        if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
            return []
        found = self._all(_number_forms(value), window)
        if value < 0:
            for index, one in enumerate(found):
                page = self.pages[(one.page or 1) - 1]
                if one.start and page[one.start - 1] in "-\u2212":  # take the printed minus sign along
                    found[index] = one.model_copy(update={"start": one.start - 1, "text": page[one.start - 1: one.end]})
        return found

    # -- exact

    def _all(self, patterns: list[str], window: tuple[int, int, int]) -> list[Provenance]:
        """The first matches of any pattern (each carries its own boundaries, see `_literal`) in the window."""
        patterns = sorted(set(patterns), key=len, reverse=True)
        if not patterns:
            return []
        start, stop, limit = window
        found = []
        for match in _compiled("|".join(f"(?:{p})" for p in patterns)).finditer(self.hay, start, stop):
            found.append(self._provenance(match.start(), match.end(), "exact", 1.0))
            if len(found) >= limit:
                break
        return found

    # -- fuzzy

    def _fuzzy(self, value: str) -> Provenance | None:
        if self._words is None:
            self._words = _Words(self.hay)
        span = self._words.best(" ".join(value.lower().translate(_SPACES).split()))
        if span is None:
            return None
        start, end, score = span
        return self._provenance(start, end, "fuzzy", score)


def _literal(form: str, kind: Literal["number", "word"]) -> str:
    """A regex for `form` (lower case; any whitespace run between its parts) that does not match
    inside a longer number (`number`: no digit, nor digit and separator, on either side) or a
    longer word (`word`: no letter or digit beside a letter or digit at its ends).

    The look-behind follows the first character, not precedes it: so the regex engine still
    skips ahead to that character, about 10 times faster on long texts than a leading one.
    """
    form = form.strip()
    head = re.escape(form[0])
    rest = r"\s+".join(re.escape(part) for part in re.split(r"\s+", form[1:]))
    if kind == "number":
        return rf"{head}(?<!\d{head})(?<!\d[.,]{head}){rest}(?!\d)(?![.,]\d)"
    before = rf"(?<!\w{head})" if re.match(r"\w", form[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", form[-1]) else ""
    return f"{head}{before}{rest}{after}"


@functools.lru_cache(maxsize=2048)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _number_forms(value: int | float | Decimal) -> list[str]:
    """Regexes of a number's printed forms: plain, grouped by , . space ' and decimal . or ,."""
    try:
        exact = abs(Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
    except InvalidOperation:
        return []
    exponent = exact.normalize().as_tuple().exponent
    decimals = max(0, -exponent) if isinstance(exponent, int) else 0
    if decimals > 10:  # 0.1 + 0.2: no printed form
        return []
    forms: set[str] = set()
    for places in sorted({decimals, max(decimals, 2)}):
        whole, _, fraction = f"{exact:.{places}f}".partition(".")
        groups = []
        head = whole
        while len(head) > 3:
            groups.insert(0, head[-3:])
            head = head[:-3]
        groups.insert(0, head)
        for thousands, point in (("", "."), ("", ","), (",", "."), (".", ","), (" ", ","), (" ", "."), ("'", ".")):
            if thousands and len(groups) == 1:
                continue
            forms.add(thousands.join(groups) + (point + fraction if fraction else ""))
    return [_literal(form, "number") for form in forms]


def _date_forms(day: date) -> list[str]:
    """Regexes of a date's printed forms: numeric (day first, month first, ISO) and with month names."""
    y, m, d = day.year, day.month, day.day
    numeric = {
        f"{y}-{m:02}-{d:02}", f"{y}/{m:02}/{d:02}", f"{y}.{m:02}.{d:02}",
        f"{d:02}.{m:02}.{y}", f"{d}.{m}.{y}", f"{d:02}.{m:02}.{y % 100:02}",
        f"{d:02}/{m:02}/{y}", f"{d}/{m}/{y}", f"{m:02}/{d:02}/{y}", f"{m}/{d}/{y}",
        f"{d:02}-{m:02}-{y}", f"{m:02}-{d:02}-{y}",
    }
    names = sorted({n for months in _MONTHS.values() for n in (months[m - 1], months[m - 1][:3])}, key=len, reverse=True)
    month = "(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)\.?"
    days = sorted({str(d), f"{d:02}"}, key=len, reverse=True)
    out = [_literal(form, "number") for form in numeric]
    for dd in days:  # 5 March 2021, 05-mar-2021, 5. März 2021
        out.append(rf"{dd[0]}(?<!\d{dd[0]}){dd[1:]}\.?[\s-]*{month}[\s-]*,?\s*{y}(?!\d)")
    first = "(?:" + "|".join(rf"{re.escape(n[0])}(?<!\w{re.escape(n[0])}){re.escape(n[1:])}" for n in names) + r")(?!\w)\.?"
    out.append(rf"{first}\s*(?:{'|'.join(days)})(?!\d),?\s*{y}(?!\d)")  # March 5, 2021
    return out


class _Words:
    """The joined text's vocabulary (for fuzzy search), counted once; its trigrams on demand."""

    def __init__(self, hay: str) -> None:
        self.hay = hay
        self.counts = Counter(_WORD.findall(hay))
        self._trigrams: dict[str, list[str]] | None = None

    def _similar_words(self, word: str) -> list[str]:
        """Vocabulary words like `word`: most character trigrams shared, then difflib's ratio ≥ 0.7."""
        if self._trigrams is None:
            self._trigrams = {}
            for known in self.counts:
                if len(known) >= 3 and known.isalpha():
                    for gram in _grams(known):
                        self._trigrams.setdefault(gram, []).append(known)
        grams = _grams(word)
        shared = Counter(known for gram in grams for known in self._trigrams.get(gram, ()))
        need = max(1, len(grams) // 2)
        matcher = difflib.SequenceMatcher(None, b=word, autojunk=False)
        scored = []
        for known, count in shared.most_common(50):
            if count < need:
                break
            matcher.set_seq1(known)
            ratio = matcher.ratio()
            if ratio >= 0.7:
                scored.append((ratio, known))
        return [known for _, known in sorted(scored, reverse=True)[:5]]

    def _guesses(self, value: str) -> list[int]:
        """Where in the text a passage like `value` may start: at the occurrences of its rarest
        words (or words like them), shifted back by the word's offset in the value."""
        guesses: list[int] = []
        words = [(m.group(), m.start()) for m in _WORD.finditer(value)]
        for word, offset in sorted(words, key=lambda pair: self.counts.get(pair[0]) or 10**9):
            if word in self.counts:
                candidates = [word]
            elif len(word) >= 4 and word.isalpha():
                candidates = self._similar_words(word)
            else:
                continue
            for known in candidates:
                for found in _compiled(_literal(known, "word")).finditer(self.hay):
                    guesses.append(found.start() - offset)
                    if len(guesses) >= MAX_ANCHORS:
                        return guesses
        return guesses

    def best(self, value: str) -> tuple[int, int, float] | None:
        """(start, end, ratio) of the passage most like `value` (lowered, whitespace collapsed),
        if it reaches `FUZZY_THRESHOLD`. Passages begin and end at word boundaries near a guess."""
        matcher = difflib.SequenceMatcher(None, b=value, autojunk=False)
        length = len(value)
        best: tuple[float, int, int] | None = None
        seen: set[tuple[int, int]] = set()
        for guess in self._guesses(value):
            low, high = max(0, guess - 24), min(len(self.hay), guess + length + 24)
            spans = [m.span() for m in _WORD.finditer(self.hay, low, high)]
            if not spans:
                continue
            starts = [a for a, _ in spans]
            ends = [b for _, b in spans]
            first = bisect.bisect_left(starts, guess)
            for i in range(max(0, first - 1), min(len(spans), first + 2)):
                last = bisect.bisect_left(ends, starts[i] + length)
                for j in range(max(i, last - 1), min(len(spans), last + 2)):
                    begin, stop = starts[i], ends[j]
                    if (begin, stop) in seen:
                        continue
                    seen.add((begin, stop))
                    passage = self.hay[begin:stop]
                    if _SEPARATOR in passage:
                        continue
                    matcher.set_seq1(" ".join(passage.split()))
                    if matcher.real_quick_ratio() < FUZZY_THRESHOLD or matcher.quick_ratio() < FUZZY_THRESHOLD:
                        continue
                    ratio = matcher.ratio()
                    if ratio >= FUZZY_THRESHOLD and (best is None or ratio > best[0] or (ratio == best[0] and begin < best[1])):
                        best = (ratio, begin, stop)
        return None if best is None else (best[1], best[2], best[0])


def _grams(word: str) -> list[str]:
    padded = f" {word} "
    return [padded[i: i + 3] for i in range(len(padded) - 2)]
