"""Flow parameter models: what the Prefect UI renders as a form and validates."""

from __future__ import annotations

from pydantic import BaseModel, Field

from blocks.models import ExportFormat


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


class ExportSettings(BaseModel):
    """Where and in which formats the batch's exports are written."""

    output_dir: str = Field(
        default="output",
        description="Where each batch gets its own sub-folder: a local folder, an S3 prefix 's3://bucket/prefix', "
        "or a saved destination block as 'BLOCK-TYPE/NAME' (e.g. 's3-destination/results').",
    )
    formats: list[ExportFormat] = Field(
        default=list(ExportFormat),  # a literal default, so the UI's form shows every format selected
        description="Export formats; report.json is always written. "
        "json: documents.json, jsonl: documents.jsonl, csv: documents.csv (+ line_items.csv), "
        "xlsx: documents.xlsx (documents, line_items, errors sheets), parquet: documents.parquet.",
    )
