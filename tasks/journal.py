"""The batch's one road for results: append-only segments of finished documents at the destination.

Every final result leaves the code that extracted it one way: a line appended to its share's
segment, `<batch folder>/segments/<run>-<share>-<writer>.jsonl`. The flow that started the
batch reads the segments as they grow (`SegmentTail`) and merges them in input order into the
exports; whether the share ran on a thread of that flow or in a child flow run on another
machine (`flows.shard`) makes no difference to that reader. The same segments are the batch's
checkpoint: `resume` takes every result they hold (`find_resumable`), and a child flow run
started again for a crashed share skips the documents its share's segments already hold.

Why segments and not Prefect's persisted task results: in a large batch a task run is a shard
of hundreds or thousands of documents, and a result is only persisted when the whole shard ends,
so a crash would lose every finished document of the shards in flight; the shard plan also
depends on `max_concurrency`, so a re-run with another value would match no cached shard. A
segment records each document the moment it is final, and a re-run matches documents by name
and fingerprint. One writer per segment (never two processes appending to one file or key),
so nothing needs a lock across machines.

Each line is flushed as written (locally; on S3 in segments uploaded every 2 s), so a killed
process loses at most what the operating system or the last interval had not got. A torn last
line is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from blocks.models import DocumentRef, DocumentResult
from blocks.resolve import Destination

if TYPE_CHECKING:
    from blocks.extractor import Extractor
    from blocks.resolve import Source
    from flows.params import ExtractionSettings

SEGMENTS = "segments"
LEGACY_JOURNAL = "journal.jsonl"  # the single journal of docbatch before segments: still resumed
JOURNAL_FORMAT = "docbatch-journal"
JOURNAL_VERSION = 2
REPORT_NAME = "report.json"
LISTING_NAME = "listing.jsonl"  # a fanned-out batch's listing, which its child flow runs share out (flows.shard)

log = logging.getLogger("docbatch.journal")


class JournalHeader(BaseModel):
    """First line of a segment: which batch, run and share it belongs to."""

    format: str = JOURNAL_FORMAT
    version: int = JOURNAL_VERSION
    batch_key: str
    batch_name: str
    source: str
    run: str = ""
    share: int = 0


def batch_key(**settings: Any) -> str:
    """A stable hash of everything that decides a document's result (source, filters, extractor
    settings): a checkpoint is only resumed by a batch with the same key. Secret fields are never
    part of it (pydantic dumps them masked)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def settings_key(
    src: Source, include: list[str], exclude: list[str], recursive: bool, extractor: Extractor, extraction: ExtractionSettings
) -> str:
    """The key of everything that decides a document's result: equal keys, equal results."""
    # `fingerprint` holds what the settings do not show, e.g. a templates folder's content: a
    # changed template is a new configuration for resume and ingestion, though its path is not.
    return batch_key(
        source=src.describe(), include=include, exclude=exclude, recursive=recursive,
        extractor=extractor.label, extractor_settings=extractor.model_dump(mode="json"),
        extractor_fingerprint=extractor.fingerprint(),
        keep_text=extraction.keep_text, max_file_size_mb=extraction.max_file_size_mb,
        review_min_confidence=extraction.review_min_confidence,
    )


def extraction_key(extractor: Extractor, extraction: ExtractionSettings) -> str:
    """The key of how documents are extracted, whatever the source: the database's rows are one
    per (document, this key), so a retry or an ingestion run over the same files replaces them."""
    return batch_key(
        extractor=extractor.label, extractor_settings=extractor.model_dump(mode="json"),
        extractor_fingerprint=extractor.fingerprint(),
        keep_text=extraction.keep_text, max_file_size_mb=extraction.max_file_size_mb,
        review_min_confidence=extraction.review_min_confidence,
    )


def new_run_token() -> str:
    """A short name shared by the segments of one run of a batch (a resumed run gets a new one)."""
    return uuid.uuid4().hex[:12]


class Indices:
    """A set of document indices as one byte per index up to the largest (a `set` of ints costs
    about 50 bytes an entry, 5 MB per 100,000 documents, for as long as the batch runs)."""

    def __init__(self) -> None:
        self._flags = bytearray()
        self._count = 0

    def add(self, index: int) -> None:
        if index >= len(self._flags):
            self._flags.extend(bytes(index + 1 - len(self._flags)))
        if not self._flags[index]:
            self._flags[index] = 1
            self._count += 1

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and 0 <= index < len(self._flags) and bool(self._flags[index])

    def __len__(self) -> int:
        return self._count


class SegmentWriter:
    """One share's segment; `record` is called from its extraction threads."""

    def __init__(self, file: Any, name: str) -> None:
        self._file = file
        self.name = name
        self.recorded = Indices()
        self._lock = threading.Lock()
        self._open = True

    @classmethod
    def open(cls, destination: Destination, folder: str, header: JournalHeader) -> SegmentWriter:
        """A new segment of `header.run`'s share `header.share` (a new writer never appends to another's)."""
        name = f"{header.run}-{header.share:03d}-{uuid.uuid4().hex[:8]}.jsonl"
        file = destination.open_journal(folder, SEGMENTS, name)
        file.append(header.model_dump_json() + "\n")
        return cls(file, name)

    def record(self, result: DocumentResult, text: str | None = None) -> None:
        """Append one final result (`text`: its `model_dump_json()`, when the caller has it)."""
        line = (text if text is not None else result.model_dump_json()) + "\n"
        with self._lock:
            if self._open:
                self._file.append(line)  # in the OS's hands now: survives the process being killed
                self.recorded.add(result.ref.index)

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                self._file.close()


