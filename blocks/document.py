"""A document read once: text, words with their boxes, table cells and attachments.

Every extraction path (e-invoice XML, templates, layout heuristics, later models) works on one
`ReadDocument`, so a PDF is opened and its text read once per document, not once per path.
Plain data only (no PDFium objects): it is built and used inside a parsing worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Word(NamedTuple):
    """One word on a page, with its box in PDF points, origin top-left, y growing downwards
    (in pixels for an OCR'd image, whose `page_sizes` are pixels too).

    For documents without geometry (DOCX, HTML, text) words are not made; see `ReadDocument.lines`.
    """

    text: str
    x0: float
    top: float
    x1: float
    bottom: float
    page: int  # 1-based
    score: float | None = None  # OCR's confidence in the word, 0-1; None for a text layer's words


@dataclass
class PageSize:
    width: float
    height: float


@dataclass
class ReadDocument:
    """What a reader made of one document's bytes.

    `text` is the whole text (pages joined by form feeds); `words` holds positioned words for
    PDFs with a text layer and for pages read by OCR (`ocr_pages`, 1-based); `tables` holds the rows of table-shaped content (DOCX tables, XLSX
    sheets, HTML tables, CSV), each row a list of cell texts; `attachments` the embedded files
    of a PDF (name, bytes) that might be e-invoice XML, already size-checked.
    """

    text: str
    pages: int | None
    media_type: str
    words: list[Word] = field(default_factory=list)
    page_sizes: list[PageSize] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)
    attachments: list[tuple[str, bytes]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra_fields: dict[str, object] = field(default_factory=dict)
    # XLSX: each table's sheet name, and the 1-based row number of each of its rows (cells start at
    # column A), so a value can name the cell it was read from (blocks.source_provenance)
    table_names: list[str] = field(default_factory=list)
    table_rows: list[list[int]] = field(default_factory=list)
    # pages whose text was read by OCR (1-based): images, and PDF pages without a usable text layer
    ocr_pages: list[int] = field(default_factory=list)
