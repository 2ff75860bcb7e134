"""What the embedded extractor does with one document's bytes, as a module-level function.

`parse_document` runs in a parsing worker process (`blocks.isolation`) or, with
`EmbeddedExtractor(isolate=False)`, in the calling thread. This module and what it imports must
not import Prefect: the workers stay small and start in milliseconds.
"""

from __future__ import annotations

from typing import Any, TypedDict

from blocks import readers, sniff
from blocks.errors import DocumentError
from blocks.fields import basic_fields
from blocks.models import ErrorKind, Extraction

_TEXT_KINDS = {sniff.TEXT, sniff.MARKDOWN, sniff.CSV, sniff.HTML, sniff.XML}


class ParseSettings(TypedDict):
    """The extractor's settings a parse needs; passwords in plain text, only for the call."""

    max_pages: int
    max_cells: int
    extract_fields: bool
    passwords: list[str]


def parse_document(name: str, data: bytes, settings: ParseSettings) -> Extraction:
    """Text, page count and fields of one document; raises `DocumentError` for what it recognises."""
    if not data:
        raise DocumentError(ErrorKind.empty, "the file is empty (0 bytes)")
    media_type = sniff.sniff_binary(data)
    warnings: list[str] = []
    fields: dict[str, Any]
    if media_type == sniff.PDF:
        text, pages, fields = readers.read_pdf(data, max_pages=settings["max_pages"], passwords=settings["passwords"])
    elif media_type == sniff.DOCX:
        text, pages, fields = readers.read_docx(data)
    elif media_type in (sniff.XLSX, sniff.XLSM):
        text, pages, fields = readers.read_xlsx(data, max_cells=settings["max_cells"])
    elif media_type == sniff.OLE_ENCRYPTED_OOXML:
        raise DocumentError(ErrorKind.encrypted, "a password-protected Office document; remove the password and retry")
    elif media_type is not None and media_type.startswith("image/"):
        raise DocumentError(ErrorKind.no_text, f"an image ({media_type}) holds no text layer: use an OCR extractor")
    elif media_type in sniff.ARCHIVES:
        readers.refuse_archive(data, media_type)
    elif media_type is not None:
        raise DocumentError(ErrorKind.unsupported, f"{_describe(media_type)} is not a format the embedded extractor reads")
    else:
        decoded, encoding = readers.decode_text(data)
        media_type = sniff.sniff_text(decoded, name)
        if encoding not in ("utf-8", "utf-8-sig", "ascii"):
            warnings.append(f"decoded as {encoding}")
        if media_type == sniff.HTML:
            text, pages, fields = readers.read_html(decoded)
        elif media_type == sniff.XML:
            text, pages, fields = readers.read_xml(decoded)
        elif media_type == sniff.CSV:
            text, pages, fields = readers.read_csv_text(decoded)
        else:
            text, pages, fields = decoded, None, {}
    if media_type not in _TEXT_KINDS and not text.strip() and media_type != sniff.PDF:
        warnings.append("the document holds no text")
    warnings.extend(readers.pop_warnings(fields))
    if settings["extract_fields"]:
        fields = {**basic_fields(text), **fields}
    return Extraction(fields=fields, text=text, pages=pages, media_type=media_type, warnings=warnings)


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
