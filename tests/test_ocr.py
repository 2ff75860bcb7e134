"""OCR in the embedded extractor: real RapidOCR in real OCR workers, on documents nobody here wrote
and on hostile images made at test time (each OCR call costs about a second: images stay small)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw, ImageFont

from blocks.embedded import EmbeddedExtractor
from blocks.errors import DocumentError
from blocks.models import ErrorKind
from blocks.parsing import read_document
from tasks.review_page import leaf_values
from tests.conftest import corpus

ROOT = Path(__file__).resolve().parents[1]
RECEIPT = corpus("sroie", "receipts", "sroie_049", "sroie_049.jpg")
AWS = corpus("invoice2data", "compare", "AmazonWebServices")


def text_image(lines: list[str], size: tuple[int, int] = (640, 200), mode: str = "RGB") -> Image.Image:
    """Black text on white, large enough for OCR to read it surely."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    for number, line in enumerate(lines):
        draw.text((20, 20 + 60 * number), line, fill="black", font=font)
    return image if mode == "RGB" else image.convert(mode)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a tiny IDAT: never allocated by anyone."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def extract(data: bytes, name: str = "doc", **settings: object):  # type: ignore[no-untyped-def]
    return EmbeddedExtractor(**settings).extract(name, data)


# ------------------------------------------------------------------------------- documents


def test_a_receipt_photo_is_read_with_its_total_date_and_word_boxes() -> None:
    expected = json.loads(RECEIPT.with_name("sroie_049.expected.json").read_text())
    result = extract(RECEIPT.read_bytes(), "sroie_049.jpg")
    assert (result.ocr, result.ocr_engine, result.pages, result.media_type) == (True, "rapidocr 3.10.0", 1, "image/jpeg")
    assert expected["total"] in result.text and expected["date"] in result.text
    width, height = Image.open(RECEIPT).size
    assert result.provenance is not None  # boxes come from the OCR words (blocks.source_provenance)
    boxes = [v.provenance.box for v in leaf_values(result.fields, result.provenance) if v.provenance and v.provenance.box]
    assert boxes, result.provenance
    for box in boxes:
        assert (box.page_width, box.page_height) == (width, height)
        assert 0 <= box.x and box.x + box.w <= width and 0 <= box.y and box.y + box.h <= height


def test_a_scanned_invoice_whose_template_matches_comes_out_as_the_template_says() -> None:
    expected = json.loads((AWS / "AmazonWebServices.expected.json").read_text())[0]
    result = extract((AWS / "AmazonWebServices.png").read_bytes(), "aws.png", templates=str(AWS))
    assert result.fields_source == "template:template_com.amazon.aws.yml" and result.reader == "ocr"
    assert result.ocr is True
    wrong = {k: (result.fields.get(k), v) for k, v in expected.items() if str(result.fields.get(k)) != str(v)}
    assert not wrong


def test_a_pdf_with_one_scanned_page_ocrs_that_page_only(tmp_path: Path) -> None:
    text_pdf = corpus("invoice2data", "compare", "free_fiber", "free_fiber.pdf").read_bytes()
    scan = io.BytesIO()
    # a half-height page: its size differs from the text pages' A4
    text_image(["SCANNED PAGE", "Total due 1234.56"], size=(1240, 877)).save(scan, format="PDF", resolution=150)
    mixed = pdfium.PdfDocument(text_pdf)
    mixed.import_pages(pdfium.PdfDocument(scan.getvalue()))
    out = io.BytesIO()
    mixed.save(out)
    pages = len(mixed)

    result = extract(out.getvalue(), "mixed.pdf")
    plain = extract(text_pdf, "text.pdf")
    assert result.ocr is True and result.pages == pages
    texts = result.text.split("\n\f")
    assert texts[:-1] == plain.text.split("\n\f")  # the text layer as it is: never OCR'd
    assert "SCANNED PAGE" in texts[-1] and "1234.56" in texts[-1]
    assert plain.ocr is False and plain.ocr_engine is None
    # read as a template batch reads it (no text-layer words): still one size per page, in page order
    document = read_document("mixed.pdf", out.getvalue(), {"ocr": True, "ocr_here": True, "templates": str(tmp_path)})
    sizes = [(round(size.width), round(size.height)) for size in document.page_sizes]
    assert sizes == [(595, 842)] * (pages - 1) + [(595, 421)], sizes
    assert document.ocr_pages == [pages] and {word.page for word in document.words} == {pages}


