"""The review page: `review.html` in a batch's exports, one self-contained page a person opens.

What it shows: the batch's counts; a table of every document (status, review flag, reasons or
error); then, for a bounded number of documents, their pages as images with a box drawn over
each extracted value where its provenance places it (`blocks.provenance`), the values beside
them (field path, value, confidence, source text, where), and the validation checks, the failed
ones in red.

Why it is built this way:

- **Self-contained and inert.** No script at all, no external style, font or image: styles are
  inline, page images are `data:` URIs, and a Content-Security-Policy (`default-src 'none'`)
  forbids any request, so the page opens the same from the exports folder (file://), from a
  presigned S3 URL or from a mail attachment, and a value that smuggled markup past the escaping
  still could not load or run anything. Every text from a document (values, file names, errors,
  OCR text) is HTML-escaped: documents are hostile. The page holds results only, never a
  setting, so no secret can appear in it.
- **Boxes in percentages.** A box is an element positioned over the image at
  `x / page_width` (etc.) of it, so it stays on its value at any zoom or window width; the box's
  units (PDF points, OCR pixels) cancel out, and the image is rendered with the geometry the
  boxes use (PDF pages as displayed, images upright after EXIF).
- **Bounded work.** The table lists every document (a row is ~300 bytes: 10,000 documents make
  3 MB). Details and page images go to at most `documents` documents (needing review first, then
  the others in input order) and their first `pages` pages (page 1, then the pages holding
  boxes, then the next ones), each downscaled to `max_side` pixels and JPEG-encoded (about
  60-150 KB a page). The page says what it left out.
- **Streamed.** The table is written while `results` is iterated; only the chosen documents'
  results are kept, and their images are rendered (a few at a time) just before they are written.
- **Re-read, not carried.** Page images are rendered from the document as the source holds it
  now (`Source.read`, like extraction), in the isolated parse workers (`blocks.isolation`,
  `blocks.page_images.preview_pages`): bytes never pass through a Prefect parameter or result.
  A document gone since, or changed (another SHA-256), is shown with a note.
- **Never fails a batch.** The page is written after the exports and report.json; whatever goes
  wrong with it is logged as a warning, and the batch's result stands.

Where the link artifact points (`review-page`): a file:// URL for a local folder; for S3 a
presigned HTTPS GET URL valid for `PRESIGN_S` (7 days, the most SigV4 allows; less when the
credentials are temporary), or the s3:// URI when no URL can be signed.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, ValidationError

from blocks.errors import DocumentError
from blocks.extractor import Extractor
from blocks.models import BatchReport, DocumentResult
from blocks.page_images import Preview
from blocks.provenance import Provenance
from blocks.resolve import Destination, Source

PAGE_NAME = "review.html"
LINK_KEY = "review-page"
PRESIGN_S = 7 * 24 * 3600
# Value rows listed per document at most (a long invoice's line items); the rest are in the exports.
MAX_VALUE_ROWS = 300
MAX_VALUE_CHARS = 500
MAX_SOURCE_CHARS = 200

log = logging.getLogger("docbatch.review_page")


class ReviewPageOptions(BaseModel):
    """How much the review page shows (see the module docstring)."""

    documents: int = Field(default=100, ge=0, description="Documents with details and page images at most.")
    pages: int = Field(default=3, ge=1, description="Pages shown per document at most.")
    max_side: int = Field(default=1000, ge=200, le=4000, description="Longer side of a page image, in pixels.")
    quality: int = Field(default=70, ge=20, le=95, description="JPEG quality of the page images.")
    max_pixels: int = Field(default=50_000_000, ge=1, description="Image pages declaring more pixels are not decoded.")
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1, description="Documents larger than this are not read again.")
    min_confidence: float = Field(default=0.4, ge=0, le=1, description="Values below this confidence are marked.")
    # The parse workers' limits (blocks.isolation.get_pool): the extractor's own when it has them
    # (`with_pool_limits`), so the page renders in the very workers, and under the very caps, the
    # batch parsed with (a user who raised max_memory_mb for large scans gets it here too).
    timeout_s: float = Field(default=60.0, gt=0, description="A page rendering taking longer is stopped (a note instead).")
    max_memory_mb: int | None = Field(default=256, ge=128, description="Address space of a rendering worker, in MB.")
    recycle_after: int = Field(default=200, ge=1, description="A worker is replaced after this many documents.")
    max_workers: int | None = Field(default=None, ge=1, description="Rendering workers at most; empty for one per CPU.")


# --------------------------------------------------------------------------- which documents


def chosen_documents(head: BatchReport, limit: int) -> list[int]:
    """Indexes of the documents given details, in the order they are shown: those needing
    review (as the report lists them), then the others in input order, `limit` at most."""
    review = [note.index for note in head.needs_review][:limit]
    picked = set(review)
    rest: list[int] = []
    index = 0
    while len(review) + len(rest) < limit and index < head.totals.total:
        if index not in picked:
            rest.append(index)
        index += 1
    return review + rest


def shown_pages(result: DocumentResult, boxes: list[Box], limit: int) -> list[int]:
    """Page 1, then the pages that hold boxes, then the next pages, `limit` at most, in order."""
    count = result.pages or limit
    wanted = [1, *sorted({b.page for b in boxes}), *range(2, count + 1)]
    pages: list[int] = []
    for number in wanted:
        if 1 <= number <= count and number not in pages:
            pages.append(number)
        if len(pages) == limit:
            break
    return sorted(pages)


# --------------------------------------------------------------------------- values and boxes


@dataclass
class Value:
    """One extracted leaf value with its provenance (None: not located)."""

    path: str
    value: Any
    provenance: Provenance | None


@dataclass
class Box:
    """A value's box as fractions of its page (0-1), for positioning over any rendering."""

    row: int
    page: int
    left: float
    top: float
    width: float
    height: float


