"""What the embedded extractor does with one document's bytes, as a module-level function.

`parse_document` runs in a parsing worker process (`blocks.isolation`) or, with
`EmbeddedExtractor(isolate=False)`, in the calling thread. It reads the document once
(`read_document`) and hands what it read to the extraction paths (`blocks.field_paths`).
This module and what it imports must not import Prefect: the workers stay small and start
in milliseconds.
"""

from __future__ import annotations

from typing import TypedDict

from blocks import readers, sniff
from blocks.document import ReadDocument
from blocks.errors import DocumentError
from blocks.models import ErrorKind, Extraction

_TEXT_KINDS = {sniff.TEXT, sniff.MARKDOWN, sniff.CSV, sniff.HTML, sniff.XML}


class ParseSettings(TypedDict, total=False):
    """The extractor's settings a parse needs; passwords in plain text, only for the call."""

    max_pages: int
    max_cells: int
    extract_fields: bool
    passwords: list[str]
    embedded_xml: bool  # read e-invoice XML embedded in PDFs (Factur-X, ZUGFeRD, XRechnung)
    templates: str | None  # a folder of invoice2data templates
    templates_digest: str | None  # its content hash: a worker loads the folder once per digest, refuses a changed one
    languages: list[str]  # ISO 639-1 codes that narrow date parsing; empty: any
    on_no_template: str  # 'layout' (fall back, with a warning) or 'fail'
    ocr: bool  # read images and PDF pages without a usable text layer by OCR
    ocr_here: bool  # this is an OCR worker: run OCR (else a PDF that needs it raises NeedsOcr)
    ocr_max_pages: int  # pages read by OCR at most per document
    ocr_budget_s: float | None  # seconds of OCR after which the pages left are not read (blocks.ocr.PageClock)
    max_pixels: int  # an image page with more pixels fails as too_large before it is decoded
    document_schema: str  # 'auto' (a receipt when it looks like one, else an invoice), 'invoice' or 'receipt'
    keep_words: bool  # return the positioned words and page sizes (a model extractor boxes its answers with them)


def parse_document(name: str, data: bytes, settings: ParseSettings) -> Extraction:
    """Text, page count and fields of one document; raises `DocumentError` for what it recognises."""
    from blocks.field_paths import extract_fields

    document = read_document(name, data, settings)
    extraction = Extraction(
        text=document.text, pages=document.pages, media_type=document.media_type, warnings=list(document.warnings)
    )
    if document.ocr_pages:
        from blocks.ocr import engine_name

        from blocks.field_paths import reader_of

        extraction.ocr = True
        extraction.ocr_engine = engine_name()
        extraction.reader = reader_of(document)  # 'ocr' or 'pdfium+ocr'; the fields' path may say more
    if settings.get("keep_words"):
        extraction.words = [tuple(word) for word in document.words]
        extraction.page_sizes = [(size.width, size.height) for size in document.page_sizes]
    if settings.get("extract_fields", True):
        outcome = extract_fields(document, data, settings)
        extraction.fields = outcome.fields
        extraction.fields_source = outcome.source
        extraction.schema_name = outcome.schema
        extraction.reader = outcome.reader
        extraction.warnings.extend(outcome.warnings)
        from blocks.source_provenance import provenance_of  # where each value was read (here: the words live here)

        extraction.provenance = provenance_of(document, outcome, data, settings.get("passwords"), extraction.warnings)
    return extraction


def read_document(name: str, data: bytes, settings: ParseSettings) -> ReadDocument:
    """The document read once by the reader its content calls for (never its extension)."""
    if not data:
        raise DocumentError(ErrorKind.empty, "the file is empty (0 bytes)")
    media_type = sniff.sniff_binary(data)
    if media_type == sniff.PDF:
        document = readers.read_pdf(
            data,
            max_pages=settings.get("max_pages", 2000),
            passwords=settings.get("passwords", []),
            # with templates, words are read only if no template matches (blocks.field_paths)
            words=(settings.get("extract_fields", True) and not settings.get("templates")) or settings.get("keep_words", False),
            attachments=settings.get("embedded_xml", True),
            ocr=_ocr_mode(settings),
            ocr_max_pages=settings.get("ocr_max_pages", 50),
            ocr_budget_s=settings.get("ocr_budget_s"),
        )
    elif media_type == sniff.DOCX:
        document = readers.read_docx(data)
    elif media_type in (sniff.XLSX, sniff.XLSM):
        document = readers.read_xlsx(data, max_cells=settings.get("max_cells", 2_000_000), media_type=media_type)
    elif media_type == sniff.OLE_ENCRYPTED_OOXML:
        raise DocumentError(ErrorKind.encrypted, "a password-protected Office document; remove the password and retry")
    elif media_type is not None and media_type.startswith("image/"):
        if not settings.get("ocr_here"):
            raise DocumentError(
                ErrorKind.no_text, f"an image ({media_type}) holds no text layer, and OCR is off (turn the extractor's ocr on)"
            )
        from blocks.images import read_image

        document = read_image(
            data, media_type, max_pixels=settings.get("max_pixels", 50_000_000), max_pages=settings.get("ocr_max_pages", 50),
            budget_s=settings.get("ocr_budget_s"),
        )
        document.ocr_pages = list(range(1, len(document.page_sizes) + 1))
    elif media_type in sniff.ARCHIVES:
        readers.refuse_archive(data, media_type)
    elif media_type is not None:
        raise DocumentError(ErrorKind.unsupported, f"{_describe(media_type)} is not a format the embedded extractor reads")
    else:
        decoded, encoding = readers.decode_text(data)
        kind = sniff.sniff_text(decoded, name)
        if kind == sniff.HTML:
            document = readers.read_html(decoded)
        elif kind == sniff.XML:
            document = readers.read_xml(decoded)
        elif kind == sniff.CSV:
            document = readers.read_csv_text(decoded)
        else:
            document = ReadDocument(text=decoded, pages=None, media_type=kind)
        if encoding not in ("utf-8", "utf-8-sig", "ascii"):
            document.warnings.insert(0, f"decoded as {encoding}")
    if document.media_type not in _TEXT_KINDS and not document.text.strip() and document.media_type != sniff.PDF:
        document.warnings.append("the document holds no text")
    return document


def _ocr_mode(settings: ParseSettings) -> readers.OcrMode:
    if not settings.get("ocr", False):
        return "off"
    return "run" if settings.get("ocr_here") else "detect"


def _describe(media_type: str) -> str:
    names = {
        sniff.ZIP: "a ZIP archive",
        sniff.OLE: "a legacy Office file (.doc/.xls/.ppt)",
        sniff.PPTX: "a PowerPoint presentation",
        "application/gzip": "a gzip archive",
        "application/x-7z-compressed": "a 7-Zip archive",
        "application/vnd.rar": "a RAR archive",
        "application/rtf": "an RTF document",
    }
    return names.get(media_type, f"a {media_type} file")
