"""review.html in Debian's headless chromium: boxes where the provenance says, nothing loaded, hostile values inert.

The documents are real (a corpus PDF, a corpus receipt photo stored sideways with an EXIF
orientation); each box is placed on a known word (PDFium's words for the PDF, the receipt's
ground-truth OCR lines for the photo), so a box drawn in the wrong place, or a page rendered
with other geometry than the boxes', shows as a box over blank paper.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from blocks.local import LocalDirectory, LocalFolder
from blocks.models import BatchReport, BatchTotals, Check, DocumentRef, DocumentResult, ErrorKind, ReviewNote
from blocks.readers import read_pdf
from tasks.review_page import LINK_KEY, PAGE_NAME, ReviewPageOptions, page_link, publish_page
from tests.conftest import corpus
from tests.s3_server import s3_endpoint  # noqa: F401 - a fixture, used by name

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
HOSTILE = '<script>alert("value")</script><img src="http://127.0.0.1:9/leak.png">'
HOSTILE_NAME = "<img src=x onerror=alert(1)>.txt"
BOX_BLUE = (37, 99, 235)
BOX_RED = (220, 38, 38)
FAILED_RED = "rgb(185, 28, 28)"


def prov(text: str, page: int, x: float, y: float, w: float, h: float, pw: float, ph: float, confidence: float = 0.9) -> dict[str, Any]:
    box = {"x": x, "y": y, "w": w, "h": h, "page_width": pw, "page_height": ph}
    return {"page": page, "text": text, "start": 0, "end": len(text), "match": "exact", "score": 1.0, "confidence": confidence, "box": box}


def ref(folder: Path, index: int, name: str) -> DocumentRef:
    path = folder / name
    size = path.stat().st_size if path.exists() else 0
    return DocumentRef(index=index, uri=str(path), name=name, size=size, fingerprint="x")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Batch:
    """The documents, their results and the expected boxes (page units) of the test batch."""

    def __init__(self, folder: Path) -> None:
        from PIL import Image

        folder.mkdir(parents=True)
        self.folder = folder
        # 0: a PDF, the invoice number boxed where PDFium's words put it (a failed check names the total)
        pdf = folder / "aws.pdf"
        shutil.copyfile(corpus("invoice2data", "compare", "AmazonWebServices", "AmazonWebServices.pdf"), pdf)
        read = read_pdf(pdf.read_bytes(), max_pages=10)
        size = read.page_sizes[0]
        number = next(w for w in read.words if w.text == "42183017")  # 'Invoice Number: 42183017'
        label = next(w for w in read.words if w.text == "Total")  # 'Total for this invoice  $4.11'
        total = next(w for w in read.words if w.text == "$4.11" and abs(w.top - label.top) < 3)
        self.pdf_boxes = {
            "invoice_number": (number.x0, number.top, number.x1 - number.x0, number.bottom - number.top, size.width, size.height),
            "totals.grand_total": (total.x0, total.top, total.x1 - total.x0, total.bottom - total.top, size.width, size.height),
        }
        pdf_result = DocumentResult(
            ref=ref(folder, 0, "aws.pdf"), status="succeeded", pages=read.pages, media_type="application/pdf", sha256=sha(pdf),
            fields={"invoice_number": number.text, "totals": {"grand_total": 4.11}, "note": HOSTILE},
            provenance={
                "invoice_number": prov(number.text, 1, *self.pdf_boxes["invoice_number"]),
                "totals": {"grand_total": prov(total.text, 1, *self.pdf_boxes["totals.grand_total"], confidence=0.3)},
                "note": {"page": 1, "text": HOSTILE, "start": 0, "end": 1, "match": "fuzzy", "score": 0.8},
            },
            review="needs_review", review_reasons=["Net 1.00 plus tax 0.00 is 1.00, but the grand total is 4.11."],
            checks=[
                Check(name="totals.net_plus_tax", passed=False, message="Net 1.00 plus tax 0.00 is 1.00, but the grand total is 4.11.",
                      fields=["totals.grand_total"]),
                Check(name="currency.iso4217", passed=True, message="USD is the ISO 4217 code of the US Dollar.", fields=["currency"]),
            ],
            fields_source="layout",
        )
        # 1: a receipt photo stored sideways (EXIF orientation 6: turn 90° clockwise to view); boxes
        # are in pixels of the upright picture, as OCR reads it
        receipt = corpus("sroie", "receipts", "sroie_049", "sroie_049.jpg")
        line = (corpus("sroie", "receipts", "sroie_049", "sroie_049.ocr-lines.csv").read_text().splitlines()[0]).split(",", 8)
        x0, y0, x1, _, _, _, _, y1 = (float(v) for v in line[:8])
        upright = Image.open(receipt)
        self.photo_size = upright.size
        self.photo_box = (x0, y0, x1 - x0, y1 - y0, float(upright.width), float(upright.height))
        exif = Image.Exif()
        exif[0x0112] = 6
        sideways = folder / "receipt.jpg"
        upright.transpose(Image.Transpose.ROTATE_90).save(sideways, format="JPEG", quality=90, exif=exif.tobytes())
        photo_result = DocumentResult(
            ref=ref(folder, 1, "receipt.jpg"), status="succeeded", pages=1, media_type="image/jpeg", sha256=sha(sideways),
            fields={"merchant": line[8]}, provenance={"merchant": prov(line[8], 1, *self.photo_box)}, review="ok",
            ocr=True, ocr_engine="rapidocr", fields_source="layout",
        )
        # 2: a failed document with a hostile name; 3: a document gone since it was extracted
        (folder / HOSTILE_NAME).write_text("x")
        failed = DocumentResult(
            ref=ref(folder, 2, HOSTILE_NAME), status="failed", error=f"the file is {HOSTILE}", error_kind=ErrorKind.corrupt,
        )
        gone = folder / "gone.pdf"
        shutil.copyfile(pdf, gone)
        gone_result = pdf_result.model_copy(update={"ref": ref(folder, 3, "gone.pdf"), "review": "ok", "review_reasons": [], "checks": []})
        gone.unlink()
        # 4: beyond the page's document limit: in the table only
        extra = photo_result.model_copy(update={"ref": ref(folder, 4, "receipt.jpg").model_copy(update={"index": 4})})
        self.results = [pdf_result, photo_result, failed, gone_result, extra]
        now = datetime.now(timezone.utc)
        self.head = BatchReport(
            name="review <test>", source=str(folder), status="partially_failed", message="1 of 5 attempted document(s) failed",
            totals=BatchTotals(total=5, succeeded=4, failed=1, needs_review=1), progress=100.0, started=now, finished=now,
            duration_s=1.0, extractor="embedded", needs_review=[ReviewNote(index=0, file="aws.pdf", reasons=pdf_result.review_reasons)],
        )


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    return Batch(tmp_path_factory.mktemp("review") / "in")


@pytest.fixture(scope="module")
def page_file(batch: Batch) -> Path:
    out = LocalFolder(path=str(batch.folder.parent / "out"))
    options = ReviewPageOptions(documents=4, pages=2)
    location, stats = publish_page(out, "b", batch.head, iter(batch.results), source=LocalDirectory(path=str(batch.folder)), options=options)
    assert (stats.documents, stats.detailed, stats.images) == (5, 4, 2)
    assert not list(Path(location).parent.glob(".*.tmp"))  # published by rename, nothing left behind
    return Path(location)


@pytest.fixture(scope="module")
def browser() -> Any:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed (dev.sh installs it with apt-get)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Opened:
    """The page opened from the exports folder, with every request and dialog it caused."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.context.route("**", lambda route: (self.requests.append(route.request.url), route.continue_()))
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.url = path.as_uri()
        self.page.goto(self.url, wait_until="load")

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if url != self.url and not url.startswith("data:")]