def leaf_values(fields: Any, provenance: Any, path: str = "") -> Iterator[Value]:
    """Every non-empty leaf of `fields`, paired with the provenance that mirrors it; paths as the
    validation checks name them ('totals.grand_total', 'line_items[0].amount')."""
    if isinstance(fields, dict):
        for key, item in fields.items():
            below = provenance.get(key) if isinstance(provenance, dict) and not _is_leaf(provenance) else None
            yield from leaf_values(item, below, f"{path}.{key}" if path else str(key))
    elif isinstance(fields, list):
        for number, item in enumerate(fields):
            below = provenance[number] if isinstance(provenance, list) and number < len(provenance) else None
            yield from leaf_values(item, below, f"{path}[{number}]")
    elif fields is not None and fields != "":
        yield Value(path, fields, _provenance(provenance))


def _is_leaf(tree: dict[str, Any]) -> bool:
    return isinstance(tree.get("match"), str) and isinstance(tree.get("text"), str)


def _provenance(tree: Any) -> Provenance | None:
    """A stored provenance leaf, validated (its numbers go into styles: they must be numbers)."""
    if not isinstance(tree, dict) or not _is_leaf(tree):
        return None
    try:
        return Provenance.model_validate(tree)
    except ValidationError:
        return None


def box_of(row: int, provenance: Provenance | None) -> Box | None:
    """The value's box as fractions of its page, clipped to the page; None without a usable box."""
    if provenance is None or provenance.box is None:
        return None
    box = provenance.box
    numbers = (box.x, box.y, box.w, box.h, box.page_width, box.page_height)
    if not all(math.isfinite(n) for n in numbers):
        return None
    left = min(max(box.x / box.page_width, 0.0), 1.0)
    top = min(max(box.y / box.page_height, 0.0), 1.0)
    width = min(box.w / box.page_width, 1.0 - left)
    height = min(box.h / box.page_height, 1.0 - top)
    return Box(row, provenance.page or 1, left, top, max(width, 0.0), max(height, 0.0))


# --------------------------------------------------------------------------- page images


@dataclass
class Shown:
    """One chosen document, ready to write: its values, boxes, page images and notes."""

    result: DocumentResult
    values: list[Value]
    boxes: list[Box]
    preview: Preview = field(default_factory=Preview)
    notes: list[str] = field(default_factory=list)


def prepare(result: DocumentResult, options: ReviewPageOptions) -> Shown:
    values = list(leaf_values(result.fields, result.provenance))
    boxes = [box for row, value in enumerate(values, start=1) if (box := box_of(row, value.provenance)) is not None]
    return Shown(result, values, boxes)


