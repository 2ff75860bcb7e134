"""The pydantic models every part of docbatch speaks.

They live under `blocks/` because sources and extractors (blocks) produce them and
blocks may import nothing from `tasks/` or `flows/`; tasks and flows import them from here.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorKind(str, enum.Enum):
    """Why one document failed, coarse enough to act on.

    - ``empty``: the file has zero bytes.
    - ``unsupported``: a format the extractor does not read (archives, legacy Office, binaries).
    - ``encrypted``: password protected and no candidate password opened it.
    - ``corrupt``: the bytes claim a format but do not parse as it.
    - ``too_large``: over a size, page or memory limit of the extractor.
    - ``timeout``: the parse or the back-end took longer than allowed.
    - ``no_text``: readable, but holds no text (scans, images): needs OCR.
    - ``undecodable``: text whose character encoding could not be determined.
    - ``vanished``: listed, then gone before it could be read.
    - ``permission_denied``: present but not readable by this process.
    - ``refused``: not read on purpose (a symlink leaving the source root, a special file).
    - ``backend``: a remote extraction service failed or answered nonsense.
    - ``template``: a template matched but could not give its required fields, or raised.
    - ``invalid_output``: a model answered, twice, with output that does not validate against the
      batch's schema (the result keeps the reply, truncated, in ``raw_output``).
    - ``worker``: the child flow run extracting this document's share (``workers > 0``) failed
      before giving it a result (it could not reach the source or destination, or crashed more
      often than it is started again); the message says why.
    - ``internal``: a bug in docbatch or an extractor; the message says what raised.
    """

    empty = "empty"
    unsupported = "unsupported"
    encrypted = "encrypted"
    corrupt = "corrupt"
    too_large = "too_large"
    timeout = "timeout"
    no_text = "no_text"
    undecodable = "undecodable"
    vanished = "vanished"
    permission_denied = "permission_denied"
    refused = "refused"
    backend = "backend"
    template = "template"
    invalid_output = "invalid_output"
    worker = "worker"
    internal = "internal"


class ExportFormat(str, enum.Enum):
    """Export files written into a batch's folder (report.json is always written)."""

    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    xlsx = "xlsx"
    parquet = "parquet"
    review = "review"  # review.html: a page a person opens (tasks.review_page); written after the others
    # Readable reports (tasks.export_readable), opt-in: each costs time at the batch's end.
    xml = "xml"  # documents.xml
    txt = "txt"  # documents.txt
    html = "html"  # documents.html
    docx = "docx"  # documents.docx
    pdf = "pdf"  # documents.pdf


# What a batch writes when no format is named (CLI, UI form, Python): the formats docbatch had
# before the readable reports, which stay opt-in so a default batch's end costs what it did.
DEFAULT_FORMATS: list[ExportFormat] = [
    ExportFormat.json, ExportFormat.jsonl, ExportFormat.csv, ExportFormat.xlsx, ExportFormat.parquet, ExportFormat.review,
]


DocumentStatus = Literal["succeeded", "failed", "skipped"]
BatchStatus = Literal["completed", "partially_failed", "failed"]


_FIELDS_SET: dict[frozenset[str], set[str]] = {}  # DocumentRef.model_post_init


