"""Offline readers for the formats the embedded extractor handles, one function per format.

Each takes bytes and returns (text, pages, fields); each raises `DocumentError` with a precise
kind for what it recognises as the document's fault.
"""

from __future__ import annotations

import codecs
import csv
import io
import threading
import warnings
import zipfile
from typing import Any

from blocks.errors import DocumentError
from blocks.models import ErrorKind

# PDFium is not thread-safe: concurrent calls from two threads can corrupt its state or
# crash the process, so every PDFium call in this process goes through this lock.
PDFIUM_LOCK = threading.Lock()

ReaderOutput = tuple[str, int | None, dict[str, Any]]


def read_pdf(data: bytes, *, max_pages: int, passwords: list[str] | None = None) -> ReaderOutput:
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        pdf = None
        last_error: Exception | None = None
        for password in [None, *(passwords or [])]:
            try:
                pdf = pdfium.PdfDocument(data, password=password)
                break
            except pdfium.PdfiumError as exc:
                last_error = exc
                if "password" not in str(exc).lower():
                    break
        if pdf is None:
            message = str(last_error or "")
            if "password" in message.lower():
                raise DocumentError(ErrorKind.encrypted, "the PDF is password protected and no known password opens it")
            raise DocumentError(ErrorKind.corrupt, f"not a readable PDF ({_pdfium_reason(message)})")
        try:
            pages = len(pdf)
            if pages > max_pages:
                raise DocumentError(ErrorKind.too_large, f"the PDF has {pages} pages, over the limit of {max_pages}")
            texts: list[str] = []
            for number in range(pages):
                page = pdf[number]
                try:
                    textpage = page.get_textpage()
                    try:
                        texts.append(textpage.get_text_bounded())
                    finally:
                        textpage.close()
                finally:
                    page.close()
        except pdfium.PdfiumError as exc:
            raise DocumentError(ErrorKind.corrupt, f"PDF page could not be read ({_pdfium_reason(str(exc))})") from None
        finally:
            pdf.close()
    text = "\n\f".join(t.replace("\r\n", "\n").replace("\r", "\n") for t in texts)
    if not text.strip():
        raise DocumentError(
            ErrorKind.no_text,
            f"the PDF has {pages} page(s) but no text layer; it is probably scanned: use an OCR extractor",
        )
    return text, pages, {}


def _pdfium_reason(message: str) -> str:
    if "(" in message and message.endswith(")"):
        return message[message.rfind("(") + 1 : -1].replace("PDFium: ", "")
    return message or "unknown PDFium error"


def read_docx(data: bytes) -> ReaderOutput:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DocumentError(ErrorKind.corrupt, f"not a readable Word document ({exc})") from None
    lines, tables = _docx_lines(document)
    seen_parts: set[int] = set()
    for section in document.sections:
        for part in (section.header, section.footer):
            if part.is_linked_to_previous or id(part.part) in seen_parts:
                continue
            seen_parts.add(id(part.part))
            part_lines, part_tables = _docx_lines(part)
            lines.extend(part_lines)
            tables += part_tables
    text = "\n".join(lines).strip("\n")
    return text, None, {"tables": tables}


def _docx_lines(container: Any) -> tuple[list[str], int]:
    """Paragraphs and table rows of a body, header or footer, in document order."""
    from docx.table import Table

    lines: list[str] = []
    tables = 0
    for item in container.iter_inner_content():
        if isinstance(item, Table):
            tables += 1
            for row in item.rows:
                lines.append("\t".join(_docx_cell_text(cell) for cell in row.cells))
        else:
            lines.append(item.text)
    return lines, tables


def _docx_cell_text(cell: Any) -> str:
    """A cell's paragraphs and nested tables on one line, parts joined by ' / '."""
    from docx.table import Table

    parts: list[str] = []
    for item in cell.iter_inner_content():
        if isinstance(item, Table):
            parts.extend(_docx_cell_text(inner) for row in item.rows for inner in row.cells)
        elif item.text.strip():
            parts.append(item.text.strip())
    return " / ".join(p for p in parts if p)


def read_xlsx(data: bytes, *, max_cells: int) -> ReaderOutput:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        with warnings.catch_warnings():
            # openpyxl warns about every extension it drops ("Unknown extension is not supported")
            warnings.simplefilter("ignore", UserWarning)
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, KeyError, ValueError, zipfile.BadZipFile, TypeError, IndexError) as exc:
        raise DocumentError(ErrorKind.corrupt, f"not a readable Excel workbook ({exc})") from None
    lines: list[str] = []
    sheets: list[str] = []
    cells = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for sheet in workbook.worksheets:
                sheets.append(sheet.title)
                lines.append(f"# {sheet.title}")
                for row in sheet.iter_rows(values_only=True):
                    values = ["" if v is None else _cell_text(v) for v in row]
                    while values and values[-1] == "":
                        values.pop()
                    cells += len(values)
                    if cells > max_cells:
                        raise DocumentError(ErrorKind.too_large, f"the workbook has more than {max_cells} cells")
                    if values:
                        lines.append("\t".join(values))
    finally:
        workbook.close()
    return "\n".join(lines), len(sheets), {"sheets": sheets}


def _cell_text(value: Any) -> str:
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:-9] if text.endswith("T00:00:00") else text
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_html(text: str) -> ReaderOutput:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    lines = [line.strip() for line in soup.get_text("\n").splitlines()]
    body = "\n".join(line for line in lines if line)
    fields: dict[str, Any] = {"title": title} if title else {}
    return body, None, fields


def read_xml(text: str) -> ReaderOutput:
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise DocumentError(ErrorKind.corrupt, f"malformed XML ({exc})") from None
    parts = [t.strip() for t in root.itertext() if t.strip()]
    return "\n".join(parts), None, {"xml_root": root.tag.rsplit("}", 1)[-1]}


def read_csv_text(text: str) -> ReaderOutput:
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    header = rows[0] if rows else []
    lines = ["\t".join(row) for row in rows]
    return "\n".join(lines), None, {"rows": max(len(rows) - 1, 0), "columns": header}


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes believed to be text; returns (text, encoding) or raises `DocumentError`."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                raise DocumentError(ErrorKind.undecodable, f"starts with a {encoding} byte-order mark but is not valid {encoding}") from None
    if b"\x00" in data[:8192]:
        raise DocumentError(ErrorKind.unsupported, "binary data of an unknown format (not text, not a known document type)")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[:1_000_000]).best()
    if best is None or best.encoding is None:
        raise DocumentError(ErrorKind.undecodable, "text in an unknown character encoding (not UTF-8, no encoding could be detected)")
    try:
        return data.decode(best.encoding), best.encoding
    except (UnicodeDecodeError, LookupError):
        raise DocumentError(ErrorKind.undecodable, f"text that does not decode as its detected encoding {best.encoding}") from None