def render(shown: Shown, source: Source, options: ReviewPageOptions, passwords: list[str]) -> Shown:
    """Read the document again and render its chosen pages in a parse worker; a problem becomes a note."""
    from blocks.isolation import get_pool
    from blocks.page_images import preview_pages

    result = shown.result
    if result.status != "succeeded":
        shown.notes.append("No page images: the document was not extracted (rendering it would repeat its failure).")
        return shown
    try:
        data, _ = source.read(result.ref, options.max_file_bytes)
    except DocumentError as exc:
        shown.notes.append(f"No page images: the document cannot be read again ({exc.message}).")
        return shown
    except Exception as exc:  # noqa: BLE001 - a source's bug must not stop the page
        shown.notes.append(f"No page images: reading the document again failed ({type(exc).__name__}).")
        return shown
    if result.sha256:
        import hashlib

        if hashlib.sha256(data).hexdigest() != result.sha256:
            shown.notes.append("The document changed after it was extracted: the boxes may not match these pages.")
    pages = shown_pages(result, shown.boxes, options.pages)
    # The batch's parse pool (see ReviewPageOptions.timeout_s): the same, already running workers,
    # no extra processes.
    pool = get_pool(
        max_workers=options.max_workers, timeout_s=options.timeout_s, max_memory_mb=options.max_memory_mb,
        recycle_after=options.recycle_after,
    )
    try:
        shown.preview = pool.run(
            preview_pages, data, pages=pages, max_side=options.max_side, quality=options.quality,
            max_pixels=options.max_pixels, passwords=passwords,
        )
    except DocumentError as exc:
        shown.notes.append(f"No page images: the document could not be rendered ({exc.message}).")
    except Exception as exc:  # noqa: BLE001
        shown.notes.append(f"No page images: rendering failed ({type(exc).__name__}: {exc}).")
    if shown.preview.note:
        shown.notes.append(shown.preview.note[:1].upper() + shown.preview.note[1:] + ".")
    total = shown.preview.pages or result.pages
    if shown.preview.images and total and total > len(shown.preview.images):
        listed = ", ".join(str(image.number) for image in shown.preview.images)
        shown.notes.append(f"Pages shown: {listed} of {total}.")
    return shown


def rendered(chosen: list[Shown], source: Source, options: ReviewPageOptions, passwords: list[str], workers: int) -> Iterator[Shown]:
    """`chosen` with their page images, in order, `workers` documents in flight at most (each
    holds its bytes until its worker has rendered it)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docbatch-review") as pool:
        pending: list[Future[Shown]] = []
        for shown in chosen:
            pending.append(pool.submit(render, shown, source, options, passwords))
            if len(pending) > workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


# --------------------------------------------------------------------------- HTML

STYLE = """
:root { color-scheme: light; --ok: rgb(21, 128, 61); --fail: rgb(185, 28, 28); --warn: rgb(180, 83, 9);
  --box: rgb(37, 99, 235); --box-fail: rgb(220, 38, 38); --box-low: rgb(217, 119, 6); --muted: rgb(100, 100, 110); }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; padding: 16px 24px; color: #1b1b1f; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; } h3 { font-size: 16px; margin: 0 0 6px; }
