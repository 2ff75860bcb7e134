"""The offline default extractor: no network, no model download, pure-Python and PDFium readers."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr, SecretStr

from blocks.extractor import Extractor
from blocks import sniff
from blocks.errors import NeedsOcr
from blocks.isolation import ParsePool, get_pool
from blocks.models import Extraction
from blocks.parsing import ParseSettings, parse_document


class EmbeddedExtractor(Extractor):
    """Reads PDF text layers, DOCX, XLSX, HTML, XML, CSV and plain text on this machine, and fills
    the default invoice schema (`blocks.invoice_schema`) from e-invoice XML, an invoice2data
    template, or the layout, in that order (`blocks.field_paths`).

    The media type is read from the content, never trusted from the file name. Images and PDF
    pages without a usable text layer are read by OCR (`ocr`, on by default) in OCR workers of
    their own (`blocks.ocr`, `blocks.images`); with `ocr` off they fail with `no_text`.

    Example:
        ```python
        from blocks import EmbeddedExtractor
        EmbeddedExtractor(templates="/srv/templates/suppliers-de", languages=["de"]).save("supplier-invoices-de")
        ```
    """

    _block_type_name: ClassVar[str] = "Embedded Extractor"
    _block_type_slug: ClassVar[str] = "embedded-extractor"
    _description: ClassVar[str] = (
        "Offline invoice records from PDF, DOCX, XLSX, HTML, CSV, text, e-invoice XML and, by OCR, scans and images: embedded "
        "Factur-X/ZUGFeRD/XRechnung XML read exactly, invoice2data templates, or the layout. No network, no model."
    )

    max_pages: int = Field(
        default=2000, ge=1, description="A PDF with more pages fails as too_large before any page is read."
    )
    max_cells: int = Field(
        default=2_000_000, ge=1, description="A workbook with more non-empty cells than this fails as too_large."
    )
    extract_fields: bool = Field(
        default=True, description="Fill the invoice schema (or the template's fields); off: text, pages and type only."
    )
    document_schema: Literal["auto", "invoice", "receipt"] = Field(
        default="auto",
        description="What the layout fills: 'auto' the receipt schema (merchant, date, time, total, tax, currency, "
        "payment method) for documents that look like till receipts and the invoice schema for the others; "
        "'invoice' or 'receipt' for every document. E-invoice XML and templates keep their own fields.",
    )
    embedded_xml: bool = Field(
        default=True,
        description="Read the e-invoice XML (Factur-X, ZUGFeRD, XRechnung) a PDF embeds: exact fields. "
        "Off: fields come from the page text, as for any PDF.",
    )
    templates: str | None = Field(
        default=None,
        description="Folder of invoice2data templates (.yml/.yaml/.json) on the worker: the first whose keywords "
        "match fills the fields with its own. Empty: no templates.",
    )
    on_no_template: Literal["layout", "fail"] = Field(
        default="layout",
        description="When templates are set and none matches a document: 'layout' fills the invoice schema from "
        "the layout (with a warning), 'fail' fails the document.",
    )
    languages: list[str] = Field(
        default_factory=list,
        description="ISO 639-1 codes of the documents' languages (e.g. de, fr), used to read dates with month "
        "names; empty: any.",
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
    ocr: bool = Field(
        default=True,
        description="Read images (PNG, JPEG, TIFF, WebP, GIF, BMP) and PDF pages without a usable text layer by OCR "
        "(RapidOCR, offline). Pages with a text layer are never OCR'd. Off: such documents fail as no_text.",
    )
    ocr_max_pages: int = Field(
        default=50, ge=1, le=10_000,
        description="Pages read by OCR at most per document (a scan or a multi-page TIFF); the rest are named in a warning.",
    )
    max_pixels: int = Field(
        default=50_000_000, ge=1_000_000,
        description="An image page with more pixels than this (width x height, as its header declares) fails as "
        "too_large before it is decoded: decompression bombs cost nothing.",
    )
    ocr_timeout_s: float = Field(
        default=300.0, gt=0, le=7200,
        description="OCR time per document (about 2 s a receipt and 3-9 s a dense A4 page on one core). OCR starts "
        "no page that would end past 80 % of it: the pages left are named in a warning and the document keeps "
        "the pages read. A document still running at this many seconds is stopped and fails as timeout.",
    )
    ocr_max_memory_mb: int = Field(
        default=1280, ge=768,
        description="Address space, in MB, of each OCR worker. Measured peaks: 0.7 GB on a receipt photo, 0.85 GB "
        "on an A4 scan, 1.13 GB on a 49-megapixel PNG (near max_pixels); the OCR engine alone takes ~0.6 GB, so OCR "
        "runs in workers of its own, apart from the parsing workers and their max_memory_mb.",
    )
    ocr_workers: int | None = Field(
        default=None, ge=1, le=64,
        description="OCR worker processes at most; empty for one per CPU. Each keeps the OCR engine loaded.",
    )

    _digest: tuple[str, str] | None = PrivateAttr(default=None)
    # set by a model extractor reading text through this one: the words come back with the text
    _keep_words: bool = PrivateAttr(default=False)

    @property
    def output_fields(self) -> list[str]:
        from blocks.invoice_schema import invoice_columns

        if not self.extract_fields:
            return []
        if self.document_schema == "receipt":
            from blocks.receipt_schema import receipt_columns

            return ["fields_source", *receipt_columns()]
        return ["fields_source", *invoice_columns()]  # receipts of an 'auto' batch add their columns as they come

    def with_batch_settings(self, *, schema: str, prompt: str) -> Extractor:
        """A batch's `receipt` (or `invoice`) schema is the layout's choice; others are refused."""
        if schema.strip() in ("receipt", "invoice") and not prompt.strip():
            return self.model_copy(update={"document_schema": schema.strip()})
        return super().with_batch_settings(schema=schema, prompt=prompt)

    def check(self) -> None:
        """Refuse, before any document is read, a templates folder that cannot be used."""
        if self.extract_fields and self.templates:
            from blocks.templates import TemplateSet

            TemplateSet.load(self.templates)

    def fingerprint(self) -> str:
        """What the settings alone do not say: the templates' content (a changed template changes results)."""
        if self.extract_fields and self.templates:
            from blocks.templates import template_digest

            return template_digest(self.templates)
        return ""

    def extract(self, name: str, data: bytes) -> Extraction:
        # The parse itself is `blocks.parsing.parse_document`; here it only gets a process to run in.
        settings: ParseSettings = {
            "max_pages": self.max_pages,
            "max_cells": self.max_cells,
            "extract_fields": self.extract_fields,
            "passwords": [p.get_secret_value() for p in self.passwords],
            "embedded_xml": self.embedded_xml,
            "templates": self.templates or None,
            "templates_digest": self._templates_digest(),
            "languages": list(self.languages),
            "on_no_template": self.on_no_template,
            "ocr": self.ocr,
            "ocr_max_pages": self.ocr_max_pages,
            "max_pixels": self.max_pixels,
            "document_schema": self.document_schema,
            "keep_words": self._keep_words,
        }
        if not self.isolate:
            return parse_document(name, data, {**settings, "ocr_here": self.ocr})
        # OCR stops before a page that would pass 80 % of ocr_timeout_s (blocks.ocr.PageClock): the
        # pages read so far make a result, where the timeout would lose them all
        ocr_settings: ParseSettings = {**settings, "ocr_here": True, "ocr_budget_s": 0.8 * self.ocr_timeout_s}
        if self.ocr and (sniff.sniff_binary(data) or "").startswith("image/"):
            return self._ocr_pool().run(parse_document, name, data, ocr_settings)
        pool = get_pool(
            max_workers=self.max_workers,
            timeout_s=self.timeout_s,
            max_memory_mb=self.max_memory_mb,
            recycle_after=self.recycle_after,
        )
        try:
            return pool.run(parse_document, name, data, settings)
        except NeedsOcr:
            # pages without a text layer: read again where the OCR engine lives (a plain parse
            # worker's 256 MB cannot hold it); the second read costs little next to OCR itself
            return self._ocr_pool().run(parse_document, name, data, ocr_settings)

    def _ocr_pool(self) -> ParsePool:
        """The OCR workers: the same isolation (time and memory caps, killed on either), their own limits."""
        return get_pool(
            max_workers=self.ocr_workers,
            timeout_s=self.ocr_timeout_s,
            max_memory_mb=self.ocr_max_memory_mb,
            recycle_after=self.recycle_after,
            ocr=True,
        )

    def _templates_digest(self) -> str | None:
        # Computed once per block instance (a batch), not per document: hashing a folder costs file reads.
        if not (self.extract_fields and self.templates):
            return None
        if self._digest is None or self._digest[0] != self.templates:
            self._digest = (self.templates, self.fingerprint())
        return self._digest[1]
