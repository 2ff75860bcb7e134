"""OCR of one page image with RapidOCR: positioned words with scores, and the page's text.

Runs only in OCR workers (`blocks.isolation` pools the embedded extractor keeps for OCR, with
their own memory cap): RapidOCR brings numpy, OpenCV and onnxruntime, about 325 MB of address
space before the first page, more than a plain parse worker may use. The engine is made once per
worker and kept (`engine()`), so a worker pays for the model load once, not once per page.

Offline by construction: the three ONNX models (PP-OCRv6 small detection and recognition, the
PP-OCR text-direction classifier) ship inside the `rapidocr` wheel and their paths are passed
explicitly, so RapidOCR's download code never runs.

Settings, chosen from measurements on this 2-core machine (receipts and A4 scans):
- one inference thread (`OMP_NUM_THREADS=1`, intra/inter-op threads 1): a batch already runs one
  worker per CPU, and more threads per worker only add memory;
- detection on the page reduced to at most 960 px on its longer side (`Det.limit_type=max`), which
  keeps detection memory flat whatever the scan's resolution; recognition reads crops of the full
  image, so small print stays legible;
- onnxruntime's memory-pattern planning off and batch size 1 for recognition and classification:
  the peak fell from ~1.1 GB to ~620 MB with the same text.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from blocks.document import Word

# Detection works on the page scaled so its longer side is at most this many pixels.
DETECTION_SIDE = 960
# Recognised text below this score (RapidOCR's own default) is dropped as noise.
MIN_TEXT_SCORE = 0.5

_ENGINE: Any = None


def engine_name() -> str:
    """'rapidocr <version>', as results record it (`Extraction.ocr_engine`)."""
    try:
        return f"rapidocr {metadata.version('rapidocr')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - the lock installs it
        return "rapidocr"


def engine() -> Any:
    """This worker's RapidOCR engine, made on first use."""
    global _ENGINE
    if _ENGINE is None:
        _allow_numpy()
        # Before numpy/onnxruntime load: one OpenMP thread; and one malloc arena (glibc reads
        # MALLOC_ARENA_MAX only at start-up, so mallopt): each thread's own 64 MB arena counted
        # ~280 MB against the worker's address-space cap (VmPeak 1.14 GB -> 0.85 GB on an A4 scan).
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        _one_malloc_arena()
        import rapidocr
        from rapidocr import RapidOCR
        from rapidocr.inference_engine.onnxruntime import main as ort_main

        _plan_memory_off(ort_main)
        models = Path(rapidocr.__file__).parent / "models"
        params = {
            "Global.log_level": "error",  # its warnings ("detection result is empty") are outcomes, not faults
            "Global.text_score": MIN_TEXT_SCORE,
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "Det.limit_type": "max",
            "Det.limit_side_len": DETECTION_SIDE,
            "Det.model_path": str(models / "PP-OCRv6_det_small.onnx"),
            "Rec.model_path": str(models / "PP-OCRv6_rec_small.onnx"),
            "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
            "Rec.rec_batch_num": 1,
            "Cls.cls_batch_num": 1,
        }
        _ENGINE = RapidOCR(params=params)
    return _ENGINE


def _one_malloc_arena() -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX = 1
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _allow_numpy() -> None:
    """Undo the parse workers' numpy block (`blocks.isolation._prepare_process`) in this worker:
    an OCR worker serves only OCR, and RapidOCR needs numpy."""
    if "numpy" in sys.modules and sys.modules["numpy"] is None:
        del sys.modules["numpy"]


def _plan_memory_off(ort_main: Any) -> None:
    """Turn off onnxruntime's memory-pattern planning, which RapidOCR's config does not expose.

    With it on, every new input shape (each text crop has its own width) plans and keeps its own
    arena: ~500 MB more at the peak on a dense page.
    """
    session_options = ort_main.OrtInferSession._init_sess_opts
    if getattr(session_options, "_docbatch", False):
        return

    def without_pattern(cfg: Any) -> Any:
        options = session_options(cfg)
        options.enable_mem_pattern = False
        return options

    without_pattern._docbatch = True  # type: ignore[attr-defined]
    ort_main.OrtInferSession._init_sess_opts = staticmethod(without_pattern)


class PageClock:
    """Whether one more page can be OCR'd within the document's time budget.

    An OCR worker that passes `ocr_timeout_s` is killed, and every page it had read is lost with
    it: a 50-page scan at 3-9 s a dense page would fail as a whole. So a reader asks before each
    page, and stops (with a warning naming the pages left) when the time spent so far plus the
    slowest page yet would pass the budget; the first page is always read. The caller sets the
    budget below the worker's timeout (`blocks.embedded`: 80 %), leaving room for a page slower
    than any before it and for the fields; the timeout stays the backstop. No budget (None):
    every page is read.
    """

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.started = time.monotonic()
        self.slowest = 0.0
        self.pages = 0

    def allows_another(self) -> bool:
        if self.budget_s is None or not self.pages:
            return True
        return time.monotonic() - self.started + self.slowest <= self.budget_s

    def read(self, image: Any, page: int, *, scale: float = 1.0) -> OcrPage:
        """`read_page`, timed (a worker's first page loads the engine first, untimed: it is no page's cost)."""
        engine()
        began = time.monotonic()
        try:
            return read_page(image, page, scale=scale)
        finally:
            self.pages += 1
            self.slowest = max(self.slowest, time.monotonic() - began)