.muted, .meta { color: var(--muted); }
table { border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: 3px 8px; border-bottom: 1px solid #e3e3e8; }
th { background: #f4f4f7; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; font-weight: 600; }
.badge.ok, .badge.succeeded { background: rgb(220, 252, 231); color: var(--ok); }
.badge.needs_review { background: rgb(254, 243, 199); color: var(--warn); }
.badge.failed { background: rgb(254, 226, 226); color: var(--fail); }
.badge.skipped { background: #eee; color: var(--muted); }
.badge.completed { background: rgb(220, 252, 231); color: var(--ok); }
.badge.partially_failed { background: rgb(254, 243, 199); color: var(--warn); }
tr.failed td.why, .error { color: var(--fail); }
article.doc { border-top: 2px solid #d4d4da; padding: 14px 0 8px; margin-top: 12px; }
.body { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.pages { flex: 1 1 480px; max-width: 900px; }
.values { flex: 1 1 560px; overflow-x: auto; }
figure.page { position: relative; margin: 0 0 12px; border: 1px solid #c8c8d0; }
figure.page img { display: block; width: 100%; height: auto; }
figure.page figcaption { position: absolute; right: 0; bottom: 0; background: rgba(255, 255, 255, .85); font-size: 12px; padding: 0 4px; }
a.box { position: absolute; display: block; outline: 2px solid var(--box); outline-offset: 1px; background: rgba(37, 99, 235, .10); }
a.box.fail { outline-color: var(--box-fail); background: rgba(220, 38, 38, .12); }
a.box.low { outline-color: var(--box-low); background: rgba(217, 119, 6, .12); }
a.box span { position: absolute; left: -3px; bottom: 100%; margin-bottom: 3px; font: 600 10px/1.2 system-ui, sans-serif; color: #fff; background: var(--box); padding: 0 3px; border-radius: 3px; }
a.box.fail span { background: var(--box-fail); } a.box.low span { background: var(--box-low); }
a.box:hover, a.box:target { background: rgba(37, 99, 235, .28); }
table.values-table { font-size: 13px; }
table.values-table td { overflow-wrap: anywhere; }
table.values-table td.num, table.values-table td.path, table.values-table td.conf { white-space: nowrap; overflow-wrap: normal; }
.where { display: block; font-size: 11.5px; color: var(--muted); }
tr.fail td { color: var(--fail); } tr.low td.conf { color: var(--warn); font-weight: 600; }
tr:target td { background: rgb(254, 249, 195); }
td.path { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
ul.checks { list-style: none; padding: 0; margin: 6px 0; }
ul.checks li.fail { color: var(--fail); font-weight: 600; }
ul.checks li.pass { color: var(--ok); }
ul.reasons { margin: 4px 0; color: var(--warn); }
.note { color: var(--muted); font-style: italic; margin: 4px 0; }
"""

# No script, no request: what the page may load is nothing but its own inline styles and data: images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _display(value: Any) -> str:
    if isinstance(value, str):
        return _short(value, MAX_VALUE_CHARS)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    return _short(json.dumps(value, ensure_ascii=False, default=str), MAX_VALUE_CHARS)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.4f}%"


def head_html(head: BatchReport, chosen: int, options: ReviewPageOptions) -> str:
    totals = head.totals
    when = head.finished.astimezone().strftime("%Y-%m-%d %H:%M") if isinstance(head.finished, datetime) else ""
    counts = (
        f"{totals.total} document(s): {totals.succeeded} succeeded, {totals.failed} failed, {totals.skipped} skipped; "
        f"{totals.needs_review} need review"
    )
    detail = (
        f"Details with page images below for {chosen} document(s), those needing review first, then the others in input "
        f"order; at most {options.pages} page(s) each."
        if chosen else "No document details on this page (the batch's review_page_documents is 0)."
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(CSP)}\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta name=\"referrer\" content=\"no-referrer\">"
        f"<title>Review: {esc(head.name)}</title><style>{STYLE}</style></head><body>\n"
        f"<header><h1>Review: {esc(head.name)}</h1>"
        f"<p><span class=\"badge {esc(head.status)}\">{esc(head.status)}</span> {esc(head.message)}</p>"
        f"<p class=\"meta\">{esc(counts)}<br>Source {esc(head.source)} · extractor {esc(head.extractor)}"
        f"{' · finished ' + esc(when) if when else ''}</p><p class=\"muted\">{esc(detail)}</p></header>\n"
        "<section id=\"documents\"><h2>Documents</h2>\n<table class=\"documents\"><thead><tr>"
        "<th>#</th><th>file</th><th>status</th><th>review</th><th>reasons / error</th><th>pages</th><th>fields from</th>"
        "</tr></thead><tbody>\n"
    )


def row_html(result: DocumentResult, linked: bool) -> str:
    ref = result.ref
    name = f"<a href=\"#d{ref.index}\">{esc(ref.name)}</a>" if linked else esc(ref.name)
    review = f"<span class=\"badge {esc(result.review)}\">{esc(result.review.replace('_', ' '))}</span>" if result.review else ""
    if result.status != "succeeded":
        kind = result.error_kind.value if result.error_kind else result.status
        why = f"{kind}: {result.error}" if result.error else kind
    else:
        why = " ".join(result.review_reasons)
    return (
        f"<tr class=\"{esc(result.status)}\"><td class=\"num\">{ref.index}</td><td>{name}</td>"
        f"<td><span class=\"badge {esc(result.status)}\">{esc(result.status)}</span></td><td>{review}</td>"
        f"<td class=\"why\">{esc(_short(why, 2000))}</td><td class=\"num\">{'' if result.pages is None else result.pages}</td>"
        f"<td>{esc(result.fields_source or '')}</td></tr>\n"
    )


def details_head_html(chosen: int, total: int, options: ReviewPageOptions) -> str:
    left = total - chosen
    out = "</tbody></table></section>\n<section id=\"details\"><h2>Documents in detail</h2>\n"
    if left > 0:
        out += (
            f"<p class=\"note\">{left} of {total} document(s) are listed in the table only (this page shows details for "
            f"{options.documents} at most: review_page_documents); their values are in documents.json(l) and report.json.</p>\n"
        )
    return out


def document_html(shown: Shown, options: ReviewPageOptions) -> str:
    result = shown.result
    ref = result.ref
    failing = {path for check in result.checks if not check.passed for path in check.fields}
    parts = [f"<article class=\"doc\" id=\"d{ref.index}\"><h3>#{ref.index} {esc(ref.name)} "
             f"<span class=\"badge {esc(result.status)}\">{esc(result.status)}</span>"]
    if result.review:
        parts.append(f" <span class=\"badge {esc(result.review)}\">{esc(result.review.replace('_', ' '))}</span>")
    parts.append("</h3>")
    meta = [result.media_type, f"{result.pages} page(s)" if result.pages is not None else None,
            f"fields from {result.fields_source}" if result.fields_source else None,
            f"read by {result.reader}" if result.reader else None,
            f"OCR: {result.ocr_engine or 'yes'}" if result.ocr else None, result.schema_name]
    parts.append(f"<p class=\"meta\">{esc(' · '.join(m for m in meta if m))}</p>")
    if result.error:
        kind = result.error_kind.value if result.error_kind else result.status
        parts.append(f"<p class=\"error\">{esc(kind)}: {esc(result.error)}</p>")
    if result.review_reasons:
        parts.append("<ul class=\"reasons\">" + "".join(f"<li>{esc(r)}</li>" for r in result.review_reasons) + "</ul>")
    if result.checks:
        items = []
        for check in sorted(result.checks, key=lambda c: c.passed):  # failed first
            mark, cls = ("✓", "pass") if check.passed else ("✗", "fail")
            items.append(f"<li class=\"{cls}\">{mark} <b>{esc(check.name)}</b>: {esc(check.message)}</li>")
        parts.append("<ul class=\"checks\">" + "".join(items) + "</ul>")
    for note in shown.notes:
        parts.append(f"<p class=\"note\">{esc(note)}</p>")
    if result.status != "succeeded" and not result.fields:
        parts.append("</article>\n")
        return "".join(parts)

    classes = {row: _row_class(value, failing, options) for row, value in enumerate(shown.values, start=1)}
    parts.append("<div class=\"body\">")
    if shown.preview.images:
        parts.append("<div class=\"pages\">")
        for image in shown.preview.images:
            encoded = base64.b64encode(image.data).decode("ascii")
            parts.append(
                f"<figure class=\"page\" id=\"d{ref.index}p{image.number}\" style=\"max-width:{image.width}px\">"
                f"<img src=\"data:{esc(image.media_type)};base64,{encoded}\" width=\"{image.width}\" height=\"{image.height}\" "
                f"alt=\"page {image.number} of {esc(ref.name)}\">"
            )
            for box in shown.boxes:
                if box.page != image.number:
                    continue
                value = shown.values[box.row - 1]
                cls = classes[box.row]
                parts.append(
                    f"<a class=\"box {cls}\" id=\"d{ref.index}b{box.row}\" href=\"#d{ref.index}v{box.row}\" "
                    f"data-path=\"{esc(value.path)}\" title=\"{esc(value.path)}: {esc(_display(value.value))}\" "
                    f"style=\"left:{_pct(box.left)};top:{_pct(box.top)};width:{_pct(box.width)};height:{_pct(box.height)}\">"
                    f"<span>{box.row}</span></a>"
                )
            parts.append(f"<figcaption>page {image.number}</figcaption></figure>")
        parts.append("</div>")
    parts.append(values_html(shown, classes))
    parts.append("</div></article>\n")
    return "".join(parts)


def _row_class(value: Value, failing: set[str], options: ReviewPageOptions) -> str:
    if value.path in failing:
        return "fail"
    confidence = value.provenance.confidence if value.provenance else None
    if confidence is not None and options.min_confidence > 0 and confidence < options.min_confidence:
        return "low"
    return ""


def values_html(shown: Shown, classes: dict[int, str]) -> str:
    ref = shown.result.ref
    if not shown.values:
        return "<div class=\"values\"><p class=\"note\">No values were extracted.</p></div>"
    drawn = {box.row for box in shown.boxes if any(image.number == box.page for image in shown.preview.images)}
    rows = [
        "<div class=\"values\"><table class=\"values-table\"><thead><tr><th>#</th><th>field</th><th>value</th>"
        "<th>confidence</th><th>read from</th></tr></thead><tbody>"
    ]
    for row, value in enumerate(shown.values[:MAX_VALUE_ROWS], start=1):
        found = value.provenance
        number = f"<a href=\"#d{ref.index}b{row}\">{row}</a>" if row in drawn else str(row)
        confidence = f"{found.confidence:.2f}" if found is not None and found.confidence is not None else ""
        source = ""
        where: list[str] = []
        if found is not None:
            source = esc(_short(found.text, MAX_SOURCE_CHARS))
            if found.match == "fuzzy" and found.score is not None:
                source += f" <span class=\"muted\">(fuzzy {found.score:.2f})</span>"
            if found.page is not None:
                where.append(f"page {found.page}" + ("" if row in drawn or found.box is None else " (not shown)"))
            where += [x for x in (_short_xml(found.xml_path), f"{found.sheet}!{found.cell}" if found.sheet and found.cell else found.cell,
                                  f"template field {found.template_field}" if found.template_field else None) if x]
        else:
            source = "<span class=\"muted\">not located</span>"
        rows.append(
            f"<tr id=\"d{ref.index}v{row}\" class=\"{classes[row]}\"><td class=\"num\">{number}</td>"
            f"<td class=\"path\">{esc(value.path)}</td><td>{esc(_display(value.value))}</td><td class=\"conf\">{confidence}</td>"
            f"<td>{source}<span class=\"where\">{esc(' · '.join(where))}</span></td></tr>"
        )
    rows.append("</tbody></table>")
    if len(shown.values) > MAX_VALUE_ROWS:
        rows.append(f"<p class=\"note\">{len(shown.values) - MAX_VALUE_ROWS} more value(s): see documents.json(l).</p>")
    rows.append("</div>")
    return "".join(rows)


def _short_xml(path: str | None) -> str | None:
    """An e-invoice element path's last two steps (the full path is in documents.json and report.json)."""
    if not path:
        return None
    steps = path.strip("/").split("/")
    return path if len(steps) <= 2 else "…/" + "/".join(steps[-2:])


FOOT = (
    "</section>\n<footer class=\"muted\"><p>Written by docbatch. This page loads nothing and runs nothing: "
    "images are embedded, boxes are drawn where each value's provenance places it.</p></footer></body></html>\n"
)


# --------------------------------------------------------------------------- the page


@dataclass
class PageStats:
    documents: int = 0
    detailed: int = 0
    images: int = 0
    notes: int = 0


def write_page(
    out: TextIO,
    head: BatchReport,
    results: Iterable[DocumentResult],
    *,
    source: Source,
    options: ReviewPageOptions,
    passwords: list[str] | None = None,
    workers: int = 2,
) -> PageStats:
    """Write the whole page to `out`: the table while `results` (input order) streams by, then
    the chosen documents' details. `head` gives the counts and which documents need review."""
    order = chosen_documents(head, options.documents)
    wanted = set(order)
    kept: dict[int, DocumentResult] = {}
    stats = PageStats()
    out.write(head_html(head, len(order), options))
    for result in results:
        stats.documents += 1
        out.write(row_html(result, result.ref.index in wanted))
        if result.ref.index in wanted:
            kept[result.ref.index] = result
    out.write(details_head_html(len(kept), stats.documents, options))
    chosen = [prepare(kept[index], options) for index in order if index in kept]
    for shown in rendered(chosen, source, options, passwords or [], workers):
        out.write(document_html(shown, options))
        stats.detailed += 1
        stats.images += len(shown.preview.images)
        stats.notes += len(shown.notes)
        shown.preview = Preview()  # drop the images once written
    out.write(FOOT)
    return stats


def publish_page(
    destination: Destination,
    folder: str,
    head: BatchReport,
    results: Iterable[DocumentResult],
    *,
    source: Source,
    options: ReviewPageOptions,
    passwords: list[str] | None = None,
) -> tuple[str, PageStats]:
    """Write the page to `folder/review.html` atomically (a hidden temporary, renamed or uploaded
    when complete, as the exports are); returns its location and what it holds."""
    from blocks.isolation import default_workers

    with destination.atomic_path(folder, PAGE_NAME) as path:
        with open(path, "w", encoding="utf-8", newline="\n") as out:
            stats = write_page(out, head, results, source=source, options=options, passwords=passwords, workers=options.max_workers or default_workers())
    return destination.location(folder, PAGE_NAME), stats


def page_link(destination: Destination, folder: str) -> str:
    """A URL a browser opens the page at: file:// locally; for S3 a presigned GET URL, or the s3:// URI."""
    from blocks.s3 import S3Destination

    if isinstance(destination, S3Destination):
        try:
            client = destination._client()
            return str(client.generate_presigned_url(
                "get_object", Params={"Bucket": destination.bucket, "Key": destination._key(folder, PAGE_NAME)}, ExpiresIn=PRESIGN_S,
            ))
        except Exception as exc:  # noqa: BLE001 - no signing credentials: the URI still says where it is
            log.info("No presigned URL for the review page (%s): linking its s3:// URI", type(exc).__name__)
            return destination.location(folder, PAGE_NAME)
    return destination.link(folder, PAGE_NAME) or destination.location(folder, PAGE_NAME)


def candidate_passwords(extractor: Extractor) -> list[str]:
    """The extractor's candidate PDF passwords (sent to the parse worker only, as extraction does)."""
    secrets = getattr(extractor, "passwords", None) or []
    return [s.get_secret_value() if hasattr(s, "get_secret_value") else str(s) for s in secrets]


def with_pool_limits(options: ReviewPageOptions, extractor: Extractor) -> ReviewPageOptions:
    """`options` with the extractor's parse-worker limits when it parses in isolated workers (the
    embedded extractor); other extractors (models) render pages in the default pool, as their
    own page images are rendered (blocks.openai_compatible)."""
    if not getattr(extractor, "isolate", False):
        return options
    limits = {name: getattr(extractor, name) for name in ("timeout_s", "max_memory_mb", "recycle_after", "max_workers") if hasattr(extractor, name)}
    return options.model_copy(update=limits)


@task(name="review-page", cache_policy=NO_CACHE, persist_result=False)
def write_review_page(
    results: list[DocumentResult],
    *,
    report: BatchReport,
    source: Source,
    destination: Destination,
    folder: str,
    extractor: Extractor,
    options: ReviewPageOptions,
) -> str | None:
    """Write review.html into the batch's folder and link it from the flow run (`review-page`).

    Returns where the page is, or None when it could not be written: that is logged, never raised.
    """
    from prefect.artifacts import create_link_artifact
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    try:
        location, stats = publish_page(
            destination, folder, report, results, source=source, options=with_pool_limits(options, extractor),
            passwords=candidate_passwords(extractor),
        )
    except Exception as exc:  # noqa: BLE001 - the page is a view of the batch, not part of its result
        logger.warning("The review page could not be written: %s: %s", type(exc).__name__, exc)
        return None
    logger.info(
        "Review page: %s (%d document(s), %d with details, %d page image(s))", location, stats.documents, stats.detailed, stats.images,
    )
    try:
        link = page_link(destination, folder)
        create_link_artifact(
            link=link, link_text=PAGE_NAME, key=LINK_KEY,
            description=f"{report.name}: review page ({report.totals.needs_review} document(s) need review) at {location}",
        )
    except Exception as exc:  # noqa: BLE001
        logger.warning("The review page's link could not be published: %s: %s", type(exc).__name__, exc)
    return location


def review_options(export: dict[str, Any], extraction: Any) -> ReviewPageOptions:
    """The page's options from a batch's export settings (as `BatchParameters.export` holds them:
    an earlier batch's report may lack the review keys) and its extraction settings."""
    defaults = ReviewPageOptions()
    return ReviewPageOptions(
        documents=export.get("review_page_documents", defaults.documents),
        pages=export.get("review_page_pages", defaults.pages),
        max_file_bytes=int(getattr(extraction, "max_file_size_mb", 100.0) * 1024 * 1024),
        min_confidence=getattr(extraction, "review_min_confidence", defaults.min_confidence),
    )
