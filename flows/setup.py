"""The setup every batch-running flow and the CLI share: resolve the source, extractor and
destination, check them before any work, and turn a refusal into one clear `Failed` state."""

from __future__ import annotations

from concurrent.futures import Executor, Future
from contextvars import copy_context
from dataclasses import dataclass
from functools import cached_property

from prefect.logging import get_run_logger
from prefect.states import Failed, State

from blocks.errors import BatchRefused, SourceUnavailable
from blocks.extractor import Extractor
from blocks.resolve import Destination, Source, resolve_destination, resolve_extractor, resolve_source
from flows.params import ExtractionSettings
from tasks.database import Target, resolve_target
from tasks.journal import extraction_key, settings_key

REFUSALS = (SourceUnavailable, BatchRefused)


def open_ends(source: str, include: list[str], exclude: list[str], recursive: bool, output_dir: str) -> tuple[Source, Destination]:
    """The batch's source and destination, both checked: `SourceUnavailable` before any work."""
    src = resolve_source(source, include=include or [], exclude=exclude or [], recursive=recursive)
    src.check()
    destination = resolve_destination(output_dir)
    destination.check()
    return src, destination


@dataclass
class BatchSetup:
    """A batch's resolved and checked source, extractor and destination, and its settings key."""

    src: Source
    destination: Destination
    source: str
    output_dir: str
    include: list[str]
    exclude: list[str]
    recursive: bool
    extraction: ExtractionSettings
    _extractor: Extractor | Future[Extractor]
    database: Target | None = None

    @property
    def extractor(self) -> Extractor:
        """The extractor (waiting for it when it was loaded in the background)."""
        if isinstance(self._extractor, Future):
            self._extractor = self._extractor.result()
        return self._extractor

    @cached_property
    def key(self) -> str:
        """Computed once: an extractor's fingerprint may hash a templates folder's files."""
        return settings_key(self.src, self.include, self.exclude, self.recursive, self.extractor, self.extraction)

    @cached_property
    def extraction_key(self) -> str:
        """How documents are extracted, whatever the source: the database's rows are keyed on it."""
        return extraction_key(self.extractor, self.extraction)


def prepare_batch(
    source: str,
    include: list[str],
    exclude: list[str],
    recursive: bool,
    extraction: ExtractionSettings,
    output_dir: str,
    *,
    background: Executor | None = None,
    database: str | None = None,
) -> BatchSetup:
    """Resolve and check everything a batch needs; raises `SourceUnavailable` or `BatchRefused`.

    With `background`, the extractor (loading a saved block is an API round trip) loads there,
    so its wait overlaps whatever the caller does next (the listing); `.extractor` raises its
    refusal when asked. `database` (a URL or a saved block) is resolved, not connected to: a
    database that is down never refuses a batch (`tasks.database`).
    """
    if background is not None:
        loading: Extractor | Future[Extractor] = background.submit(
            copy_context().run, resolve_extractor, extraction.extractor, **extraction.extractor_options()
        )
    target = resolve_target(database) if database and database.strip() else None
    src, destination = open_ends(source, include, exclude, recursive, output_dir)
    if background is None:
        loading = resolve_extractor(extraction.extractor, **extraction.extractor_options())
    return BatchSetup(src=src, destination=destination, source=source, output_dir=output_dir, include=list(include or []), exclude=list(exclude or []),
                      recursive=recursive, extraction=extraction, _extractor=loading, database=target)


def refused(exc: Exception, what: str = "Batch") -> State:
    """A refusal is an answer, not a crash: one clear line in the run's state, no traceback, and
    Python callers get the exception itself."""
    get_run_logger().warning("%s refused: %s", what, exc)
    return Failed(message=str(exc), data=exc)