@pytest.fixture(scope="module")
def opened(browser: Any, page_file: Path) -> Any:
    view = Opened(browser, page_file)
    try:
        yield view
    finally:
        view.context.close()


def screenshot_rgb(page: Any, clip: dict[str, float]) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")


def near(colour: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected))


@pytest.mark.parametrize(
    ("document", "row", "colour"),
    [(0, 1, BOX_BLUE), (0, 2, BOX_RED), (1, 1, BOX_BLUE)],
    ids=["pdf-invoice-number", "pdf-total-in-failed-check", "sideways-photo-merchant"],
)
def test_boxes_are_drawn_where_the_provenance_says(opened: Opened, batch: Batch, document: int, row: int, colour: tuple[int, int, int]) -> None:
    page = opened.page
    box = page.locator(f"#d{document}b{row}")
    figure = page.locator(f"#d{document}p1")
    figure.scroll_into_view_if_needed()
    image = figure.locator("img").bounding_box()
    drawn = box.bounding_box()
    x, y, w, h, page_width, page_height = (
        batch.photo_box if document == 1 else list(batch.pdf_boxes.values())[row - 1]
    )
    scale_x, scale_y = image["width"] / page_width, image["height"] / page_height
    assert abs(scale_x - scale_y) < 0.01  # the rendering keeps the page's proportions (the photo turned upright)
    expected = {"x": image["x"] + x * scale_x, "y": image["y"] + y * scale_y, "width": w * scale_x, "height": h * scale_y}
    for key, value in expected.items():
        assert abs(drawn[key] - value) <= 1.5, (key, drawn, expected)

    # The outline is drawn (in its colour) just outside the box: 1 px offset, 2 px wide.
    shot = screenshot_rgb(page, {"x": drawn["x"] - 10, "y": drawn["y"] - 10, "width": drawn["width"] + 20, "height": drawn["height"] + 20})
    middle = int(10 + drawn["height"] / 2)
    assert near(shot.getpixel((10 - 2, middle)), colour), shot.getpixel((10 - 2, middle))
    assert near(shot.getpixel((int(10 + drawn["width"] + 1.5), middle)), colour)

    # And under the box is the word itself: with the boxes hidden, the box's area holds ink
    # (dark pixels) on paper (light pixels), where a misplaced rendering would show blank paper.
    hiding = page.add_style_tag(content="a.box { visibility: hidden !important; }")
    try:
        inside = screenshot_rgb(page, {"x": drawn["x"], "y": drawn["y"], "width": max(drawn["width"], 1), "height": max(drawn["height"], 1)})
    finally:
        hiding.evaluate("e => e.remove()")
    darkest, lightest = inside.convert("L").getextrema()
    assert darkest < 110 and lightest > 170, (darkest, lightest)


