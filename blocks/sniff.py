"""Media type from the bytes, not from the name: names lie (a .pdf that is HTML, a .xlsx that is an empty zip).

Written here rather than taken from libmagic/python-magic because that needs a system
library the fresh machine lacks, and pure-Python sniffers stop at "application/zip" for
Office files; the few signatures that matter for documents fit in this module.
"""

from __future__ import annotations

import io
import zipfile

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSM = "application/vnd.ms-excel.sheet.macroEnabled.12"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODF = "application/vnd.oasis.opendocument"
ZIP = "application/zip"
OLE = "application/x-ole-storage"
OLE_ENCRYPTED_OOXML = "application/x-ole-encrypted-ooxml"
HTML = "text/html"
XML = "application/xml"
CSV = "text/csv"
MARKDOWN = "text/markdown"
TEXT = "text/plain"
BINARY = "application/octet-stream"

# Archives are recognised but never opened: their members are documents of their own, and a
# batch that unpacked them would hide what it read (and invite zip bombs).
ARCHIVES = {
    ZIP: "a ZIP archive",
    "application/gzip": "a gzip archive",
    "application/x-7z-compressed": "a 7-Zip archive",
    "application/vnd.rar": "a RAR archive",
}

_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
# A BMP starts with 'BM', as does text ('BMW AG ...'): its DIB header's size (at byte 14) tells them apart.
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"{\\rtf", "application/rtf"),
)


def sniff_binary(data: bytes) -> str | None:
    """Type of binary formats recognisable by signature, or None for "probably text"."""
    head = data[:1024]
    if b"%PDF-" in head:
        return PDF
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return _sniff_zip(data)
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        # Password-protected .docx/.xlsx are OLE containers holding an EncryptionInfo stream.
        # OLE directory entries (stream names, UTF-16) can sit anywhere in the file.
        if "EncryptionInfo".encode("utf-16-le") in data:
            return OLE_ENCRYPTED_OOXML
        return OLE
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"
    for signature, media_type in _IMAGE_SIGNATURES + _OTHER_SIGNATURES:
        if data.startswith(signature):
            return media_type
    return None


def _sniff_zip(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            content_types = ""
            if "[Content_Types].xml" in names:
                content_types = archive.read("[Content_Types].xml")[:65536].decode("utf-8", "replace")
            if "mimetype" in names:
                mimetype = archive.read("mimetype")[:200].decode("ascii", "replace").strip()
                if mimetype.startswith(ODF):
                    return mimetype
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError, NotImplementedError, EOFError):
        return ZIP
    if "word/document.xml" in names:
        return DOCX
    if "xl/workbook.xml" in names or "xl/workbook.bin" in names:
        return XLSM if "macroEnabled" in content_types else XLSX
    if "ppt/presentation.xml" in names:
        return PPTX
    return ZIP


def sniff_text(text: str, name: str) -> str:
    """Kind of an already decoded text; the name only separates look-alike plain-text kinds."""
    head = text[:4096].lstrip("\ufeff \t\r\n").lower()
    if head.startswith("<!doctype html") or head.startswith("<html") or (
        "<html" in head[:1024] and ("<body" in head or "<head" in head)
    ):
        return HTML
    if head.startswith("<?xml") or (head.startswith("<") and not head.startswith("<!--") and _looks_like_xml(head)):
        if "<html" in head:
            return HTML
        return XML
    lower = name.lower()
    if lower.endswith((".htm", ".html")) and "<" in head and ">" in head:
        return HTML
    if lower.endswith((".csv", ".tsv")):
        return CSV
    if lower.endswith((".md", ".markdown")):
        return MARKDOWN
    return TEXT


def _looks_like_xml(head: str) -> bool:
    first = head.split(">", 1)[0]
    return first.startswith("<") and " " not in first[:2] and first[1:2].isalpha()
