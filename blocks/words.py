"""Positioned words of one PDF page, built from PDFium's characters.

The page's whole text is read with one `FPDFText_GetText` call (one UTF-16 unit per character
index), and each character's loose (font-based) box with `FPDFText_GetLooseCharBox`; characters are grouped into words
on whitespace, on line changes and on horizontal gaps wider than a fraction of the font size.
Boxes are converted to a top-left origin with y growing downwards, in PDF points.
Runs inside a parsing worker while the caller holds `PDFIUM_LOCK`.
"""

from __future__ import annotations

import ctypes
from typing import Any

from blocks.document import PageSize, Word

# A gap between two characters wider than this share of the line height starts a new word
# (PDFs often position words without space characters, e.g. table cells).
_GAP_RATIO = 0.4
# Characters whose vertical centres differ by more than this share of the height are on another line.
_LINE_RATIO = 0.5


def page_words(page: Any, textpage: Any, page_number: int) -> tuple[list[Word], PageSize]:
    """Words with boxes of one open page (caller holds PDFIUM_LOCK); see the module docstring."""
    from pypdfium2 import raw

    width, height = page.get_size()
    size = PageSize(width, height)
    handle = textpage.raw
    count = raw.FPDFText_CountChars(handle)
    if count <= 0:
        return [], size
    buffer = (ctypes.c_ushort * (count + 1))()
    written = raw.FPDFText_GetText(handle, 0, count, buffer)
    units = list(buffer[: max(0, written - 1)])
    if len(units) != count or any(0xD800 <= u <= 0xDFFF for u in units):
        # surrogate pairs (characters outside the BMP) break the one-unit-per-index mapping
        units = [raw.FPDFText_GetUnicode(handle, i) for i in range(count)]
    rect = raw.FS_RECTF()
    p_rect = ctypes.byref(rect)
    get_box = raw.FPDFText_GetLooseCharBox  # font-based boxes: one height for a whole line
    # PDFium's char boxes are in page space; a page with /Rotate is shown (and rendered) turned,
    # and `get_size` gives its displayed size: boxes are mapped to that displayed page
    # Characters are grouped on the displayed page, as a person reads it: a landscape page stored
    # portrait with /Rotate 90 reads left to right there (text printed sideways on the displayed
    # page, rarer, splits into letters instead).
    turn = _display_transform(page, width, height) if page.get_rotation() else None

    words: list[Word] = []
    chars: list[str] = []
    wx0 = wx1 = wtop = wbottom = 0.0
    last_x1 = 0.0
    line_mid = line_h = 0.0

    def flush() -> None:
        if chars:
            text = "".join(chars).strip()
            if text:
                words.append(Word(text, round(wx0, 2), round(wtop, 2), round(wx1, 2), round(wbottom, 2), page_number))
            chars.clear()

    for index in range(count):
        code = units[index]
        if code in (0x20, 0x09, 0x0A, 0x0D, 0xA0, 0x0C, 0x00, 0xFFFE, 0x02) or 0x2000 <= code <= 0x200B:
            flush()
            continue
        if not get_box(handle, index, p_rect):
            continue
        if turn is None:
            x0, x1 = rect.left, rect.right
            y0, y1 = height - rect.top, height - rect.bottom
        else:
            a, b, c, d, e, f = turn
            xs = (a * rect.left + c * rect.bottom + e, a * rect.right + c * rect.top + e)
            ys = (b * rect.left + d * rect.bottom + f, b * rect.right + d * rect.top + f)
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        h = y1 - y0
        if h <= 0.01:  # zero-height glyph boxes (some fonts): fall back to a nominal height
            h = 1.0
            y0, y1 = y0 - 0.5, y1 + 0.5
        mid = (y0 + y1) / 2
        if chars:
            ref = max(line_h, h, 1.0)
            if abs(mid - line_mid) > _LINE_RATIO * ref or x0 - last_x1 > _GAP_RATIO * ref or x1 < wx0 - 0.5 * ref:
                flush()
        char = chr(code) if code < 0xD800 or code > 0xDFFF else "\ufffd"
        if not chars:
            wx0, wx1, wtop, wbottom = x0, x1, y0, y1
            line_mid, line_h = mid, h
        else:
            wx0 = min(wx0, x0)
            wx1 = max(wx1, x1)
            wtop = min(wtop, y0)
            wbottom = max(wbottom, y1)
        chars.append(char)
        last_x1 = x1
    flush()
    return reading_order(words), size


def _display_transform(page: Any, width: float, height: float) -> tuple[float, ...]:
    """(a, b, c, d, e, f) mapping page space (x, y) to the displayed page in points, origin top-left:
    (a·x + c·y + e, b·x + d·y + f). Read from PDFium's own page-to-device mapping (which applies
    /Rotate) at 100 device units a point, from three points."""
    from pypdfium2 import raw

    scale = 100
    size_x, size_y = int(round(width * scale)), int(round(height * scale))
    dx, dy = ctypes.c_int(), ctypes.c_int()

    def device(x: float, y: float) -> tuple[float, float]:
        raw.FPDF_PageToDevice(page.raw, 0, 0, size_x, size_y, 0, x, y, ctypes.byref(dx), ctypes.byref(dy))
        return dx.value / scale, dy.value / scale

    ox, oy = device(0.0, 0.0)
    x1, y1 = device(1000.0, 0.0)
    x2, y2 = device(0.0, 1000.0)
    return ((x1 - ox) / 1000, (y1 - oy) / 1000, (x2 - ox) / 1000, (y2 - oy) / 1000, ox, oy)


def reading_order(words: list[Word]) -> list[Word]:
    """Words sorted into lines (top to bottom, by vertical overlap), each line left to right."""
    ordered = sorted(words, key=lambda w: (w.top + w.bottom) / 2)
    lines: list[list[Word]] = []
    line_mid = line_h = 0.0
    for word in ordered:
        mid = (word.top + word.bottom) / 2
        h = word.bottom - word.top
        if lines and abs(mid - line_mid) <= 0.4 * max(min(h, line_h), 1.0):
            lines[-1].append(word)
        else:
            lines.append([word])
            line_mid, line_h = mid, h
    result: list[Word] = []
    for line in lines:
        result.extend(sorted(line, key=lambda w: w.x0))
    return result