def _parse(lines: Iterable[str]) -> Iterator[tuple[DocumentResult, str] | JournalHeader | None]:
    """Each line as a result (with its text), a header, or None for a torn line."""
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        if line.startswith('{"format"'):
            try:
                yield JournalHeader.model_validate_json(line)
                continue
            except ValidationError:
                pass
        try:
            yield DocumentResult.model_validate_json(line), line
        except ValidationError:
            yield None  # the line being written when the process died


class SegmentTail:
    """The flow's reader of one run's segments: each call returns the results written since the last.

    Segments appear as shares start (a child flow run started again for a crashed share adds
    one); each is read from where the last call stopped. A document recorded twice (a share's
    crashed attempt and its new one) is returned twice: the flow's `InOrder` takes it once.
    """

    def __init__(self, destination: Destination, folder: str, run: str) -> None:
        self.destination = destination
        self.folder = folder
        self.prefix = f"{run}-"
        self._cursors: dict[str, int] = {}

    def poll(self) -> list[tuple[DocumentResult, str]]:
        found: list[tuple[DocumentResult, str]] = []
        for name in self.destination.list_journals(self.folder, SEGMENTS):
            if not name.startswith(self.prefix):
                continue
            lines, self._cursors[name] = self.destination.read_new_lines(self.folder, SEGMENTS, name, cursor=self._cursors.get(name, 0))
            found.extend(item for item in _parse(lines) if isinstance(item, tuple))
        return found


def read_share(destination: Destination, folder: str, run: str, share: int) -> dict[int, DocumentResult]:
    """The final results the segments of one run's share hold, by index (the first of each)."""
    done: dict[int, DocumentResult] = {}
    for result, _ in SegmentTail(destination, folder, f"{run}-{share:03d}").poll():  # its segments, read whole
        done.setdefault(result.ref.index, result)
    return done


@dataclass
class Resumable:
    """An unfinished batch found at the destination, with the results its segments hold."""

    folder: str
    results: dict[tuple[str, str], DocumentResult]
    torn_lines: int = 0

    def take(self, refs: list[DocumentRef]) -> dict[int, DocumentResult]:
        """Recorded results of the listed documents, by their index in this listing.

        A document matches by name and fingerprint (size and mtime, or the ETag): one that
        changed since it was recorded is extracted again.
        """
        taken: dict[int, DocumentResult] = {}
        for ref in refs:
            recorded = self.results.get((ref.name, ref.fingerprint))
            if recorded is not None:
                taken[ref.index] = recorded.model_copy(update={"ref": ref})
        return taken


def read_checkpoint(destination: Destination, folder: str, key: str) -> Resumable | None:
    """The results of every segment of `folder` (and of an older docbatch's single journal)
    whose header carries `key`; None when none does."""
    journals = [(SEGMENTS, name) for name in destination.list_journals(folder, SEGMENTS)] + [(LEGACY_JOURNAL,)]
    results: dict[tuple[str, str], DocumentResult] = {}
    torn, matched = 0, False
    for parts in journals:
        lines = destination.read_lines(folder, *parts)
        if lines is None:
            continue
        items = _parse(lines)
        header = next(items, None)
        if not isinstance(header, JournalHeader) or header.format != JOURNAL_FORMAT or header.batch_key != key:
            continue
        if header.version > JOURNAL_VERSION:
            raise ValueError(f"{destination.location(folder, *parts)} was written by a newer docbatch (journal version {header.version})")
        matched = True
        for item in items:
            if item is None:
                torn += 1
            elif isinstance(item, tuple):
                result, known = item[0], results.get((item[0].ref.name, item[0].ref.fingerprint))
                if known is None or (known.status == "failed" and result.status != "failed"):
                    results[(result.ref.name, result.ref.fingerprint)] = result  # a later run's success wins
    return Resumable(folder=folder, results=results, torn_lines=torn) if matched else None


def find_resumable(destination: Destination, key: str) -> Resumable | None:
    """The newest batch folder with this key's checkpoint and no report.json (so unfinished)."""
    for folder in reversed(destination.batch_folders()):
        if destination.exists(folder, REPORT_NAME):
            continue
        found = read_checkpoint(destination, folder, key)
        if found is not None:
            destination.remove_temporaries(folder)  # half-written exports of the interrupted run
            return found
    return None


def discard_checkpoint(destination: Destination, folder: str) -> None:
    """The batch's exports are complete: its segments (and an older journal) have served their purpose."""
    destination.delete_folder(folder, SEGMENTS)
    destination.delete(folder, LISTING_NAME)
    destination.delete(folder, LEGACY_JOURNAL)
    destination.delete_folder(folder, f"{LEGACY_JOURNAL}.d")  # its segments on S3
