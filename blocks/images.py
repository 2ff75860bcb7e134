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
  saying so; a file Pillow cannot read at all fails as `corrupt`;
- a page larger than `OCR_MAX_SIDE` pixels on its longer side is OCR'd scaled down to it (a JPEG
  decoded at 1/2, 1/4 or 1/8 of its size by libjpeg itself, so its full pixels are never held):
  print on such a page is large enough, and the OCR worker's memory stays within its cap (a 48 MP
  phone photo read at full size needs more than the default 1280 MB).

Boxes and page sizes are in pixels of the upright image as stored (whatever it was scaled to).
"""

from __future__ import annotations

import io
from typing import Any

from blocks.document import PageSize, ReadDocument, Word
from blocks.errors import DocumentError
from blocks.models import ErrorKind

# Formats where more than one frame is an animation (one picture), not more pages.
ANIMATED = {"GIF", "WEBP", "PNG"}  # PNG: APNG
# OCR reads a page at most this many pixels on its longer side (16 MP at most): the corpus's
# largest scans (an A4 page at 350 dpi, a 4000 px typewriter photo) are read as they are. At full
# size a 7000 x 7000 PNG and an 8000 x 6000 JPEG both went past the default 1280 MB; scaled, an
# OCR worker peaked at 1.13 GB (the PNG: its full decode stays) and 0.83 GB (the JPEG, decoded at 1/2).
OCR_MAX_SIDE = 4000
_ORIENTATION = 0x0112  # the EXIF tag


def read_image(
    data: bytes, media_type: str, *, max_pixels: int, max_pages: int, budget_s: float | None = None
) -> ReadDocument:
    """OCR text, words and page sizes of an image document; see the module docstring. Pages
    that would pass `budget_s` seconds of OCR are left unread, with a warning (`blocks.ocr.PageClock`)."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    from blocks.ocr import PageClock, over_time

    Image.MAX_IMAGE_PIXELS = None  # checked below, on every frame, with the size in the message
    notes: list[str] = []
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DocumentError(ErrorKind.corrupt, f"not a readable image ({_reason(exc)})") from None
    with image:
        if image.width * image.height > max_pixels:
            raise DocumentError(ErrorKind.too_large, _too_many_pixels(image.size, max_pixels))
        if image.format in ANIMATED:
            # is_animated looks for a second frame only; n_frames would walk them all
            frames = pages = 1
            if getattr(image, "is_animated", False):
                notes.append("an animated image: only its first frame was read")
        else:
            frames = pages = frame_count(image)
        if pages > max_pages:
            notes.append(f"the image has {frames} pages: only the first {max_pages} were read (the OCR page limit)")
            pages = max_pages
        texts: list[str] = []
        words: list[Word] = []
        sizes: list[PageSize] = []
        clock = PageClock(budget_s)
        for number in range(pages):
            if not clock.allows_another():
                notes.append(over_time(list(range(number + 1, pages + 1))))
                break
            try:
                image.seek(number)
            except EOFError:
                break
            width, height = image.size
            if width * height > max_pixels:
                raise DocumentError(ErrorKind.too_large, _too_many_pixels((width, height), max_pixels))
            picture, upright = _decoded(image, ImageFile, notes)
            page = clock.read(picture, number + 1, scale=picture.width / upright[0])
            sizes.append(PageSize(float(upright[0]), float(upright[1])))
            del picture
            texts.append(page.text)
            words.extend(page.words)
    text = "\n\f".join(texts)
    if not text.strip():
        raise DocumentError(ErrorKind.no_text, f"OCR found no text in the image ({len(sizes)} page(s) read)")
    return ReadDocument(
        text=text, pages=len(sizes), media_type=media_type, words=words, page_sizes=sizes, warnings=notes
    )


def frame_count(image: Any) -> int:
    """The pages of a multi-page image (TIFF), at least 1; 1 for a damaged frame index."""
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except (OSError, ValueError, EOFError):  # a damaged frame index: read what the first frame gives
        return 1


def _decoded(image: Any, image_file: Any, notes: list[str]) -> tuple[Any, tuple[int, int]]:
    """The current frame decoded, upright, in RGB and at most `OCR_MAX_SIDE` pixels on its longer
    side, and the upright frame's full size; a truncated file is read as far as it goes."""
    from PIL import Image, ImageOps

    stored = image.size
    if max(stored) > OCR_MAX_SIDE and image.format == "JPEG":
        # libjpeg decodes at 1/2, 1/4 or 1/8 directly, at least as large as asked
        factor = OCR_MAX_SIDE / max(stored)
        image.draft(None, (max(1, int(stored[0] * factor)), max(1, int(stored[1] * factor))))
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
    # EXIF orientation (1-8): 5-8 turn the picture a quarter, swapping width and height. Only a
    # turned picture is copied (exif_transpose copies an upright one too: 150 MB for 50 MP).
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF (any of struct, value, OS errors): no orientation
        orientation = 1
    picture = ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
    full = (stored[1], stored[0]) if orientation in range(5, 9) else stored
    picture = _rgb(picture)
    if max(picture.size) > OCR_MAX_SIDE:
        picture = ImageOps.contain(picture, (OCR_MAX_SIDE, OCR_MAX_SIDE), Image.Resampling.LANCZOS)
    return picture, full


def _rgb(picture: Any) -> Any:
    """The picture in RGB (palette PNGs give OCR no text otherwise; and resizing keeps colours),
    transparent parts white: dropping the alpha channel alone would leave them as whatever colour
    they hold, often black, and black text on a transparent background would vanish."""
    from PIL import Image

    if picture.mode == "RGB":
        return picture
    if picture.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            background = Image.new("RGB", rgba.size, "white")
            background.paste(rgba, mask=rgba)
            return background
        return rgba.convert("RGB")
    return picture.convert("RGB")


def _too_many_pixels(size: tuple[int, int], max_pixels: int) -> str:
    return f"the image declares {size[0]} x {size[1]} pixels, over the limit of {max_pixels:,} pixels a page (max_pixels)"


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
