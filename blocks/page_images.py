"""Pages as images, for model back-ends that read them (vision models).

A PDF page is rendered by PDFium at a resolution chosen from its size (`dpi`, lowered so the
longer side stays within `max_side` pixels: an A0 drawing must not become a 100-megapixel image)
and encoded as PNG with Pillow; an image document (PNG, JPEG, WebP, GIF) is sent as it is. This
runs in the embedded extractor's isolated parse workers, under their time and memory limits.
This module imports no Prefect.

`preview_pages` renders the pages a person looks at on the review page (`tasks.review_page`):
chosen pages, downscaled to a modest size and encoded as JPEG (a tenth of a PNG's bytes for a
scan or photo, and the page embeds them as data: URIs), image documents included (a phone
photo is decoded at a reduced scale, turned upright by its EXIF orientation as OCR read it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from blocks import sniff
from blocks.errors import DocumentError
from blocks.models import ErrorKind

IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif"}


def page_images(
    name: str, data: bytes, *, max_pages: int, dpi: int, max_side: int, passwords: list[str] | None = None
) -> list[tuple[str, bytes]]:
    """(media type, bytes) of the first `max_pages` pages of a PDF, or of an image document;
    [] for other documents (their text is sent instead)."""
    media_type = sniff.sniff_binary(data)
    if media_type in IMAGE_TYPES:
        return [(media_type, data)]
    if media_type != sniff.PDF:
        return []
    import pypdfium2 as pdfium

    from blocks.readers import PDFIUM_LOCK, _open_pdf, render_scale

    images: list[tuple[str, bytes]] = []
    with PDFIUM_LOCK:
        pdf = _open_pdf(pdfium, data, passwords or [])
        try:
            for number in range(min(len(pdf), max_pages)):
                page = pdf[number]
                try:
                    width, height = page.get_size()  # PDF points, 1/72 inch
                    bitmap = page.render(scale=render_scale(width, height, max_dpi=dpi, max_side=max_side))
                    buffer = io.BytesIO()
                    bitmap.to_pil().save(buffer, format="PNG", optimize=False)
                    images.append(("image/png", buffer.getvalue()))
                except pdfium.PdfiumError as exc:
                    raise DocumentError(ErrorKind.corrupt, f"page {number + 1} cannot be rendered: {exc}") from None
                finally:
                    page.close()
        finally:
            pdf.close()
    return images


# --------------------------------------------------------------------------- review previews

# A PDF page is never rendered above this resolution for a preview, however small the page (a
# receipt-sized page at 1000 pixels would otherwise be enlarged to 400 dpi for nothing).
PREVIEW_MAX_DPI = 200


@dataclass
class PageImage:
    """One page as shown on the review page: 1-based `number`, pixel size and encoded bytes."""

    number: int
    width: int
    height: int
    media_type: str
    data: bytes


@dataclass
class Preview:
    """What `preview_pages` rendered: the images, the document's page count when known, and
    `note`, a sentence saying why some or all pages have no image (for the page to show)."""

    images: list[PageImage] = field(default_factory=list)
    pages: int | None = None
    note: str | None = None


def preview_pages(
    data: bytes, *, pages: list[int], max_side: int, quality: int, max_pixels: int, passwords: list[str] | None = None
) -> Preview:
    """JPEG images of the 1-based `pages` of a PDF or an image document, the longer side at most
    `max_side` pixels; an empty `Preview` with a note for documents that have no pages to show
    (DOCX, XLSX, HTML, text, XML: their values are listed without images).

    Geometry follows the boxes' (blocks.provenance): a PDF page as displayed (PDFium applies its
    /Rotate), an image upright after its EXIF orientation. An image over `max_pixels` (what its
    header declares) is not decoded at all. Runs in an isolated parse worker.
    """
    media_type = sniff.sniff_binary(data)
    if media_type == sniff.PDF:
        return _preview_pdf(data, pages, max_side, quality, passwords or [])
    if media_type is not None and media_type.startswith("image/"):
        return _preview_image(data, pages, max_side, quality, max_pixels)
    return Preview(note="this type of document has no page images: its values are listed without them")


def _jpeg(image: Any, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _preview_pdf(data: bytes, pages: list[int], max_side: int, quality: int, passwords: list[str]) -> Preview:
    import pypdfium2 as pdfium

    from blocks.readers import PDFIUM_LOCK, _open_pdf, render_scale

    preview = Preview()
    with PDFIUM_LOCK:
        pdf = _open_pdf(pdfium, data, passwords)
        try:
            preview.pages = len(pdf)
            for number in [n for n in pages if 1 <= n <= len(pdf)]:
                page = pdf[number - 1]
                try:
                    width, height = page.get_size()  # PDF points of the page as displayed
                    scale = render_scale(width, height, max_dpi=PREVIEW_MAX_DPI, max_side=max_side)
                    image = page.render(scale=scale).to_pil()
                    preview.images.append(PageImage(number, image.width, image.height, "image/jpeg", _jpeg(image, quality)))
                except pdfium.PdfiumError as exc:
                    preview.note = f"page {number} cannot be rendered: {exc}"
                finally:
                    page.close()
        finally:
            pdf.close()
    return preview


def _preview_image(data: bytes, pages: list[int], max_side: int, quality: int, max_pixels: int) -> Preview:
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    from blocks.images import ANIMATED, frame_count

    Image.MAX_IMAGE_PIXELS = None  # checked below on every shown frame, before it is decoded
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DocumentError(ErrorKind.corrupt, f"not a readable image ({exc})") from None
    preview = Preview()
    with image:
        # an animation's extra frames are no pages: only the first is shown, as OCR reads only it
        preview.pages = 1 if image.format in ANIMATED else frame_count(image)
        for number in [n for n in pages if 1 <= n <= preview.pages]:
            try:
                image.seek(number - 1)
            except EOFError:
                break
            if image.width * image.height > max_pixels:
                preview.note = f"page {number} declares {image.width} x {image.height} pixels, too many to show"
                continue
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale: a photo costs a fraction
            ImageFile.LOAD_TRUNCATED_IMAGES = True  # a truncated file shows as far as it goes, as OCR read it
            try:
                image.load()
                frame = ImageOps.exif_transpose(image)
            except (OSError, ValueError, SyntaxError) as exc:
                preview.note = f"page {number} cannot be decoded ({exc})"
                continue
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = False
            frame.thumbnail((max_side, max_side))
            preview.images.append(PageImage(number, frame.width, frame.height, "image/jpeg", _jpeg(frame, quality)))
    return preview
