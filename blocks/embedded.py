"""The offline default extractor: no network, no model download, pure-Python and PDFium readers."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, SecretStr

from blocks import readers, sniff
from blocks.errors import DocumentError
from blocks.extractor import Extractor
from blocks.fields import basic_fields
from blocks.models import ErrorKind, Extraction

_TEXT_KINDS = {sniff.TEXT, sniff.MARKDOWN, sniff.CSV, sniff.HTML, sniff.XML}


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

    def extract(self, name: str, data: bytes) -> Extraction:
        if not data:
            raise DocumentError(ErrorKind.empty, "the file is empty (0 bytes)")
        media_type = sniff.sniff_binary(data)
        warnings: list[str] = []
        fields: dict[str, Any]
        if media_type == sniff.PDF:
            text, pages, fields = readers.read_pdf(
                data, max_pages=self.max_pages, passwords=[p.get_secret_value() for p in self.passwords]
            )
        elif media_type == sniff.DOCX:
            text, pages, fields = readers.read_docx(data)
        elif media_type in (sniff.XLSX, sniff.XLSM):
            text, pages, fields = readers.read_xlsx(data, max_cells=self.max_cells)
        elif media_type == sniff.OLE_ENCRYPTED_OOXML:
            raise DocumentError(ErrorKind.encrypted, "a password-protected Office document; remove the password and retry")
        elif media_type is not None and media_type.startswith("image/"):
            raise DocumentError(ErrorKind.no_text, f"an image ({media_type}) holds no text layer: use an OCR extractor")
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
        if self.extract_fields:
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
