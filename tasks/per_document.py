"""One JSON file per document under `documents/` in the batch folder, mirroring the source tree.

For pipelines that pick results up file by file: the document `invoices/2024/a.pdf` gets
`documents/invoices/2024/a.pdf.json`, holding the same JSON as its line in documents.jsonl.
Each file is written through the destination's atomic write (temporary name, then rename or a
single upload), so a reader never sees a half-written final-named file. Writes go to a small
thread pool: on S3 each file is a PUT, and 10,000 of them one after another would hold the batch
up for minutes. At most four files per thread wait at once, so a fast batch never queues every
result's text in memory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from blocks.models import DocumentResult

if TYPE_CHECKING:
    from blocks.resolve import Destination

FOLDER = "documents"
SUFFIX = ".json"
# PUTs at once: S3 answers a small PUT in tens of milliseconds, so 8 keep up with a batch's pace
# on 2 cores without crowding the extraction slots' connections (blocks/aws.py: 64 per client).
WORKERS = 8
# A path segment longer than this (in UTF-8 bytes) is shortened: most file systems cap a name at
# 255 bytes, and the local temporary beside it (`.<name>.<random>.tmp`) needs about 20 more.
MAX_SEGMENT_BYTES = 200

log = logging.getLogger("docbatch.per_document")


def _segment(part: str) -> str:
    """One path segment made safe: `.` and `..` never walk the tree, a NUL never reaches the OS,
    an overlong name is cut and given a hash so two long names stay apart."""
    part = part.replace("\x00", "_")
    if part in (".", ".."):
        return part.replace(".", "%2E")
    data = part.encode("utf-8")
    if len(data) <= MAX_SEGMENT_BYTES:
        return part
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{data[: MAX_SEGMENT_BYTES - 17].decode('utf-8', errors='ignore')}~{digest}"


def document_path(name: str) -> list[str]:
    """Path parts, under the batch folder, of the file for the document named `name`.

    `name` is the document's path relative to the source root with '/' separators. Empty
    segments (a leading '/', '//') are dropped, so an absolute name stays inside `documents/`;
    '.' and '..' segments are written as '%2E' and '%2E%2E', so no name can leave it.
    """
    parts = [_segment(part) for part in name.split("/") if part]
    if not parts:
        parts = ["_"]
    parts[-1] += SUFFIX
    return [FOLDER, *parts]


class PerDocumentWriter:
    """Writes each result it is given to its own file, a few at a time, in the order given.

    `finish` waits for every file and raises the first write that failed, so the batch's
    report.json (written after it) is only published once every per-document file is.
    """

    def __init__(self, destination: Destination, folder: str, *, workers: int = WORKERS) -> None:
        self.destination = destination
        self.folder = folder
        self.count = 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docbatch-per-document")
        self._slots = threading.BoundedSemaphore(max(workers * 4, 1))
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def add(self, results: Sequence[DocumentResult], texts: Sequence[str]) -> None:
        """Queue one file per result (`texts`: each result's JSON); blocks while 4 × workers wait."""
        for result, text in zip(results, texts):
            if self._error is not None:
                raise self._error
            self._slots.acquire()
            future = self._pool.submit(self._write, result.ref.name, text)
            future.add_done_callback(self._done)

    def _write(self, name: str, text: str) -> None:
        with self.destination.atomic_path(self.folder, *document_path(name)) as path:
            path.write_text(text, encoding="utf-8")

    def _done(self, future: Future[None]) -> None:
        self._slots.release()
        if future.cancelled():
            return
        error = future.exception()
        with self._lock:
            if error is None:
                self.count += 1
            elif self._error is None:
                self._error = error

    def finish(self) -> None:
        """Wait for every queued file; raise the first that could not be written."""
        self._pool.shutdown(wait=True)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop without waiting: files not yet started are dropped (each written one is whole)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
