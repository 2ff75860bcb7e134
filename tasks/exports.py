"""Publishing a batch's exports: each file written under a hidden temporary name, renamed (or
uploaded) under its final name only once complete, report.json last.

The writing itself is `tasks.export_files.ExportWriter`, in this process for small batches and
in a child process (`tasks.export_process`) for large ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from blocks.models import BatchReport, DatabaseOutcome, DocumentResult, ExportFormat
from tasks.export_files import (
    REPORT_NAME,
    ExportWriter,
    documents_frame,
    export_names,
    flatten,
    has_line_items,
    line_item_rows,
)
from tasks.export_process import ExportProcess, ExportProcessFailed
from tasks.per_document import PerDocumentWriter

if TYPE_CHECKING:
    from pathlib import Path

    from blocks.resolve import Destination
    from tasks.database import DatabaseSink

__all__ = ["ExportStream", "documents_frame", "flatten", "line_item_rows", "write_exports"]

# From this many documents on, the export files are written by a child process. Below it the
# child's start (a Python with pandas: about 0.7 s of CPU) costs more than the rows it saves.
PROCESS_FROM = 200

log = logging.getLogger("docbatch.exports")


class ExportStream:
    """The exports of one batch, fed with results in input order while the batch runs.

    Every file the formats call for is claimed at the destination up front (a hidden temporary
    until `finish`), so a crash or an error never leaves a final-named file that is not complete.
    With `per_document`, each result also gets its own file under `documents/` as it arrives
    (`tasks.per_document`), all written before report.json is published.
    """

    def __init__(
        self,
        destination: Destination,
        folder: str,
        formats: list[ExportFormat],
        declared_fields: list[str] | None = None,
        *,
        expected: int = 0,
        per_document: bool = False,
        database: DatabaseSink | None = None,
    ) -> None:
        self.destination = destination
        self.folder = folder
        self.formats = list(formats)
        self.declared_fields = list(declared_fields or [])
        self.database = database
        self.count = 0
        self._pending: dict[str, Any] = {}
        try:
            for name in [*export_names(self.formats), REPORT_NAME]:
                self._pending[name] = destination.open_atomic(folder, name)
            self.writer: ExportWriter | ExportProcess = (
                ExportProcess(self.paths, self.declared_fields)
                if expected >= PROCESS_FROM and self.formats
                else ExportWriter(self.paths, self.declared_fields)
            )
            self.per_document = PerDocumentWriter(destination, folder) if per_document else None
        except BaseException:
            self._abort_all()
            raise

    @property
    def paths(self) -> dict[str, Path]:
        return {name: pending.path for name, pending in self._pending.items()}

    def add(self, results: list[DocumentResult], texts: Sequence[str | None] | None = None) -> None:
        """Take the next results of the batch, in input order (`texts`: their JSON where at hand)."""
        if results:
            given = texts if texts is not None else [None] * len(results)
            lines = [text if text is not None else r.model_dump_json() for r, text in zip(results, given)]
            self.writer.add(results, lines)
            if self.per_document is not None:
                self.per_document.add(results, lines)
            if self.database is not None:
                self.database.add(results)
            self.count += len(results)

    def finish_database(self, report: BatchReport) -> DatabaseOutcome | None:
        """Write the database's last rows and the batch's own; what it took or refused (None: no database)."""
        if self.database is None:
            return None
        database, self.database = self.database, None
        return database.finish(report)

    def locations(self, line_items: bool) -> dict[str, str]:
        """Where each file of the exports will be once `finish` has published them (`line_items`:
        whether a result has line items, which adds line_items.csv).

        Known before they are written, so the collector can announce them while they are.
        """
        names = [*export_names(self.formats, line_items), REPORT_NAME]
        return {name: self.destination.location(self.folder, name) for name in names}

    def finish(self, report: BatchReport, *, line_items: bool, count: int) -> dict[str, str]:
        """Write what is left, publish every file (report.json last) and say where each is.

        `count` is how many results the batch has (the report itself may leave them out)."""
        destination, folder = self.destination, self.folder
        try:
            written = self.locations(line_items)
            names = [name for name in written if name != REPORT_NAME]
            final = report.model_copy(update={"exports": written, "output_dir": destination.location(folder)})
            head = final.model_dump_json(exclude={"results", "results_omitted"})
            try:
                if self.count != count:
                    raise ExportProcessFailed(f"{self.count} results streamed for a batch of {count}")
                self.writer.finish(head)
            except ExportProcessFailed as exc:
                if len(report.results) != count:
                    raise  # the report leaves results out: nothing to write the files again from
                # Nothing is lost: the report holds every result, write the files again from it.
                log.warning("The export writer failed (%s); writing the exports in this process instead", exc)
                self.writer.close()
                self.writer = ExportWriter(self.paths, self.declared_fields)
                self.writer.add(report.results)
                self.writer.finish(head)
            # Already flushed to disk by the writer: publishing is a rename, or an upload to S3.
            with ThreadPoolExecutor(max_workers=3, thread_name_prefix="docbatch-publish") as pool:
                for future in [pool.submit(self._pending[name].commit) for name in names]:
                    future.result()
            if self.per_document is not None:
                self.per_document.finish()
            self._pending[REPORT_NAME].commit()  # last: its presence marks a complete folder
        finally:
            self.close()
        return written

    def close(self) -> None:
        """Drop whatever was not published (a crash or an error leaves no final-named file)."""
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
        database = getattr(self, "database", None)
        if database is not None:
            database.close()
        per_document = getattr(self, "per_document", None)
        if per_document is not None:
            per_document.close()
        self._abort_all()

    def _abort_all(self) -> None:
        for pending in self._pending.values():
            pending.abort()


def write_exports(report: BatchReport, destination: Destination, folder: str, formats: list[ExportFormat]) -> dict[str, str]:
    """Write the selected formats into `folder` in one go, report.json last, each file atomically.

    report.json is always written: it is the batch's record (what retry and listing read), and
    its presence marks a batch folder whose exports are complete.
    """
    stream = ExportStream(destination, folder, formats, expected=len(report.results))
    try:
        stream.add(report.results)
    except BaseException:
        stream.close()
        raise
    return stream.finish(report, line_items=has_line_items(report.results), count=len(report.results))
