"""Listing a source into ordered, byte-free document references."""

from __future__ import annotations

import threading

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import BaseModel

from blocks.errors import BatchRefused
from blocks.models import DocumentRef
from blocks.resolve import Destination, Source


class DocumentListing(BaseModel):
    """The listing task's result: the references, in order, in one object.

    One object rather than a bare list: when a task run ends, Prefect records each item of a
    returned list for dependency tracking (a weak reference and a dict entry per item), about
    0.08 s for 10,000 references, on the batch's path before any extraction starts.
    """

    refs: list[DocumentRef]


class ListingFeed:
    """The references of a listing still running, for a batch that starts before it ends.

    The listing task appends each reference as the source yields it; the batch's extraction
    task runs take them from there (`tasks.work.SharedWork`). Listing 10,000 local files takes
    0.25-0.4 s here and 10,000 S3 keys several seconds: a batch without a document limit need
    not wait for the last name before extracting the first document.
    """

    def __init__(self) -> None:
        self.refs: list[DocumentRef] = []
        self.done = False
        self.abandoned = False
        self._changed = threading.Condition()

    def put(self, ref: DocumentRef) -> bool:
        """Add the next reference; False (and nothing added) once the batch has stopped."""
        if self.abandoned:
            return False
        with self._changed:
            self.refs.append(ref)
            self._changed.notify_all()
        return True

    def close(self) -> None:
        """The listing ended, completely or not: the listing task's outcome says which."""
        with self._changed:
            self.done = True
            self._changed.notify_all()

    def abandon(self) -> None:
        """Stop the listing at its next reference: the batch it fed has stopped (a refusal, an
        error). Nothing to stop once the listing has ended."""
        self.abandoned = True

    def wait_beyond(self, count: int) -> bool:
        """Block until more than `count` references are listed or the listing ends; True when more are."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.refs) > count or self.done)
            return len(self.refs) > count


@task(name="list-documents", cache_policy=NO_CACHE, persist_result=False)
def list_documents(source: Source, max_documents: int, feed: ListingFeed | None = None) -> DocumentListing:
    """List the source in a stable order, stopping at `max_documents + 1` references.

    Stopping early lets the flow refuse a folder of a million files in the time it takes to
    see one more document than allowed; the caller checks `len(refs) > max_documents`.
    With a `feed` (pass it wrapped in prefect's `quote`), each reference is also handed to it as
    soon as it is listed, and the feed is closed when the listing ends, however it ends; a
    batch that stops early abandons the feed, and the listing then ends at its next reference
    (a stop asked for, not a failure of the listing).
    """
    feed = feed if feed is not None else ListingFeed()
    refs = feed.refs
    abandoned = False
    try:
        for ref in source.iter_documents():
            if not feed.put(ref):
                abandoned = True
                break
            if max_documents and len(refs) > max_documents:
                get_run_logger().info("Listing stopped past max_documents=%d", max_documents)
                break
    finally:
        feed.close()
    if abandoned:
        get_run_logger().info("Listing stopped after %d document(s): the batch it fed has stopped", len(refs))
    elif not max_documents or len(refs) <= max_documents:
        refused = sum(1 for r in refs if r.refused)
        get_run_logger().info(
            "Listed %d document(s) in %s%s", len(refs), source.describe(), f" ({refused} refused)" if refused else ""
        )
    return DocumentListing.model_construct(refs=refs)  # each reference was validated when built


def refuse_if_too_many(source: Source, refs: list[DocumentRef], max_documents: int) -> None:
    if max_documents and len(refs) > max_documents:
        raise BatchRefused(
            f"{source.describe()} holds more than {max_documents} documents (max_documents={max_documents}); "
            "narrow it with include/exclude, or raise max_documents (0 means unlimited)"
        )


def write_listing(destination: Destination, refs: list[DocumentRef], *parts: str) -> str:
    """Store references as JSON lines at the destination (atomically), for another flow run to
    read instead of listing the source again: a fanned-out batch's children, or the batch an
    ingestion run hands its new and changed files to. Returns where it is."""
    with destination.atomic_path(*parts) as path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(ref.model_dump_json() + "\n" for ref in refs)
    return destination.location(*parts)


def read_listing(destination: Destination, *parts: str) -> list[DocumentRef]:
    """The references `write_listing` stored; a missing listing is a `BatchRefused`."""
    text = destination.read_text(*parts)
    if text is None:
        raise BatchRefused(f"the listing {destination.location(*parts)} is not there")
    return [DocumentRef.model_validate_json(line) for line in text.splitlines() if line.strip()]