def test_the_page_loads_nothing_and_runs_nothing(opened: Opened, browser: Any) -> None:
    page = opened.page
    assert opened.foreign_requests() == []
    assert page.locator("script").count() == 0 and opened.dialogs == []
    assert "default-src 'none'" in page.locator("meta[http-equiv='Content-Security-Policy']").get_attribute("content")
    # The recorder does see requests: the same hostile markup, unescaped, makes one.
    probe = browser.new_context()
    seen: list[str] = []
    probe.route("**", lambda route: (seen.append(route.request.url), route.abort()))
    try:
        probe.new_page().set_content(HOSTILE)
    finally:
        probe.close()
    assert "http://127.0.0.1:9/leak.png" in seen


def test_failed_checks_are_red_and_hostile_values_are_text(opened: Opened) -> None:
    page = opened.page
    failed = page.locator("#d0 ul.checks li", has_text="but the grand total is 4.11")
    assert failed.evaluate("e => getComputedStyle(e).color") == FAILED_RED
    passed = page.locator("#d0 ul.checks li", has_text="ISO 4217")
    assert passed.evaluate("e => getComputedStyle(e).color") != FAILED_RED
    assert page.locator("#d0v2").evaluate("e => getComputedStyle(e.cells[1]).color") == FAILED_RED  # the value the check names
    # the hostile value, its source text, the error and the file name show as the characters they are
    assert page.locator("#d0 td", has_text=HOSTILE).count() == 2
    assert page.locator("#d2 .error").inner_text() == f"corrupt: the file is {HOSTILE}"
    assert page.locator("#documents td a", has_text=HOSTILE_NAME).count() == 1
    assert page.locator("img[src^='http'], img[src='x']").count() == 0
    row = page.locator("#d0v1")
    assert row.locator("td").nth(1).inner_text() == "invoice_number" and row.locator("td.conf").inner_text() == "0.90"
    assert page.locator("#d0v2 td.conf").inner_text() == "0.30"


