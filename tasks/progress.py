"""The batch's progress artifact, kept up to date by a thread of the flow that merges the results."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from uuid import UUID

from tasks.artifacts import PROGRESS_KEY

PROGRESS_EVERY_S = 1.0

log = logging.getLogger("docbatch.progress")


class ProgressPublisher:
    """Creates the progress artifact, then refreshes it once a second while the count moves.

    `finished()` is the count of documents with a final result (merged from the segments, so
    the same for one process or many workers); `total()` is the batch's size so far and whether
    it is final (not while a feeding listing runs). Publishing from this thread keeps a blocking
    API call out of every shard's path (measured: about 0.4 s of a 10,000-document batch), and
    creating the artifact here lets its round trip overlap the first documents.
    """

    def __init__(self, title: str, finished: Callable[[], int], total: Callable[[], tuple[int, bool]]) -> None:
        self.title = title
        self.finished = finished
        self.total = total
        self.artifact_id: UUID | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,  # the Prefect client settings of the flow run
            args=(self._run,), name="docbatch-progress", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and send the last count beside the collector's work (see `settle`)."""
        self._stop.set()
        thread = self._thread

        def last_word() -> None:
            # Only once the thread is done (and the artifact exists), so an older value still
            # in flight from it can never land after this one.
            if thread is not None and thread.is_alive():
                thread.join()
            self.publish()

        self._last = threading.Thread(target=contextvars.copy_context().run, args=(last_word,), name="docbatch-progress-last", daemon=True)
        self._last.start()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the last update has landed."""
        if self._last is not None:
            self._last.join(timeout)

    def _run(self) -> None:
        from prefect.artifacts import create_progress_artifact

        published = self.finished()  # documents taken from a checkpoint are finished already
        try:
            self.artifact_id = create_progress_artifact(progress=self._percent(published), key=PROGRESS_KEY, description=self._describe(published))
        except Exception as exc:  # progress is cosmetic: never let it fail the batch
            log.warning("could not create the progress artifact: %s", exc)
            return
        while not self._stop.wait(PROGRESS_EVERY_S):
            finished = self.finished()
            if finished != published:
                self.publish(finished)
                published = finished

    def _percent(self, finished: int) -> float:
        total, final = self.total()
        if not final:
            return 0.0
        return round(100.0 * finished / total, 1) if total else 100.0

    def _describe(self, finished: int) -> str:
        total, final = self.total()
        counted = f"{finished} of {total} documents finished" if final else f"{finished} of {total}+ documents finished (still listing)"
        return f"{self.title}: {counted}" if self.title else counted

    def publish(self, finished: int | None = None) -> None:
        if self.artifact_id is None or not self.total()[0]:
            return
        from prefect.artifacts import update_progress_artifact

        finished = self.finished() if finished is None else finished
        try:
            update_progress_artifact(self.artifact_id, progress=self._percent(finished), description=self._describe(finished))
        except Exception as exc:  # progress is cosmetic: never let it fail a document
            log.warning("could not update the progress artifact: %s", exc)