class DocumentRef(BaseModel):
    """One listed document: where it is and how it looked when listed, never its bytes."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="Position in the batch, 0-based; results keep this order.")
    uri: str = Field(description="Where the source finds it again (a path or an object URI).")
    name: str = Field(description="Path relative to the source root, with '/' separators.")
    size: int = Field(ge=0, description="Size in bytes at listing time.")
    modified: datetime | None = Field(default=None, description="Last modification at listing time.")
    fingerprint: str = Field(description="Identity at listing time: 'size:mtime_ns' locally, the ETag on S3.")
    media_type: str | None = Field(default=None, description="Type guessed from the name; the result holds the type read from the content.")
    refused: str | None = Field(default=None, description="Set when the listing refused to read this entry, with why.")

    def model_post_init(self, context: Any, /) -> None:
        """Share one set of "fields set" among the references that set the same fields.

        pydantic gives every instance its own set of the names it was given: 728 bytes of a
        listed reference's 1.4 KB, and a batch keeps its listing's references to the end (141 MB
        per 100,000 documents, 66 MB with the set shared). A reference is frozen, so nothing adds
        to the set in place; `model_copy` and pickling copy it.
        """
        key = frozenset(self.__pydantic_fields_set__)
        object.__setattr__(self, "__pydantic_fields_set__", _FIELDS_SET.get(key) or _FIELDS_SET.setdefault(key, set(key)))


class Extraction(BaseModel):
    """What an extractor returns for one document."""

    fields: dict[str, Any] = Field(default_factory=dict)
    text: str = ""
    pages: int | None = None
    media_type: str = "application/octet-stream"
    warnings: list[str] = Field(default_factory=list)
    fields_source: str | None = Field(
        default=None, description="How the fields were obtained: 'embedded-xml', 'xml', 'template:<file>', 'layout'."
    )
    reader: str | None = Field(default=None, description="Which text reader gave the text the fields came from.")
    tokens_in: int | None = Field(default=None, description="Prompt tokens a model back-end billed for this document.")
    tokens_out: int | None = Field(default=None, description="Completion tokens a model back-end billed for this document.")
    route: str | None = Field(default=None, description="The routing extractor's route that took the document.")
    provenance: dict[str, Any] | None = Field(
        default=None, description="Where each value of `fields` was found, mirroring their structure (blocks.provenance)."
    )
    schema_name: str | None = Field(
        default=None, description="Which schema `fields` follow: 'invoice', 'receipt', or a custom schema's title."
    )
    ocr: bool = Field(default=False, description="True when some of the text was read by OCR (images, pages without a text layer).")
    words: list[tuple[Any, ...]] | None = Field(
        default=None, exclude=True,
        description="Positioned words (blocks.document.Word) and `page_sizes`, only when a model extractor asks the "
        "text reading for them, to box its answers; never stored or exported.",
    )
    page_sizes: list[tuple[float, float]] | None = Field(default=None, exclude=True)
    ocr_engine: str | None = Field(default=None, description="The OCR engine and version that read it, e.g. 'rapidocr 3.10.0'.")


class TokenEstimate(BaseModel):
    """One document's requests as a model extractor would send them (`docbatch run --dry-run`)."""

    pages: int | None = None
    text_chars: int = Field(description="Characters of document text sent (after any cut).")
    requests: int = Field(default=1, description="Requests it takes (more than one when a long document is split).")
    tokens_in: int = Field(description="Estimated prompt tokens, instructions and schema included.")
    tokens_out_max: int = Field(description="Most completion tokens the answers may take (max_tokens per request).")
    cost_max: float | None = Field(default=None, description="Cost of tokens_in plus tokens_out_max at the block's prices.")


class Check(BaseModel):
    """One validation check an accountant would run on a document's fields (blocks.validation)."""

    name: str = Field(description="Stable identifier, e.g. 'totals.net_plus_tax', 'seller.vat_id.checksum'.")
    passed: bool
    message: str = Field(description="What was compared, with the numbers, in one sentence.")
    fields: list[str] = Field(default_factory=list, description="Dotted paths of the fields the check read.")


class DocumentResult(BaseModel):
    """The outcome for one document, in the batch's input order."""

    ref: DocumentRef
    status: DocumentStatus
    fields: dict[str, Any] = Field(default_factory=dict)
    text: str | None = Field(default=None, description="Extracted text, kept only when asked.")
    pages: int | None = None
    media_type: str | None = None
    sha256: str | None = Field(default=None, description="Hash of the bytes actually extracted.")
    error: str | None = None
    error_kind: ErrorKind | None = None
    error_transient: bool | None = Field(default=None, description="True when a retry might succeed.")
    warnings: list[str] = Field(default_factory=list)
    attempts: int = 0
    duration_ms: float = 0.0
    extractor: str | None = None
    fields_source: str | None = Field(
        default=None,
        description="How the fields were obtained: 'embedded-xml' (a PDF's Factur-X/ZUGFeRD/XRechnung XML), "
        "'xml' (the document is an e-invoice), 'template:<file>' (an invoice2data template), 'layout' (labels and tables).",
    )
    reader: str | None = Field(
        default=None, description="Which text reader gave the text the fields came from: pdfium, pdftotext, pypdf, text, attachment:<name>…"
    )
    tokens_in: int | None = Field(default=None, description="Prompt tokens a model back-end billed for this document (all its requests).")
    tokens_out: int | None = Field(default=None, description="Completion tokens a model back-end billed for this document.")
    cost: float | None = Field(default=None, description="What this document's model requests cost, at the extractor block's prices.")
    route: str | None = Field(default=None, description="The routing extractor's route that took the document.")
    raw_output: str | None = Field(
        default=None, description="A model's reply that failed schema validation (error_kind invalid_output), truncated."
    )
    provenance: dict[str, Any] | None = Field(
        default=None,
        description="Where each value of `fields` was found, mirroring their structure: objects with the same keys, "
        "lists of the same length, each value {page, text, start, end, match, score, …} (blocks.provenance.Provenance) "
        "or null. Kept in report.json and documents.json(l), never in CSV/XLSX/Parquet columns.",
    )
    schema_name: str | None = Field(
        default=None, description="Which schema `fields` follow: 'invoice', 'receipt', or a custom schema's title."
    )
    ocr: bool | None = Field(default=None, description="True when some of the text was read by OCR (images, pages without a text layer).")
    ocr_engine: str | None = Field(default=None, description="The OCR engine and version that read it, e.g. 'rapidocr 3.10.0'.")
    review: Literal["ok", "needs_review"] | None = Field(
        default=None,
        description="'needs_review' when a validation check failed or a required value's confidence is below the "
        "batch's threshold (the reasons are in review_reasons); 'ok' otherwise; None for failed/skipped documents.",
    )
    review_reasons: list[str] = Field(default_factory=list, description="Why the document needs a person's look, one sentence each.")
    checks: list[Check] = Field(default_factory=list, description="The validation checks run on the fields, passed or not.")