def test_every_document_is_listed_and_what_is_left_out_is_said(opened: Opened) -> None:
    page = opened.page
    assert page.locator("#documents tbody tr").count() == 5
    assert [page.locator("article.doc").nth(n).get_attribute("id") for n in range(4)] == ["d0", "d1", "d2", "d3"]
    assert page.locator("#documents a[href='#d4']").count() == 0  # beyond review_page_documents: a row only
    assert "1 of 5 document(s) are listed in the table only" in page.locator("#details").inner_text()
    gone = page.locator("#d3")
    assert "cannot be read again (the file was deleted or moved after it was listed)" in gone.inner_text()
    assert gone.locator("img").count() == 0 and gone.locator("td.path", has_text="invoice_number").count() == 1
    assert "not extracted" in page.locator("#d2").inner_text()


def test_a_large_batch_lists_every_document_and_details_those_needing_review_first(tmp_path: Path) -> None:
    """10,000 documents stream through (a generator, read once): every one gets its table row;
    details go to `documents` of them, the ones needing review first, then input order."""
    import io as _io

    from tasks.review_page import write_page

    total, flagged = 10_000, [4_321, 9_999]
    now = datetime.now(timezone.utc)

    def results() -> Any:
        for n in range(total):
            review = "needs_review" if n in flagged else "ok"
            yield DocumentResult(
                ref=DocumentRef(index=n, uri=str(tmp_path / f"doc-{n:05d}.pdf"), name=f"doc-{n:05d}.pdf", size=1, fingerprint="x"),
                status="succeeded", pages=1, fields={"invoice_number": f"N-{n}"}, review=review,
                review_reasons=["The required field issue_date is missing."] if n in flagged else [],
            )

    head = BatchReport(
        name="large", source=str(tmp_path), status="completed", message="", progress=100.0, started=now, finished=now, duration_s=1.0,
        totals=BatchTotals(total=total, succeeded=total, needs_review=len(flagged)), extractor="embedded",
        needs_review=[ReviewNote(index=n, file=f"doc-{n:05d}.pdf", reasons=["The required field issue_date is missing."]) for n in flagged],
    )
    out = _io.StringIO()
    stats = write_page(out, head, results(), source=LocalDirectory(path=str(tmp_path)), options=ReviewPageOptions(documents=3, pages=1))
    html = out.getvalue()
    assert (stats.documents, stats.detailed, stats.images) == (total, 3, 0)
    assert html.count("<tr class=\"succeeded\">") == total and "doc-09998.pdf" in html
    assert [part.split('"', 1)[0] for part in html.split("<article class=\"doc\" id=\"")[1:]] == ["d4321", "d9999", "d0"]
    assert "9997 of 10000 document(s) are listed in the table only" in html
    assert html.count("cannot be read again") == 3  # the files do not exist: values without images, and a note
    assert len(html.encode()) < 400 * total  # a few hundred bytes a row


def test_the_page_renders_in_the_extractors_own_parse_workers() -> None:
    from blocks.embedded import EmbeddedExtractor
    from tasks.review_page import with_pool_limits

    options = with_pool_limits(ReviewPageOptions(), EmbeddedExtractor(max_memory_mb=512, timeout_s=30, max_workers=1))
    assert (options.max_memory_mb, options.timeout_s, options.max_workers, options.recycle_after) == (512, 30.0, 1, 200)
    assert with_pool_limits(ReviewPageOptions(), EmbeddedExtractor(isolate=False)) == ReviewPageOptions()


