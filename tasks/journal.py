"""The batch's checkpoint: an append-only journal of finished documents, for `resume`.

Why a journal and not Prefect's persisted task results: in a large batch a task run is a shard
of hundreds or thousands of documents, and a result is only persisted when the whole shard ends,
so a crash would lose every finished document of the shards in flight; the shard plan also depends on
`max_concurrency`, so a re-run with another value would match no cached shard. The journal
records each document the moment it is final, whatever the shard, and a re-run matches
documents by name and fingerprint.

Each line is flushed as written, so a killed process (even `kill -9`) loses nothing the
journal had been given; the operating system writes it to disk (a power cut may lose the last
seconds, which the re-run then extracts again). A torn last line is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from blocks.resolve import Destination
from blocks.models import DocumentRef, DocumentResult

JOURNAL_NAME = "journal.jsonl"
JOURNAL_FORMAT = "docbatch-journal"
JOURNAL_VERSION = 1
REPORT_NAME = "report.json"

log = logging.getLogger("docbatch.journal")


class JournalHeader(BaseModel):
    """First line of a journal: which batch it belongs to."""

    format: str = JOURNAL_FORMAT
    version: int = JOURNAL_VERSION
    batch_key: str
    batch_name: str
    source: str


def batch_key(**settings: Any) -> str:
    """A stable hash of everything that decides a document's result (source, filters, extractor
    settings): a journal is only resumed by a batch with the same key. Secret fields are never
    part of it (pydantic dumps them masked)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class BatchJournal:
    """An open journal; `record` is called from the extraction threads."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._open = True

    @classmethod
    def open(cls, destination: Destination, folder: str, header: JournalHeader) -> BatchJournal:
        file = destination.open_journal(folder, JOURNAL_NAME)
        if file.fresh:
            file.append(header.model_dump_json() + "\n")
        return cls(file)

    def record(self, result: DocumentResult, text: str | None = None) -> None:
        """Append one final result (`text`: its `model_dump_json()`, when the caller has it)."""
        line = (text if text is not None else result.model_dump_json()) + "\n"
        with self._lock:
            if self._open:
                self._file.append(line)  # in the OS's hands now: survives the process being killed

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                self._file.close()

    def discard(self) -> None:
        """The batch's exports are complete: the checkpoint has served its purpose."""
        self.close()
        self._file.delete()


@dataclass
class Resumable:
    """An unfinished batch found at the destination, with the results its journal holds."""

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


def read_journal(lines: Iterator[str], folder: str, key: str, where: str) -> Resumable | None:
    """The journal's results if its header carries `key`; None for another batch's journal."""
    results: dict[tuple[str, str], DocumentResult] = {}
    torn = 0
    try:
        header = JournalHeader.model_validate_json(next(lines, ""))
    except ValidationError:
        return None
    if header.format != JOURNAL_FORMAT or header.batch_key != key:
        return None
    if header.version > JOURNAL_VERSION:
        raise ValueError(f"{where} was written by a newer docbatch (journal version {header.version})")
    for line in lines:
        try:
            result = DocumentResult.model_validate_json(line)
        except ValidationError:
            torn += 1  # the line being written when the process died
            continue
        results[(result.ref.name, result.ref.fingerprint)] = result
    return Resumable(folder=folder, results=results, torn_lines=torn)


def find_resumable(destination: Destination, key: str) -> Resumable | None:
    """The newest batch folder with this key's journal and no report.json (so unfinished)."""
    for folder in reversed(destination.batch_folders()):
        if destination.exists(folder, REPORT_NAME):
            continue
        lines = destination.read_lines(folder, JOURNAL_NAME)
        if lines is None:
            continue
        found = read_journal(iter(lines), folder, key, destination.location(folder, JOURNAL_NAME))
        if found is not None:
            destination.remove_temporaries(folder)  # half-written exports of the interrupted run
            return found
    return None
