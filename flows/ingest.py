"""Scheduled directory ingestion: each run extracts only what is new or changed since the last runs."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Literal

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import BaseModel, Field

from blocks.errors import DocumentError
from blocks.local import LocalDirectory
from blocks.models import BatchTotals, DocumentRef
from flows.batch import extract_batch
from flows.params import ExportSettings, ExtractionSettings
from flows.reports import report_results
from flows.setup import REFUSALS, prepare_batch, refused
from tasks.listing import list_documents, write_listing
from tasks.manifest import MANIFESTS, IngestLock, ManifestError, Plan, load_manifest, manifest_name, plan, record, save_manifest

IngestStatus = Literal["nothing_new", "completed", "partially_failed", "failed", "busy"]


class IngestReport(BaseModel):
    """What one ingestion run found and did."""

    name: str
    source: str
    status: IngestStatus
    message: str
    new: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    retried: list[str] = Field(default_factory=list)
    unchanged: int = 0
    deferred: list[str] = Field(default_factory=list, description="Still being written (size or time changed between two looks): next run.")
    parked: list[str] = Field(default_factory=list, description="Failed max_attempts times: not tried again until the file changes.")
    manifest: str | None = None
    manifest_note: str | None = Field(default=None, description="Set when the manifest was missing or unreadable and rebuilt.")
    batch_flow_run_id: str | None = None
    batch_report: str | None = None
    totals: BatchTotals | None = None


def ingest_run_name() -> str:
    return f"Ingest {flow_run.parameters.get('source', '')} {datetime.now().astimezone():%Y-%m-%d %H:%M}"


def _sha256(src: object, ref: DocumentRef) -> str | None:
    """Content hash of a local file whose size or mtime moved (touched or really changed?)."""
    if not isinstance(src, LocalDirectory):
        return None  # the ETag of an S3 object is already its content's fingerprint
    try:
        data, _ = src.read(ref, max(ref.size, 1) * 2 + 1024)
    except DocumentError:
        return None
    return hashlib.sha256(data).hexdigest()


@flow(name="ingest-inbox", flow_run_name=ingest_run_name, validate_parameters=True)
def ingest_inbox(
    source: str = "inbox",
    include: list[str] = [],  # noqa: B006 - never mutated; renders as a list field in the UI
    exclude: list[str] = [],  # noqa: B006
    recursive: bool = True,
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4,
    extraction: ExtractionSettings = ExtractionSettings(),
    export: ExportSettings = ExportSettings(output_dir="output/inbox"),
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3,
    settle_s: Annotated[float, Field(ge=0, le=600)] = 2.0,
) -> IngestReport:
    """Extract the documents of a folder or S3 prefix that are new or changed since earlier runs.

    A manifest at the export destination remembers every document processed with these
    extraction settings (changing them starts afresh). Failed documents are tried again on the
    next runs, up to `max_attempts`, then parked until they change. One run at a time per
    manifest: a run that finds another one running does nothing.

    Args:
        source: What to watch: a folder, 's3://bucket/prefix', or a saved source block 'BLOCK-TYPE/NAME'.
        include: Glob patterns a file must match, e.g. '*.pdf'. Empty: all files.
        exclude: Glob patterns that drop a file.
        recursive: Also watch sub-folders.
        max_concurrency: Documents extracted at the same time (1-64).
        extraction: Which extractor to use and its limits; part of the manifest's key.
        export: Where each run's batch folder and the manifest go, and the export formats.
        max_attempts: Runs that may try a failing document before it is parked (1-20).
        settle_s: Seconds between two looks at new or changed files; one still changing waits for the next run.
    """
    logger = get_run_logger()
    name = flow_run.get_name() or ingest_run_name()
    try:
        setup = prepare_batch(source, include, exclude, recursive, extraction, export.output_dir)
    except REFUSALS as exc:
        return refused(exc, "Ingestion")  # type: ignore[return-value]
    src, destination, key = setup.src, setup.destination, setup.key
    handed = (MANIFESTS, f"{manifest_name(key)}.todo.jsonl")  # this run's listing, handed to its batch
    lock = IngestLock(destination, key)
    if not lock.acquire(owner=str(flow_run.get_id() or "python")):
        message = "another ingestion of this source with these settings is running: nothing done"
        logger.warning(message)
        return IngestReport(name=name, source=src.describe(), status="busy", message=message)
    try:
        try:
            manifest, note = load_manifest(destination, key, src.describe())
        except ManifestError as exc:
            return Failed(message=str(exc), data=exc)  # type: ignore[return-value]
        if note:
            logger.warning("Manifest: %s", note)
        refs = list_documents(src, 0).refs
        todo = plan(manifest, refs, max_attempts=max_attempts)
        by_name = {ref.name: ref for ref in refs}
        touched = _skip_touched(todo, manifest, src, by_name)
        deferred = _still_changing(todo, src, by_name, settle_s)
        report = IngestReport(
            name=name, source=src.describe(), status="nothing_new", message="",
            new=todo.new, changed=todo.changed, retried=todo.retried, unchanged=todo.unchanged,
            deferred=deferred, parked=todo.parked, manifest_note=note,
        )
        if not todo.todo:
            if note or touched or manifest.updated is None:  # an unchanged folder writes nothing
                report.manifest = save_manifest(destination, manifest)
            report.message = f"nothing new: {todo.unchanged} unchanged, {len(deferred)} still being written, {len(todo.parked)} parked"
            logger.info(report.message)
            return report
        logger.info(
            "%d new, %d changed, %d to retry, %d unchanged, %d still being written, %d parked",
            len(todo.new), len(todo.changed), len(todo.retried), todo.unchanged, len(deferred), len(todo.parked),
        )
        # The batch takes this run's listing of the files to extract instead of listing the source again.
        write_listing(destination, [by_name[n] for n in todo.todo if n in by_name], *handed)
        batch = extract_batch(
            source=source, include=include, exclude=exclude, recursive=recursive, max_concurrency=max_concurrency,
            batch_name=name, extraction=extraction, export=export, max_documents=0, listing="/".join(handed),
            # A run killed mid-batch left a checkpoint: the next run takes its finished documents
            # from it instead of extracting them again (and publishes them once, in its exports).
            resume=True,
        )
        folder = PurePosixPath(batch.output_dir or "").name
        # A large batch's report leaves its results out: read them back from its report.json, one at a time.
        results = batch.results if not batch.results_omitted else report_results(destination, folder)
        names = record(manifest, results, folder, max_attempts=max_attempts)
        parked_now = [name for name in names if manifest.documents[name].status == "parked"]
        report.parked = sorted({*todo.parked, *parked_now})
        report.manifest = save_manifest(destination, manifest)
        report.status = batch.status
        report.totals = batch.totals
        report.batch_flow_run_id = batch.flow_run_id
        report.batch_report = batch.exports.get("report.json")
        report.message = f"{batch.message}; {len(report.parked)} parked, {len(deferred)} still being written"
        return report
    finally:
        destination.delete(*handed)
        lock.release()


def _skip_touched(todo: Plan, manifest: object, src: object, by_name: dict[str, DocumentRef]) -> int:
    """A local file whose mtime moved but whose content hash did not is not extracted again."""
    documents = manifest.documents  # type: ignore[attr-defined]
    touched = 0
    for name in list(todo.changed):
        entry = documents[name]
        if entry.status == "done" and entry.sha256 and _sha256(src, by_name[name]) == entry.sha256:
            todo.changed.remove(name)
            todo.unchanged += 1
            entry.fingerprint = by_name[name].fingerprint
            touched += 1
    return touched


def _still_changing(todo: Plan, src: object, by_name: dict[str, DocumentRef], settle_s: float) -> list[str]:
    """Names among the candidates whose size or time changed during `settle_s`: being written."""
    if not todo.todo or settle_s <= 0:
        return []
    time.sleep(settle_s)
    now = {ref.name: ref.fingerprint for ref in src.iter_documents()}  # type: ignore[attr-defined]
    moving = [name for name in todo.todo if now.get(name) != by_name[name].fingerprint]
    for bucket in (todo.new, todo.changed, todo.retried):
        bucket[:] = [name for name in bucket if name not in moving]
    return moving
