"""Image documents (PNG, JPEG, TIFF, WebP, GIF, BMP) read by OCR, page by page.

Runs in an OCR worker (see `blocks.ocr`). Every limit is checked on what the file *says* before
any pixel is decoded, because image headers are cheap to read and expensive to believe:

- `max_pixels` per page (width x height from the header, `Image.open` being lazy): a 30,000 x
  30,000 PNG of a few kilobytes fails as `too_large` without allocating its 2.7 GB, and every
  further frame's size is checked the same way before it is decoded (Pillow's own
  decompression-bomb guard checks only the first frame, so it is replaced by this one);
- pages: a multi-page TIFF is read up to `max_pages` pages, the rest named in a warning; an
  animated GIF or WebP is one picture, so only its first frame is read (with a warning);
- EXIF orientation is applied (`ImageOps.exif_transpose`), so a phone photo is read upright
  and boxes refer to the upright picture, as a viewer shows it;
- a truncated file (a JPEG cut short in transfer) is read as far as it goes, with a warning
  saying so; a file Pillow cannot read at all fails as `corrupt`.

Boxes and page sizes are in pixels of the upright image.
"""

from __future__ import annotations

import io
from typing import Any

from blocks.document import PageSize, ReadDocument, Word
from blocks.errors import DocumentError
from blocks.models import ErrorKind

# Formats where more than one frame is an animation (one picture), not more pages.
_ANIMATED = {"GIF", "WEBP", "PNG"}  # PNG: APNG


def read_image(data: bytes, media_type: str, *, max_pixels: int, max_pages: int) -> ReadDocument:
    """OCR text, words and page sizes of an image document; see the module docstring."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    from blocks.ocr import read_page

    Image.MAX_IMAGE_PIXELS = None  # checked below, on every frame, with the size in the message
    notes: list[str] = []
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DocumentError(ErrorKind.corrupt, f"not a readable image ({_reason(exc)})") from None
    with image:
        if image.width * image.height > max_pixels:
            raise DocumentError(ErrorKind.too_large, _too_many_pixels(image.size, max_pixels))
        if image.format in _ANIMATED:
            # is_animated looks for a second frame only; n_frames would walk them all
            frames = pages = 1
            if getattr(image, "is_animated", False):
                notes.append("an animated image: only its first frame was read")
        else:
            frames = pages = _frame_count(image)
        if pages > max_pages:
            notes.append(f"the image has {frames} pages: only the first {max_pages} were read (the OCR page limit)")
            pages = max_pages
        texts: list[str] = []
        words: list[Word] = []
        sizes: list[PageSize] = []
        for number in range(pages):
            try:
                image.seek(number)
            except EOFError:
                break
            width, height = image.size
            if width * height > max_pixels:
                raise DocumentError(ErrorKind.too_large, _too_many_pixels((width, height), max_pixels))
            picture = _decoded(image, ImageFile, notes)
            page = read_page(picture, number + 1)
            sizes.append(PageSize(float(picture.width), float(picture.height)))
            del picture
            texts.append(page.text)
            words.extend(page.words)
    text = "\n\f".join(texts)
    if not text.strip():
        raise DocumentError(ErrorKind.no_text, f"OCR found no text in the image ({len(sizes)} page(s) read)")
    return ReadDocument(
        text=text, pages=len(sizes), media_type=media_type, words=words, page_sizes=sizes, warnings=notes
    )


def _frame_count(image: Any) -> int:
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except (OSError, ValueError, EOFError):  # a damaged frame index: read what the first frame gives
        return 1


def _decoded(image: Any, image_file: Any, notes: list[str]) -> Any:
    """The current frame decoded, upright and in RGB; a truncated file is read as far as it goes."""
    from PIL import ImageOps

    try:
        image.load()
    except OSError as exc:
        if "truncated" not in str(exc).lower():
            raise DocumentError(ErrorKind.corrupt, f"the image cannot be decoded ({_reason(exc)})") from None
        image_file.LOAD_TRUNCATED_IMAGES = True
        try:
            image.load()
        except OSError as again:
            raise DocumentError(ErrorKind.corrupt, f"the image cannot be decoded ({_reason(again)})") from None
        finally:
            image_file.LOAD_TRUNCATED_IMAGES = False
        notes.append("the image file is truncated: the part that is missing was read as blank")
    except (ValueError, SyntaxError) as exc:
        raise DocumentError(ErrorKind.corrupt, f"the image cannot be decoded ({_reason(exc)})") from None
    upright = ImageOps.exif_transpose(image)
    return upright if upright.mode == "RGB" else upright.convert("RGB")


def _too_many_pixels(size: tuple[int, int], max_pixels: int) -> str:
    return f"the image declares {size[0]} x {size[1]} pixels, over the limit of {max_pixels:,} pixels a page (max_pixels)"


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
