"""Offline readers for the formats the embedded extractor handles, one function per format.

Each takes bytes (or decoded text) and returns a `ReadDocument` (text, pages, words or table
cells, attachments, warnings); each raises `DocumentError` with a precise kind for what it
recognises as the document's fault.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import threading
import warnings
import zipfile
from typing import Any, Literal, NoReturn

from blocks import sniff
from blocks.document import PageSize, ReadDocument, Word
from blocks.errors import DocumentError, NeedsOcr
from blocks.models import ErrorKind

# 'off': never OCR; 'detect': report pages that need it (NeedsOcr); 'run': OCR them here.
OcrMode = Literal["off", "detect", "run"]

# PDFium is not thread-safe: concurrent calls from two threads can corrupt its state or
# crash the process, so every PDFium call in this process goes through this lock.
PDFIUM_LOCK = threading.Lock()

# Characters whose Unicode mapping is checked per page: an even sample, not every character
# (a per-character PDFium call costs about 1.3 µs, more than extracting the text itself).
_MAPPING_SAMPLE = 64
# Share of sampled characters without a Unicode mapping above which a PDF's text is garbage.
_UNMAPPED_NO_TEXT = 0.9
# Pages whose words (with boxes) are kept for the layout heuristics: an invoice's header,
# parties, table and totals sit on its first pages; a 2,000-page report needs no boxes.
WORD_PAGES = 30


def read_pdf(
    data: bytes, *, max_pages: int, passwords: list[str] | None = None, words: bool = True, attachments: bool = True,
    ocr: OcrMode = "off", ocr_max_pages: int = 50, ocr_budget_s: float | None = None,
) -> ReadDocument:
    """Text layer of every page, joined by form feeds, with words and boxes of the first
    `WORD_PAGES` pages and the embedded files that may be e-invoice XML.

    A page is *unreadable as text* when it yields no text but holds images (a scan) or drawings
    (text as curves), or when (nearly) all of its characters lack a Unicode mapping, as PDFium
    reports it (its text would be garbage). What happens to such pages depends on `ocr`:

    - 'off': they stay empty; a PDF whose pages are all empty or garbage fails with `no_text`,
      saying what its pages hold;
    - 'detect': raises `NeedsOcr` naming them (a plain parse worker, which cannot hold the OCR
      engine, lets the caller read the document again in an OCR worker);
    - 'run': each is rendered at a resolution chosen from its size (`ocr_render_scale`) and read
      by OCR (`blocks.ocr`), its words kept with their boxes in PDF points; past `ocr_max_pages`
      such pages, or when the next page would pass `ocr_budget_s` seconds (`blocks.ocr.PageClock`),
      the rest stay empty with a warning. Pages with a text layer are never OCR'd.

    Candidate passwords never appear in a message.
    """
    import pypdfium2 as pdfium

    from blocks.einvoice import pdf_attachments
    from blocks.words import page_words

    warnings_: list[str] = []
    positioned: list[Word] = []
    sizes: list[PageSize] = []
    embedded: list[tuple[str, bytes]] = []
    ocr_pages: list[int] = []
    needs_ocr: list[int] = []
    over_time: list[int] = []  # pages left unread by OCR's time budget
    clock = None
    if ocr == "run":
        from blocks.ocr import PageClock

        clock = PageClock(ocr_budget_s)
    with PDFIUM_LOCK:
        pdf = _open_pdf(pdfium, data, passwords or [])
        try:
            pages = len(pdf)
            if pages > max_pages:
                raise DocumentError(ErrorKind.too_large, f"the PDF has {pages} pages, over the limit of {max_pages}")
            if attachments:
                embedded, attachment_warnings = pdf_attachments(pdf)
                warnings_.extend(attachment_warnings)
            texts: list[str] = []
            unreadable = 0
            sampled = unmapped = 0
            content: set[str] = set()
            for number in range(pages):
                try:
                    page = pdf[number]
                except pdfium.PdfiumError:
                    unreadable += 1
                    continue
                try:
                    textpage = page.get_textpage()
                    try:
                        text = textpage.get_text_bounded()
                        garbled = False
                        if text.strip():
                            page_sampled, page_unmapped = _sample_unmapped(textpage)
                            garbled = ocr != "off" and page_sampled > 0 and page_unmapped >= _UNMAPPED_NO_TEXT * page_sampled
                            if not garbled:
                                sampled += page_sampled
                                unmapped += page_unmapped
                                if words and number < WORD_PAGES:
                                    positioned.extend(page_words(page, textpage, number + 1)[0])
                        if not text.strip() or garbled:
                            page_content = {"garbled"} if garbled else _page_content(page)
                            content |= page_content
                            if ocr != "off" and page_content:
                                needs_ocr.append(number + 1)
                                read = None
                                if clock is not None and len(ocr_pages) + len(over_time) < ocr_max_pages:
                                    if not over_time and clock.allows_another():
                                        read = _ocr_page(page, number + 1, clock)
                                        text = read.text
                                        positioned.extend(read.words)
                                        ocr_pages.append(number + 1)
                                    else:  # once out of time, every later page is too
                                        over_time.append(number + 1)
                                if garbled and read is None:
                                    text = ""
                        # one size a page, so page n's is sizes[n - 1] (blocks.source_provenance): for
                        # the word pages, and for every page when OCR may read some (its words can be
                        # on any page, and a template batch reads no text-layer words)
                        if (words and number < WORD_PAGES) or ocr == "run":
                            sizes.append(PageSize(*page.get_size()))
                        texts.append(text)
                    finally:
                        textpage.close()
                except pdfium.PdfiumError:
                    unreadable += 1
                finally:
                    page.close()
        finally:
            pdf.close()
    if ocr == "detect" and needs_ocr:
        raise NeedsOcr(needs_ocr, f"{len(needs_ocr)} of {pages} page(s) have no usable text layer")
    if unreadable == pages:
        raise DocumentError(ErrorKind.corrupt, f"none of the PDF's {pages} page(s) could be read")
    if unreadable:
        warnings_.append(f"{unreadable} of {pages} page(s) could not be read and were skipped")
    if over_time:
        from blocks.ocr import over_time as over_time_warning

        warnings_.append(over_time_warning(over_time))
    if len(ocr_pages) + len(over_time) < len(needs_ocr):
        warnings_.append(
            f"{len(needs_ocr)} page(s) have no text layer; only the first {ocr_max_pages} were read by OCR (ocr_max_pages)"
        )
    text = "\n\f".join(t.replace("\r\n", "\n").replace("\r", "\n") for t in texts)
    if not text.strip():
        if ocr_pages:
            raise DocumentError(
                ErrorKind.no_text, f"OCR found no text on the PDF's {len(ocr_pages)} page(s) without a text layer"
            )
        raise DocumentError(ErrorKind.no_text, _no_text_reason(pages, content))
    if sampled and unmapped >= _UNMAPPED_NO_TEXT * sampled:
        raise DocumentError(
            ErrorKind.no_text,
            "the PDF's text uses fonts without a Unicode mapping, so it extracts as meaningless characters, "
            "and OCR is off (turn the extractor's ocr on to read its pages as images)",
        )
    if unmapped:
        warnings_.append(
            f"about {max(1, round(100 * unmapped / sampled))} % of the characters have no Unicode mapping and may be garbled"
        )
    elif _no_letters(text):
        warnings_.append("the text holds no letters, only digits and symbols: a font may lack a Unicode mapping")
    return ReadDocument(
        text=text, pages=pages, media_type=sniff.PDF, words=positioned, page_sizes=sizes,
        attachments=embedded, warnings=warnings_, ocr_pages=ocr_pages,
    )


# A page to OCR is rendered so its longer side has about this many pixels (an A4 page at ~154
# dpi, where OCR reads 8-point print), but never above OCR_MAX_DPI (a receipt-sized page would
# otherwise be enlarged past what the scan holds). A poster-sized page gets the same pixels, at a
# lower resolution: rendering it at 72 dpi would be a 70-megapixel bitmap (ocrmypdf's hugemono).
OCR_LONG_SIDE = 1800
OCR_MAX_DPI = 400


def render_scale(width: float, height: float, *, max_dpi: float, max_side: float) -> float:
    """Pixels per PDF point to render a page of this size in points: `max_dpi`, lowered so the
    longer side stays within `max_side` pixels (an A0 drawing must not become 100 megapixels).
    OCR (`ocr_render_scale`), vision models and review previews (`blocks.page_images`) use it."""
    return min(max_dpi / 72, max_side / max(width, height, 1.0))


def ocr_render_scale(width: float, height: float) -> float:
    """Pixels per PDF point for a page to OCR (see OCR_LONG_SIDE)."""
    return render_scale(width, height, max_dpi=OCR_MAX_DPI, max_side=OCR_LONG_SIDE)


def _ocr_page(page: Any, number: int, clock: Any) -> Any:
    """OCR of one open page (caller holds PDFIUM_LOCK), boxes in points of the page as displayed
    (PDFium renders with the page's /Rotate, and its size is the rotated one)."""
    width, height = page.get_size()
    image = page.render(scale=ocr_render_scale(width, height)).to_pil()
    return clock.read(image, number, scale=image.width / max(width, 1.0))


def pdf_words(
    data: bytes, passwords: list[str] | None = None, pages: list[int] | None = None
) -> dict[int, tuple[list[Word], PageSize]]:
    """Words with boxes, and the size, of each of `pages` (1-based; default the first
    `WORD_PAGES`; pages past the end are left out), for a PDF read earlier without them.

    A batch with templates reads PDFs without words (a matching template needs only text, and
    words cost about half of a page's reading); the layout path asks for them here when no
    template matched, and provenance for the pages holding a template's values. The PDF opened
    once before, so it opens again.
    """
    import pypdfium2 as pdfium

    from blocks.words import page_words

    read: dict[int, tuple[list[Word], PageSize]] = {}
    with PDFIUM_LOCK:
        pdf = _open_pdf(pdfium, data, passwords or [])
        try:
            for number in pages if pages is not None else range(1, WORD_PAGES + 1):
                if not 1 <= number <= len(pdf):
                    continue
                page = pdf[number - 1]
                try:
                    textpage = page.get_textpage()
                    try:
                        read[number] = page_words(page, textpage, number)
                    finally:
                        textpage.close()
                finally:
                    page.close()
        finally:
            pdf.close()
    return read


def _open_pdf(pdfium: Any, data: bytes, passwords: list[str]) -> Any:
    """The opened document: first without a password, then with each candidate in turn."""
    from pypdfium2 import raw

    error: Exception | None = None
    for password in [None, *passwords]:
        try:
            return pdfium.PdfDocument(data, password=password)
        except pdfium.PdfiumError as exc:
            error = exc
            if getattr(exc, "err_code", None) != raw.FPDF_ERR_PASSWORD:
                break
    code = getattr(error, "err_code", None)
    if code == raw.FPDF_ERR_PASSWORD:
        if passwords:
            raise DocumentError(
                ErrorKind.encrypted, f"the PDF is password protected and none of the {len(passwords)} configured password(s) opens it"
            )
        raise DocumentError(
            ErrorKind.encrypted, "the PDF is password protected and no password is configured: add it to the extractor's passwords"
        )
    if code == raw.FPDF_ERR_SECURITY:
        raise DocumentError(ErrorKind.encrypted, "the PDF is encrypted with a security scheme PDFium does not support")
    if code == raw.FPDF_ERR_FORMAT:
        if b"%%EOF" not in data[-2048:]:
            raise DocumentError(ErrorKind.corrupt, "not a readable PDF: the file is truncated (no end-of-file marker) and could not be repaired")
        raise DocumentError(ErrorKind.corrupt, "not a readable PDF: its structure is damaged and could not be repaired")
    if code in (raw.FPDF_ERR_SUCCESS, raw.FPDF_ERR_PAGE):
        raise DocumentError(ErrorKind.corrupt, "not a readable PDF: it has no pages PDFium could find")
    raise DocumentError(ErrorKind.corrupt, f"not a readable PDF ({_pdfium_reason(str(error or ''))})")


def _sample_unmapped(textpage: Any) -> tuple[int, int]:
    """(characters sampled, of which without a Unicode mapping) on one text page."""
    from pypdfium2 import raw

    count = raw.FPDFText_CountChars(textpage.raw)
    if count <= 0:
        return 0, 0
    step = max(1, count // _MAPPING_SAMPLE)
    sampled = unmapped = 0
    for index in range(0, count, step):
        if raw.FPDFText_IsGenerated(textpage.raw, index) == 1:
            continue  # line breaks and spaces PDFium inserted itself
        sampled += 1
        unmapped += raw.FPDFText_HasUnicodeMapError(textpage.raw, index) == 1
    return sampled, unmapped


def _page_content(page: Any) -> set[str]:
    """What a page without text draws: 'image', 'drawing', or nothing; no object is decoded."""
    from pypdfium2 import raw

    found: set[str] = set()
    for number, obj in enumerate(page.get_objects(max_depth=4)):
        if obj.type == raw.FPDF_PAGEOBJ_IMAGE:
            return {"image"}
        if obj.type in (raw.FPDF_PAGEOBJ_PATH, raw.FPDF_PAGEOBJ_SHADING):
            found.add("drawing")
        if number >= 10_000:
            break
    return found


def _no_text_reason(pages: int, content: set[str]) -> str:
    if "image" in content:
        return f"the PDF has {pages} page(s) but no text layer, only images: it is probably scanned, and OCR is off (turn the extractor's ocr on to read it)"
    if "drawing" in content:
        return (
            f"the PDF has {pages} page(s) with drawings but no text layer: text drawn as curves needs OCR, which is off (turn the extractor's ocr on)"
        )
    return f"the PDF has {pages} blank page(s): no text layer, no images, nothing for OCR to read either"


def _no_letters(text: str) -> bool:
    """True for text with no letter in any script and more symbols than digits ('"7+%-')."""
    digits = symbols = 0
    for char in text:
        if char.isalpha():
            return False
        if char.isdigit():
            digits += 1
        elif not char.isspace():
            symbols += 1
    return symbols > digits


def _pdfium_reason(message: str) -> str:
    if "(" in message and message.endswith(")"):
        return message[message.rfind("(") + 1 : -1].replace("PDFium: ", "")
    return message or "unknown PDFium error"


def refuse_archive(data: bytes, media_type: str) -> NoReturn:
    """Fail an archive as `unsupported`, naming a few of its members when it is a ZIP; never extracts them."""
    what = sniff.ARCHIVES.get(media_type, "an archive")
    members: list[str] = []
    if media_type == sniff.ZIP:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = [info.filename for info in archive.infolist() if not info.is_dir()]
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
            members = []
        what += " (not an Office document)"
    if members:
        names = ["".join(c if c.isprintable() else "?" for c in name)[:80] for name in members[:3]]
        shown = ", ".join(names) + (f" and {len(members) - 3} more" if len(members) > 3 else "")
        what += f" holding {len(members)} file(s): {shown}"
    raise DocumentError(ErrorKind.unsupported, f"{what}; archives are not opened: unpack it and add its files to the batch")


def read_docx(data: bytes) -> ReadDocument:
    """Paragraphs and tables of the body, then of headers and footers; each table's rows as cells too."""
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
            tables.extend(part_tables)
    text = "\n".join(lines).strip("\n")
    return ReadDocument(text=text, pages=None, media_type=sniff.DOCX, tables=tables)


def _docx_lines(container: Any) -> tuple[list[str], list[list[list[str]]]]:
    """Paragraphs and table rows of a body, header or footer, in document order, and the tables' cells."""
    from docx.table import Table

    lines: list[str] = []
    tables: list[list[list[str]]] = []
    for item in container.iter_inner_content():
        if isinstance(item, Table):
            rows = [[_docx_cell_text(cell) for cell in row.cells] for row in item.rows]
            tables.append(rows)
            lines.extend("\t".join(row) for row in rows)
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


def read_xlsx(data: bytes, *, max_cells: int, media_type: str = sniff.XLSX) -> ReadDocument:
    """Every sheet's non-empty rows (values, not formulas); each sheet is one table; pages = sheets."""
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
    tables: list[list[list[str]]] = []
    row_numbers: list[list[int]] = []
    sheet_names: list[str] = []
    cells = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for sheet in workbook.worksheets:
                rows: list[list[str]] = []
                numbers: list[int] = []
                lines.append(f"# {sheet.title}")
                for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):  # rows start at A1
                    values = ["" if v is None else _cell_text(v) for v in row]
                    while values and values[-1] == "":
                        values.pop()
                    cells += len(values)
                    if cells > max_cells:
                        raise DocumentError(ErrorKind.too_large, f"the workbook has more than {max_cells} cells")
                    if values:
                        lines.append("\t".join(values))
                        rows.append(values)
                        numbers.append(number)
                tables.append(rows)
                row_numbers.append(numbers)
                sheet_names.append(sheet.title)
    finally:
        workbook.close()
    return ReadDocument(
        text="\n".join(lines), pages=len(tables), media_type=media_type, tables=tables,
        table_names=sheet_names, table_rows=row_numbers,
    )


def _cell_text(value: Any) -> str:
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:-9] if text.endswith("T00:00:00") else text
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_html(text: str) -> ReadDocument:
    """Visible text (no scripts or styles), one line per block, and every <table>'s rows as cells."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    tables = []
    for table in soup.find_all("table"):
        rows = [[cell.get_text(" ", strip=True) for cell in row.find_all(["td", "th"])] for row in table.find_all("tr")]
        tables.append([row for row in rows if any(row)])
    lines = [line.strip() for line in soup.get_text("\n").splitlines()]
    body = "\n".join(line for line in lines if line)
    return ReadDocument(text=body, pages=None, media_type=sniff.HTML, tables=tables)


_XML_DECLARATION = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")


def read_xml(text: str) -> ReadDocument:
    """The text nodes of an XML document, one per line; entities are never expanded, nothing is fetched."""
    from lxml import etree

    from blocks.einvoice import safe_xml_parser

    try:
        # Already decoded: its declaration's encoding no longer applies (lxml refuses it on a str).
        root = etree.fromstring(_XML_DECLARATION.sub("", text, count=1), safe_xml_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise DocumentError(ErrorKind.corrupt, f"malformed XML ({exc})") from None
    if root is None:
        raise DocumentError(ErrorKind.corrupt, "malformed XML (no root element)")
    parts = [t.strip() for t in root.itertext() if isinstance(t, str) and t.strip()]
    return ReadDocument(text="\n".join(parts), pages=None, media_type=sniff.XML)


def read_csv_text(text: str) -> ReadDocument:
    """Rows with the sniffed delimiter (, ; tab |); text is the rows tab-separated; one table."""
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    lines = ["\t".join(row) for row in rows]
    return ReadDocument(text="\n".join(lines), pages=None, media_type=sniff.CSV, tables=[rows])


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
