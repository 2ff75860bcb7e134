"""The offline default extractor: no network, no model download, pure-Python and PDFium readers."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from blocks.extractor import Extractor
from blocks.isolation import get_pool
from blocks.models import Extraction
from blocks.parsing import ParseSettings, parse_document


class EmbeddedExtractor(Extractor):
    """Reads PDF text layers, DOCX, XLSX, HTML, XML, CSV and plain text on this machine.

    The media type is read from the content, never trusted from the file name. Scanned PDFs
    and images have no text to read here and fail with `no_text`; use an OCR extractor for them.

    Example:
        ```python
        from blocks import EmbeddedExtractor
        EmbeddedExtractor(max_pages=200).save("small-docs")
        ```
    """

    _block_type_name: ClassVar[str] = "Embedded Extractor"
    _block_type_slug: ClassVar[str] = "embedded-extractor"
    _description: ClassVar[str] = (
        "Offline text and basic invoice fields from PDF, DOCX, XLSX, HTML, CSV and text files. "
        "No network, no model download."
    )

    max_pages: int = Field(
        default=2000, ge=1, description="A PDF with more pages fails as too_large before any page is read."
    )
    max_cells: int = Field(
        default=2_000_000, ge=1, description="A workbook with more non-empty cells than this fails as too_large."
    )
    extract_fields: bool = Field(
        default=True, description="Look for invoice number, date, total and currency in the text."
    )
    passwords: list[SecretStr] = Field(
        default_factory=list,
        description="Candidate passwords tried, in order, on encrypted PDFs. Never logged or exported.",
    )
    isolate: bool = Field(
        default=True,
        description=(
            "Parse each document in a separate worker process that is killed on the time and memory "
            "limits below. Off: parse in the batch process itself (for debugging; no limit then applies)."
        ),
    )
    timeout_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="A document whose parsing takes longer than this many seconds is stopped and fails as timeout.",
    )
    max_memory_mb: int = Field(
        default=256, ge=128,
        description=(
            "Address space, in MB, each parsing worker may use; about 75 MB of it is the worker itself. "
            "A document that needs more is stopped and fails as too_large. With two workers the default "
            "keeps a whole batch (Prefect, its temporary server and the workers) under 1 GB."
        ),
    )
    max_workers: int | None = Field(
        default=None, ge=1, le=64,
        description="Parsing worker processes at most; empty for one per CPU. Each may use up to max_memory_mb.",
    )
    recycle_after: int = Field(
        default=200, ge=1,
        description="A parsing worker is replaced by a fresh one after this many documents (frees leaked memory).",
    )

    def extract(self, name: str, data: bytes) -> Extraction:
        # The parse itself is `blocks.parsing.parse_document`; here it only gets a process to run in.
        settings: ParseSettings = {
            "max_pages": self.max_pages,
            "max_cells": self.max_cells,
            "extract_fields": self.extract_fields,
            "passwords": [p.get_secret_value() for p in self.passwords],
        }
        if not self.isolate:
            return parse_document(name, data, settings)
        pool = get_pool(
            max_workers=self.max_workers,
            timeout_s=self.timeout_s,
            max_memory_mb=self.max_memory_mb,
            recycle_after=self.recycle_after,
        )
        return pool.run(parse_document, name, data, settings)