def test_ocr_off_leaves_images_as_no_text() -> None:
    with pytest.raises(DocumentError) as raised:
        extract(RECEIPT.read_bytes(), "r.jpg", ocr=False)
    assert raised.value.kind == ErrorKind.no_text and "OCR is off" in raised.value.message


# ------------------------------------------------------------------------------- hostile images


def test_an_image_declaring_30000_by_30000_pixels_fails_as_too_large_without_decoding() -> None:
    bomb = png_declaring(30_000, 30_000)
    assert len(bomb) < 200
    with pytest.raises(DocumentError) as raised:
        extract(bomb, "bomb.png")
    assert raised.value.kind == ErrorKind.too_large
    assert "30000 x 30000" in raised.value.message and "max_pixels" in raised.value.message


def test_an_image_lying_about_its_size_is_a_clean_error() -> None:
    # declares 64 x 64 but its data stops after a few rows: corrupt, not a crash
    liar = png_declaring(64, 64)
    with pytest.raises(DocumentError) as raised:
        extract(liar, "liar.png")
    assert raised.value.kind in (ErrorKind.corrupt, ErrorKind.no_text), raised.value.message


def test_a_truncated_jpeg_is_read_as_far_as_it_goes_with_a_warning() -> None:
    data = encoded(text_image(["TRUNCATED RECEIPT", "TOTAL 8.00"], size=(640, 480)), "JPEG", quality=90)
    result = extract(data[: int(len(data) * 0.6)], "cut.jpg")
    assert "TRUNCATED RECEIPT" in result.text
    assert any("truncated" in w for w in result.warnings), result.warnings


