"""Listing a source into ordered, byte-free document references."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import BaseModel

from blocks.errors import BatchRefused
from blocks.models import DocumentRef
from blocks.resolve import Source


class DocumentListing(BaseModel):
    """The listing task's result: the references, in order, in one object.

    One object rather than a bare list: when a task run ends, Prefect records each item of a
    returned list for dependency tracking (a weak reference and a dict entry per item), about
    0.08 s for 10,000 references, on the batch's path before any extraction starts.
    """

    refs: list[DocumentRef]


@task(name="list-documents", cache_policy=NO_CACHE, persist_result=False)
def list_documents(source: Source, max_documents: int) -> DocumentListing:
    """List the source in a stable order, stopping at `max_documents + 1` references.

    Stopping early lets the flow refuse a folder of a million files in the time it takes to
    see one more document than allowed; the caller checks `len(refs) > max_documents`.
    """
    refs: list[DocumentRef] = []
    for ref in source.iter_documents():
        refs.append(ref)
        if max_documents and len(refs) > max_documents:
            get_run_logger().info("Listing stopped past max_documents=%d", max_documents)
            break
    else:
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
