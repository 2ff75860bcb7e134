"""Flow parameter models: what the Prefect UI renders as a form and validates."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from blocks.models import DEFAULT_FORMATS, ExportFormat


class ExtractionSettings(BaseModel):
    """Which extractor reads the documents, and its limits."""

    extractor: str = Field(
        default="embedded",
        description="'embedded' (offline default: PDF text layer, DOCX, XLSX, HTML, CSV, text) "
        "or a saved extractor block as 'BLOCK-TYPE/NAME', e.g. 'embedded-extractor/strict'.",
    )
    keep_text: bool = Field(default=False, description="Keep each document's full text in the results and exports.")
    max_file_size_mb: float = Field(
        default=100.0, gt=0, le=10240, description="Documents larger than this fail as too_large without being read."
    )
    max_pages: int = Field(
        default=2000, ge=1, le=100_000, description="PDFs with more pages fail as too_large (embedded extractor)."
    )
    retries: int = Field(
        default=2, ge=0, le=10, description="Retries for transient errors (timeouts, HTTP 429/5xx); never for corrupt files."
    )
    retry_backoff_s: float = Field(
        default=1.0, ge=0, le=600, description="First retry delay in seconds; doubles on each retry, with jitter."
    )
    schema_name: Literal["auto", "invoice", "receipt", "none"] = Field(
        default="auto",
        title="Schema",
        description="'auto': the receipt schema (merchant, date, time, total, tax, currency, payment method) for "
        "documents that look like till receipts, the invoice schema (EN 16931 core: number, dates, parties, totals, "
        "tax, line items) for the others; 'invoice' or 'receipt': that schema for every document; 'none': text, "
        "pages and type only. E-invoice XML and templates keep their own fields. Embedded extractor.",
    )
    templates: str = Field(
        default="",
        description="Folder of invoice2data templates (.yml/.json) on the worker; the first whose keywords match a "
        "document fills its fields. Empty: no templates. Embedded extractor; a saved block carries its own.",
    )
    embedded_xml: bool = Field(
        default=True,
        description="Read the Factur-X / ZUGFeRD / XRechnung XML that PDFs embed (exact fields). Off: fields from "
        "the page text. Embedded extractor.",
    )
    ocr: bool = Field(
        default=True,
        title="OCR",
        description="Read images (PNG, JPEG, TIFF, WebP, GIF) and PDF pages without a text layer by OCR, offline "
        "(RapidOCR, about 2 s a page on one core). Off: they fail as no_text. Embedded extractor.",
    )
    languages: list[str] = Field(
        default=[],  # a literal default renders as a list field in the UI form
        description="ISO 639-1 codes of the documents' languages (e.g. de, fr) for dates with month names; "
        "empty: any. Embedded extractor.",
    )
    target_schema: str = Field(
        default="",
        title="Schema for model extractors",
        description="What a model extractor fills: 'invoice', 'receipt', a JSON Schema pasted here, a JSON Schema "
        "file path on the worker, or a saved 'extraction-schema/NAME'. Empty: the extractor block's own.",
        json_schema_extra={"format": "textarea"},
    )
    prompt: str = Field(
        default="",
        description="Instructions sent with every document to a model extractor (what the documents are, how to "
        "read them). Empty: the extractor block's own.",
        json_schema_extra={"format": "textarea"},
    )

    max_tokens_per_batch: int = Field(
        default=0, ge=0,
        description="Stop starting new documents once the batch's model tokens (in + out) reach this; the rest are "
        "skipped with the reason. 0: no cap.",
    )
    max_cost_per_batch: float = Field(
        default=0.0, ge=0,
        description="Stop starting new documents once the batch's cost (the extractor block's prices) reaches this. 0: no cap.",
    )
    cache: bool = Field(
        default=True,
        description="Reuse a model extractor's earlier result for the same bytes and the same configuration "
        "(no request, no tokens). Off: always ask the model.",
    )

    review_min_confidence: float = Field(
        default=0.4, ge=0, le=1,
        description="A succeeded document needs review when a required value (invoice: number, issue date, currency, "
        "seller name, grand total; receipt: merchant, date, total; a JSON Schema's required keys) was read with a "
        "confidence below this, or when a validation check fails (totals, VAT, dates, currency, VAT id, IBAN). 0: "
        "confidence is not judged. At 0.4 a value read beside its label passes, and a value found without a label "
        "(confidence 0.5, e.g. a receipt's merchant) passes unless OCR was unsure of its words (score under 0.8).",
    )

    def extractor_options(self) -> dict[str, Any]:
        """What `blocks.resolve.resolve_extractor` takes besides the extractor's name."""
        return {"schema": self.target_schema, "prompt": self.prompt, **self.embedded_options()}

    def embedded_options(self) -> dict[str, Any]:
        """The embedded extractor's settings these batch settings carry (a saved block uses its own)."""
        return {
            "max_pages": self.max_pages,
            "extract_fields": self.schema_name != "none",
            "document_schema": "auto" if self.schema_name == "none" else self.schema_name,
            "embedded_xml": self.embedded_xml,
            "ocr": self.ocr,
            "templates": self.templates.strip() or None,
            "languages": list(self.languages),
        }


class ExportSettings(BaseModel):
    """Where and in which formats the batch's exports are written."""

    output_dir: str = Field(
        default="output",
        description="Where each batch gets its own sub-folder: a local folder, an S3 prefix 's3://bucket/prefix', "
        "or a saved destination block as 'BLOCK-TYPE/NAME' (e.g. 's3-destination/results').",
    )
    formats: list[ExportFormat] = Field(
        default=list(DEFAULT_FORMATS),  # a literal default, so the UI's form shows the default formats selected
        description="Export formats; report.json is always written. Default: json, jsonl, csv, xlsx, parquet, review. "
        "json: documents.json, jsonl: documents.jsonl, csv: documents.csv (+ line_items.csv), "
        "xlsx: documents.xlsx (documents, line_items, errors sheets), parquet: documents.parquet, "
        "review: review.html (a page to check the values on the documents' pages; opens in any browser). "
        "Readable reports, opt-in: xml: documents.xml (every field, nested), txt: documents.txt (plain text), "
        "html: documents.html (summary, documents table, failures), docx: documents.docx (Word), "
        "pdf: documents.pdf (the same report as a PDF).",
    )
    review_page_documents: int = Field(
        default=100, ge=0, le=10_000,
        description="review.html shows the pages of at most this many documents, with each value's box drawn on "
        "them (those needing review first, then the others in order); every document is in its table. 0: table only.",
    )
    review_page_pages: int = Field(default=3, ge=1, le=50, description="Pages shown per document on review.html at most.")
    database: str = Field(
        default="", title="SQL database",
        description="Also upsert the results into an SQL database: an SQLAlchemy URL without a password "
        "('sqlite:///results.db', 'postgresql+psycopg://user@host/db' with PGPASSWORD or ~/.pgpass), or a saved "
        "'sqlalchemy-connector/NAME' block (its password a secret). Tables batches, documents, line_items; a database "
        "that refuses never stops the batch (the report says what it refused). Empty: none.",
    )
    per_document: bool = Field(
        default=False, title="One file per document",
        description="Also write each document's result as its own JSON file under documents/ in the batch folder, "
        "mirroring the source tree (invoices/2024/a.pdf → documents/invoices/2024/a.pdf.json), as results arrive; "
        "failed documents too. For pipelines that pick files up one by one.",
    )