def test_an_animated_gif_is_read_by_its_first_frame() -> None:
    frames = [text_image(["FIRST FRAME"], mode="P"), text_image(["SECOND FRAME"], mode="P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = extract(buffer.getvalue(), "anim.gif")
    assert "FIRST FRAME" in result.text and "SECOND" not in result.text and result.pages == 1
    assert any("animated" in w for w in result.warnings)


def test_a_tiff_with_500_pages_is_read_up_to_the_ocr_page_limit() -> None:
    first = text_image(["PAGE ONE"], size=(400, 100))
    rest = [text_image([f"PAGE {n}"], size=(400, 100)) for n in range(2, 501)]
    buffer = io.BytesIO()
    first.save(buffer, format="TIFF", save_all=True, append_images=rest, compression="tiff_deflate")
    result = extract(buffer.getvalue(), "many.tiff", ocr_max_pages=3)
    assert result.pages == 3 and "PAGE ONE" in result.text and "PAGE 3" in result.text and "PAGE 4" not in result.text
    assert any("500 pages" in w and "first 3" in w for w in result.warnings), result.warnings


def test_ocr_out_of_time_keeps_the_pages_read_and_names_the_rest() -> None:
    # a budget of 0 s: the first page is read (always), none after it. The
    # extractor's budget is 80 % of ocr_timeout_s; past it a worker is killed and loses every page
    pages = [text_image([f"PAGE {n}"], size=(400, 100)) for n in range(1, 4)]
    tiff = io.BytesIO()
    pages[0].save(tiff, format="TIFF", save_all=True, append_images=pages[1:])
    settings = {"ocr": True, "ocr_here": True, "ocr_budget_s": 0.0}
    document = read_document("three.tiff", tiff.getvalue(), settings)
    assert document.pages == 1 and "PAGE 1" in document.text and "PAGE 2" not in document.text
    assert any("2 page(s) were not read by OCR (2, 3)" in w and "ocr_timeout_s" in w for w in document.warnings)

    scan = io.BytesIO()
    pages[0].save(scan, format="PDF", save_all=True, append_images=pages[1:], resolution=100)
    document = read_document("three.pdf", scan.getvalue(), settings)
    assert (document.pages, document.ocr_pages) == (3, [1]) and document.text.split("\n\f")[1:] == ["", ""]
    assert any("2 page(s) were not read by OCR (2, 3)" in w for w in document.warnings), document.warnings
    assert not any("ocr_max_pages" in w for w in document.warnings)


def test_exif_rotation_is_applied_so_the_text_is_read_upright() -> None:
    upright = text_image(["ROTATED INVOICE 42"], size=(640, 120))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    data = encoded(stored, "JPEG", quality=95, exif=exif)
    assert "ROTATED INVOICE 42" in extract(data, "photo.jpg").text
    # words and page size refer to the upright picture, as a viewer shows it: wide, not tall
    document = read_document("photo.jpg", data, {"ocr": True, "ocr_here": True})
    assert (document.page_sizes[0].width, document.page_sizes[0].height) == (640, 120)
    assert all(word.x1 <= 640 and word.bottom <= 120 for word in document.words)


def test_a_photo_larger_than_ocr_reads_is_scaled_down_and_boxed_in_its_own_pixels() -> None:
    # 8400 px wide: libjpeg decodes it at 1/2, OCR reads it at 4000 px; boxes come back in the photo's pixels
    image = Image.new("RGB", (8400, 1000), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=240)
    draw.text((100, 300), "LEFT", fill="black", font=font)
    draw.text((6000, 300), "RIGHT", fill="black", font=font)
    document = read_document("wide.jpg", encoded(image, "JPEG", quality=90), {"ocr": True, "ocr_here": True})
    assert [(size.width, size.height) for size in document.page_sizes] == [(8400, 1000)]
    boxes = {word.text: word for word in document.words}
    assert {"LEFT", "RIGHT"} <= set(boxes), document.text
    assert abs(boxes["LEFT"].x0 - 100) < 150 and abs(boxes["RIGHT"].x0 - 6000) < 150, boxes
    assert 200 < boxes["RIGHT"].top < boxes["RIGHT"].bottom < 700, boxes


def test_a_palette_png_is_read() -> None:
    result = extract(encoded(text_image(["PALETTE IMAGE TEXT"], mode="P"), "PNG"), "palette.png")
    assert "PALETTE IMAGE TEXT" in result.text


def test_black_text_on_a_transparent_background_is_read() -> None:
    # transparent pixels are black here: dropping the alpha channel alone would leave black on black
    image = Image.new("RGBA", (640, 120), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((20, 30), "TRANSPARENT 42", fill=(0, 0, 0, 255), font=ImageFont.load_default(size=48))
    assert "TRANSPARENT 42" in extract(encoded(image, "PNG"), "logo.png").text


def test_text_starting_with_bm_is_text_not_a_bitmap() -> None:
    from blocks import sniff

    result = extract(b"BMW AG\nRechnung 4711\nGesamt 45,00 EUR\n", "bmw.txt", extract_fields=False)
    assert (result.media_type, result.ocr) == ("text/plain", False) and result.text.startswith("BMW AG")
    assert sniff.sniff_binary(encoded(Image.new("RGB", (8, 8)), "BMP")) == "image/bmp"


def test_a_blank_image_is_no_text() -> None:
    with pytest.raises(DocumentError) as raised:
        extract(encoded(Image.new("RGB", (300, 200), "white"), "PNG"), "blank.png")
    assert raised.value.kind == ErrorKind.no_text and "OCR found no text" in raised.value.message


def test_ocr_memory_cap_stops_the_worker_as_too_large() -> None:
    # A 46-megapixel A4 scan (the AWS invoice at twice its size) needs ~960 MB of address space
    # with the engine, which alone takes ~670 MB: well over a 768 MB cap. (At its own 11 MP it
    # needs ~805 MB, too close to the cap: how many 64 MB malloc arenas the engine's threads
    # reserve varies with the machine's load.)
    scan = Image.open(AWS / "AmazonWebServices.png")
    with pytest.raises(DocumentError) as raised:
        extract(encoded(scan.resize((scan.width * 2, scan.height * 2)), "PNG"), "big.png", ocr_max_memory_mb=768)
    assert raised.value.kind == ErrorKind.too_large and "ocr_max_memory_mb" in raised.value.message


# ------------------------------------------------------------------------------- offline


def test_ocr_never_opens_a_network_connection(tmp_path: Path) -> None:
    """The models ship in the wheel; a process whose sockets all fail still reads the receipt."""
    script = f"""
import json, socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args)[:80]); raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from blocks.parsing import parse_document
result = parse_document("r.jpg", open({str(RECEIPT)!r}, "rb").read(), {{"ocr": True, "ocr_here": True, "extract_fields": False}})
print(json.dumps({{"attempts": attempts, "ocr": result.ocr, "chars": len(result.text)}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"attempts": [], "ocr": True, "chars": report["chars"]} and report["chars"] > 200