class BatchTotals(BaseModel):
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = Field(default=0, description="Results taken from an interrupted run's checkpoint instead of extracted again.")
    tokens_in: int = Field(default=0, description="Prompt tokens billed by model back-ends, summed over the documents.")
    tokens_out: int = Field(default=0, description="Completion tokens billed by model back-ends, summed over the documents.")
    cost: float | None = Field(default=None, description="Summed cost of the model requests, when the extractor block has prices.")
    needs_review: int = Field(default=0, description="Succeeded documents whose review is 'needs_review'.")

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped


class BatchParameters(BaseModel):
    """What a batch was asked to do, so it can be re-run or its failures retried alike.

    Holds the flow's parameters as given: paths, URIs and saved block names, never a secret.
    """

    source: str
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    recursive: bool = True
    max_concurrency: int = 4
    extraction: dict[str, Any] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict)
    max_documents: int = 1000
    workers: int = 0
    work_pool: str = ""
    shared_path: bool = False


class ReviewNote(BaseModel):
    """One succeeded document that needs a person's look, as the batch report lists it."""

    index: int = Field(description="The document's position in the batch (its result's ref.index).")
    file: str = Field(description="Its path relative to the source root (ref.name).")
    reasons: list[str] = Field(default_factory=list, description="Its review_reasons: one sentence each.")


class DatabaseOutcome(BaseModel):
    """What a batch wrote to its SQL database, or what the database refused (`tasks.database`)."""

    url: str = Field(description="The database, its password masked.")
    status: Literal["written", "failed"]
    documents: int = Field(default=0, description="Document rows upserted.")
    line_items: int = Field(default=0, description="Line item rows upserted.")
    error: str | None = Field(default=None, description="What the database refused; the file exports were written anyway.")
    layout_version: int = Field(description="The docbatch table layout written (README: 'SQL database').")


class BatchReport(BaseModel):
    """The whole batch: what `extract_batch` returns and what report.json holds."""

    name: str
    flow_run_id: str | None = None
    source: str
    status: BatchStatus
    message: str = Field(description="One sentence a person can read: what happened.")
    totals: BatchTotals
    progress: float = Field(description="Finished documents as a percentage of the total.")
    success_rate: float | None = Field(default=None, description="Succeeded / (succeeded + failed) × 100; None when nothing was attempted.")
    started: datetime
    finished: datetime
    duration_s: float
    extractor: str
    output_dir: str | None = None
    exports: dict[str, str] = Field(default_factory=dict, description="Export name → path or URI.")
    parameters: BatchParameters | None = Field(default=None, description="The batch's parameters, for retry-failed.")
    batch_key: str | None = Field(default=None, description="Hash of source, filters and extractor settings: batches with equal keys give equal results.")
    extraction_key: str | None = Field(
        default=None, description="Hash of the extractor's settings alone: the database keys a document's row on (its URI, this)."
    )
    database: DatabaseOutcome | None = Field(default=None, description="The SQL database the batch wrote to, if any, and how that went.")
    needs_review: list[ReviewNote] = Field(
        default_factory=list, description="The succeeded documents whose review is 'needs_review', in input order, with why."
    )
    results: list[DocumentResult] = Field(default_factory=list)
    results_omitted: int = Field(
        default=0,
        description="How many results this object leaves out: a batch of more than 10,000 documents returns its "
        "report without them, so its flow never holds them all in memory; report.json and the exports hold every one.",
    )

    def failed_results(self) -> list[DocumentResult]:
        return [r for r in self.results if r.status == "failed"]

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Fields as pydantic iterates them, minus `results`.

        Prefect walks a flow's return value with `dict(model)` looking for futures to resolve.
        A report holds none, and walking 10,000 results took 2.9 s here, longer than the whole
        orchestration overhead of such a batch. `model_dump()`, JSON and pickling do not use
        this and keep the results.
        """
        for key, value in super().__iter__():
            if key != "results":
                yield key, value