def test_the_page_on_s3_opens_from_its_presigned_url(batch: Batch, s3_endpoint: str) -> None:
    import boto3

    from blocks.aws import AwsCredentials
    from blocks.s3 import S3Destination
    from tests.s3_server import REGION

    secret = "review/TEST+secret-KEY-77"
    bucket = f"docbatch-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b").create_bucket(Bucket=bucket)
    credentials = AwsCredentials(aws_access_key_id="AKIAREVIEWTEST", aws_secret_access_key=secret, region_name=REGION)
    destination = S3Destination(bucket=bucket, prefix="out", endpoint_url=s3_endpoint, credentials=credentials)
    location, _ = publish_page(
        destination, "b", batch.head, batch.results[:1], source=LocalDirectory(path=str(batch.folder)), options=ReviewPageOptions(),
    )
    assert location == f"s3://{bucket}/out/b/{PAGE_NAME}"
    url = page_link(destination, "b")
    assert url.startswith(f"{s3_endpoint}/{bucket}/out/b/{PAGE_NAME}?") and "Signature" in url and secret not in url
    with urllib.request.urlopen(url) as answer:  # noqa: S310 - the local moto server
        assert answer.headers["Content-Type"].startswith("text/html")
        assert b"<h1>Review: review &lt;test&gt;</h1>" in answer.read()


def test_a_batch_writes_the_page_and_links_it_from_its_flow_run(prefect_api: str, tmp_path: Path) -> None:
    from flows.batch import extract_batch
    from flows.params import ExportSettings, ExtractionSettings
    from tests.conftest import copy_into
    from tests.test_batch_flow import read_artifacts

    from flows.retry import retry_failed

    copy_into(tmp_path / "in", corpus("invoice2data", "compare", "AmazonWebServices", "AmazonWebServices.pdf"),
              corpus("invoice2data", "compare", "Orlen", "Orlen.txt"))
    (tmp_path / "in" / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ntruncated")
    report = extract_batch(
        source=str(tmp_path / "in"), batch_name="review page batch",
        extraction=ExtractionSettings(retry_backoff_s=0), export=ExportSettings(output_dir=str(tmp_path / "out")),
    )
    assert report.totals.failed == 1
    page = Path(report.output_dir) / PAGE_NAME
    html = page.read_text(encoding="utf-8")
    assert html.count("<tr class=\"succeeded\">") == 2 and html.count("<tr class=\"failed\">") == 1
    assert html.count("data:image/jpeg;base64,") == 1  # the PDF's one page; the failed PDF is not rendered again
    assert html.count("class=\"box") >= 3  # the layout path's boxes, drawn on the PDF's page
    link = read_artifacts(report.flow_run_id)[LINK_KEY]
    assert link.data == f"[{PAGE_NAME}]({page.as_uri()})"  # Prefect stores a link artifact as markdown

    # retry-failed writes its own batch folder, with its own page and link
    again = retry_failed(batch=report.flow_run_id)
    assert again.output_dir != report.output_dir and again.totals.failed == 1
    retried = Path(again.output_dir) / PAGE_NAME
    assert retried.read_text(encoding="utf-8").count("data:image/jpeg;base64,") == 1
    assert read_artifacts(again.flow_run_id)[LINK_KEY].data == f"[{PAGE_NAME}]({retried.as_uri()})"

    off = extract_batch(
        source=str(tmp_path / "in"), export=ExportSettings(output_dir=str(tmp_path / "out2"), formats=["csv"]),
    )
    assert not (Path(off.output_dir) / PAGE_NAME).exists() and LINK_KEY not in read_artifacts(off.flow_run_id)



def test_the_cli_sets_how_many_documents_the_page_details(cli_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(corpus("invoice2data", "compare", "free_fiber", "free_fiber.pdf"), source / "free_fiber.pdf")
    pages = {}
    for count in (0, 1):
        out = tmp_path / f"out{count}"
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", str(source), "-o", str(out), "-f", "review", "--json",
             "--review-page-documents", str(count)],
            env=cli_env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr
        pages[count] = next(out.glob("*/review.html")).read_text(encoding="utf-8")
    assert "free_fiber.pdf" in pages[0] and "data:image/jpeg" not in pages[0]  # the table only
    assert "data:image/jpeg" in pages[1]