def over_time(pages: list[int]) -> str:
    """The warning for pages left unread by `PageClock`."""
    shown = ", ".join(map(str, pages[:10])) + (f" and {len(pages) - 10} more" if len(pages) > 10 else "")
    return (
        f"{len(pages)} page(s) were not read by OCR ({shown}): reading them would have passed the OCR time "
        "limit (ocr_timeout_s)"
    )


@dataclass
class OcrPage:
    """What OCR read on one page: words in the caller's units and the page's text in reading order."""

    words: list[Word]
    text: str


def read_page(image: Any, page: int, *, scale: float = 1.0) -> OcrPage:
    """OCR of a PIL image of one page; word boxes are divided by `scale` (pixels per unit).

    For a PDF page rendered at `scale` pixels per point, boxes come back in PDF points; for an
    image, `scale` is 1 and boxes are pixels.
    """
    _allow_numpy()
    import numpy as np

    rgb = image if image.mode == "RGB" else image.convert("RGB")  # palette PNGs give no text otherwise
    array = np.asarray(rgb)[:, :, ::-1]  # RapidOCR takes OpenCV's BGR order
    try:
        result = engine()(np.ascontiguousarray(array), return_word_box=True)
    except Exception as exc:
        # onnxruntime reports a failed allocation (the worker's memory cap) as its own error
        if "alloc" in str(exc).lower():
            raise MemoryError(str(exc)[:200]) from None
        raise
    del array
    lines: list[list[Word]] = []
    if not result.txts:  # nothing detected: word_results is then a placeholder ('', 1.0, None)
        return OcrPage([], "")
    for line in result.word_results or ():
        words = []
        for text, score, box in line:
            text = str(text).strip()
            if not text:
                continue
            xs = [point[0] for point in box]
            ys = [point[1] for point in box]
            words.append(
                Word(
                    text,
                    round(min(xs) / scale, 2), round(min(ys) / scale, 2),
                    round(max(xs) / scale, 2), round(max(ys) / scale, 2),
                    page, round(float(score), 4),
                )
            )
        if words:
            lines.append(words)
    return OcrPage([w for line in lines for w in line], _reading_order(lines))


def _reading_order(lines: list[list[Word]]) -> str:
    """The page's text laid out as `pdftotext -layout` lays out a text layer, which invoice2data's
    templates are written against: detected lines grouped into rows, rows top to bottom, and each
    line placed at the column its left edge is at (page's left margin = column 0, a column being
    the page's median character width), at least two spaces after the line before it.

    A line joins a row when its vertical centre is within half a line height of the row's mean
    centre. OCR boxes are padded (often 1.5x the glyphs' height), so boxes of neighbouring rows
    overlap; comparing centres, not overlaps, keeps a label beside its value and apart from the
    line above.
    """
    spans = sorted(
        (
            ((min(w.top for w in ws) + max(w.bottom for w in ws)) / 2,
             max(w.bottom for w in ws) - min(w.top for w in ws),
             min(w.x0 for w in ws),
             " ".join(w.text for w in ws))
            for ws in lines
        ),
        key=lambda s: s[0],
    )
    rows: list[list[tuple[float, float, float, str]]] = []
    for span in spans:
        if rows:
            row = rows[-1]
            centre = sum(s[0] for s in row) / len(row)
            height = sum(s[1] for s in row) / len(row)
            if abs(span[0] - centre) <= 0.5 * min(span[1], height):
                row.append(span)
                continue
        rows.append([span])
    widths = sorted((w.x1 - w.x0) / len(w.text) for ws in lines for w in ws if w.text)
    column = max(widths[len(widths) // 2], 1e-6) if widths else 1.0
    margin = min((s[2] for s in spans), default=0.0)
    edges: list[float] = []  # left edges seen so far: text of one column shares its left edge
    texts = []
    for row in rows:
        text = ""
        for span in sorted(row, key=lambda s: s[2]):
            # OCR boxes jitter by a few pixels; snapping to a known edge keeps a column's lines at
            # one indentation, which templates' line patterns ('^    name') depend on
            x0 = next((edge for edge in edges if abs(edge - span[2]) < 0.8 * column), None)
            if x0 is None:
                edges.append(x0 := span[2])
            at = round((x0 - margin) / column)
            text += " " * (max(at - len(text), 2) if text else at) + span[3]
        texts.append(text)
    return "\n".join(texts)
