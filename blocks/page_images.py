"""Pages as images, for model back-ends that read them (vision models).

A PDF page is rendered by PDFium at a resolution chosen from its size (`dpi`, lowered so the
longer side stays within `max_side` pixels: an A0 drawing must not become a 100-megapixel image)
and encoded as PNG with Pillow; an image document (PNG, JPEG, WebP, GIF) is sent as it is. This
runs in the embedded extractor's isolated parse workers, under their time and memory limits.
This module imports no Prefect.
"""

from __future__ import annotations

import io

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

    from blocks.readers import PDFIUM_LOCK, _open_pdf

    images: list[tuple[str, bytes]] = []
    with PDFIUM_LOCK:
        pdf = _open_pdf(pdfium, data, passwords or [])
        try:
            for number in range(min(len(pdf), max_pages)):
                page = pdf[number]
                try:
                    width, height = page.get_size()  # PDF points, 1/72 inch
                    scale = min(dpi / 72, max_side / max(width, height, 1.0))
                    bitmap = page.render(scale=scale)
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
