"""The child flow of a batch fanned out over a work pool: one share of its documents, on any worker.

`extract_batch` with `workers = K` lists the source, writes the listing to the batch folder at
the destination and starts K runs of the `extract-shard` deployment (`flows.fanout`). Each run
gets its share's number and where the listing is, never a document's bytes nor a secret: it
resolves the source, extractor and destination itself (saved blocks load their secrets on the
worker), reads its share of the listing, and appends each document's result to its own segment
at the destination (`tasks.journal`), which the parent merges. A run started again for the same
share (its first one crashed) skips the documents that share's segments already hold.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from blocks.errors import BatchRefused
from blocks.models import DocumentRef
from flows.params import ExtractionSettings
from flows.setup import REFUSALS, prepare_batch, refused
from tasks.extract import batch_options, extraction_task
from tasks.listing import read_listing
from tasks.journal import LISTING_NAME, JournalHeader, SegmentWriter, read_share
from tasks.share import ShareSummary, run_share


def share_of(refs: list[DocumentRef], share: int, shares: int) -> list[DocumentRef]:
    """Share `share` of `shares`: positions share, share + shares, ... of the listing, so every
    share moves through the batch from its start and the merged exports advance all along."""
    return refs[share::shares]


def shard_run_name() -> str:
    parameters = flow_run.parameters
    return f"{parameters.get('batch_name') or 'batch'}: share {parameters.get('share', 0) + 1} of {parameters.get('shares', 1)}"


@flow(name="extract-shard", flow_run_name=shard_run_name, validate_parameters=True)
def extract_shard(
    source: str,
    output_dir: str,
    folder: str,
    run: str,
    share: Annotated[int, Field(ge=0)],
    shares: Annotated[int, Field(ge=1)],
    batch_key: str,
    batch_name: str = "",
    include: list[str] = [],  # noqa: B006 - never mutated
    exclude: list[str] = [],  # noqa: B006
    recursive: bool = True,
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4,
    extraction: ExtractionSettings = ExtractionSettings(),
) -> ShareSummary:
    """Extract one share of a fanned-out batch into its segment (started by `extract-batch`, not by hand).

    Args:
        source: The batch's source, as the batch was given it.
        output_dir: The batch's export destination.
        folder: The batch folder under the destination, holding the listing and the segments.
        run: The parent run's token: this share's segment is named after it.
        share: This share's number (0-based).
        shares: How many shares the batch has.
        batch_key: The batch's settings key; a worker whose source, extractor or templates differ refuses.
        batch_name: For the run's name and the segment's header.
        include: The batch's include globs.
        exclude: The batch's exclude globs.
        recursive: The batch's recursive setting.
        max_concurrency: Documents this share extracts at the same time.
        extraction: The batch's extraction settings.
    """
    logger = get_run_logger()
    try:
        setup = prepare_batch(source, include, exclude, recursive, extraction, output_dir)
        if setup.key != batch_key:
            raise BatchRefused(
                "this worker sees another batch configuration than the batch's flow (a different source, extractor "
                "block, templates folder or docbatch version): its documents would not be extracted alike"
            )
        listing = read_listing(setup.destination, folder, LISTING_NAME)
    except REFUSALS as exc:
        return refused(exc, "Share")  # type: ignore[return-value]
    mine = share_of(listing, share, shares)
    done = read_share(setup.destination, folder, run, share)
    todo = [ref for ref in mine if ref.index not in done]
    if done:
        logger.info("Share %d of %d: %d of its %d document(s) already recorded by an earlier run of it", share + 1, shares, len(done), len(mine))
    options = batch_options(
        extraction, batch_id=str(flow_run.get_id() or uuid.uuid4().hex), max_concurrency=max_concurrency,
        documents=len(todo), budget_share=shares,
    )
    header = JournalHeader(batch_key=batch_key, batch_name=batch_name, source=setup.src.describe(), run=run, share=share)
    segment = SegmentWriter.open(setup.destination, folder, header)
    try:
        summary = run_share(refs=todo, source=setup.src, extractor=setup.extractor, options=options, segment=segment, task=extraction_task(extraction))
    finally:
        segment.close()
    summary.recorded += len(done)
    logger.info("Share %d of %d: %d document(s) recorded", share + 1, shares, summary.recorded)
    return summary
