"""Forgetting a batch: its export folder, its flow run(s), its ingestion manifest entries and,
when asked, its database rows.

Two steps, so the CLI can show what would go and ask before anything does: `find_batch` only
reads (the Prefect API, the destination, the manifest), `forget` removes. A batch is named as
`docbatch batches` shows it: by its flow run id, its report.json location, or its folder name
under an output folder.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from blocks.models import BatchReport
from blocks.resolve import Destination, resolve_destination
from flows.reports import REPORT, _is_uuid, _split, report_location_of_run
from tasks.journal import LEGACY_JOURNAL, SEGMENTS
from tasks.database import delete_batch_rows
from tasks.manifest import IngestLock, ManifestError, read_manifest

BATCH_FLOWS = ("extract-batch", "retry-failed")


class UnknownBatch(LookupError):
    """Nothing is known under the name given: no such flow run, no such batch folder."""


class BatchBusy(RuntimeError):
    """The batch, or an ingestion recording into its manifest, is still running."""


class BatchToForget(BaseModel):
    """What `forget` would remove, as found by `find_batch`."""

    output_dir: str = Field(description="The destination the batch folder lives in, as resolve_destination takes it.")
    folder: str | None = Field(default=None, description="The batch folder's name; None when there is none any more.")
    location: str | None = None
    name: str | None = None
    flow_run_id: str | None = Field(default=None, description="The batch's flow run, if the Prefect API still has it.")
    child_flow_run_ids: list[str] = Field(default_factory=list, description="Its fan-out shares' flow runs.")
    flow_run_state: str | None = None
    documents: int | None = Field(default=None, description="Documents in the batch, from its report.json.")
    batch_key: str | None = None
    manifest_entries: int = Field(default=0, description="Ingestion manifest entries that point at this batch folder.")
    database: str | None = Field(default=None, description="The SQL database the batch wrote to (its `database` setting: a URL without a password, or a block).")


class Forgotten(BaseModel):
    """What `forget` removed."""

    folder: str | None = None
    flow_run_ids: list[str] = Field(default_factory=list)
    manifest_entries: list[str] = Field(default_factory=list)
    database_rows: int | None = None


def _read_run(flow_run_id: str) -> tuple[object | None, str | None, list[str]]:
    """(the flow run or None, its flow's name, its child flow runs' ids)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(uuid.UUID(flow_run_id))
        except ObjectNotFound:
            return None, None, []
        flow_name = client.read_flow(run.flow_id).name
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id]))
        )
    return run, flow_name, [str(child.id) for child in children]


def _safe_folder(folder: str | None) -> bool:
    """A batch folder name: one visible path segment (never the destination itself, nor `.manifests`)."""
    return bool(folder) and "/" not in folder and "\\" not in folder and not folder.startswith(".")  # type: ignore[operator]


def _is_batch_folder(destination: Destination, folder: str) -> bool:
    """Only a folder a batch wrote is deleted: it has report.json, or the checkpoint of an
    unfinished run. A path to any other folder is refused, however it was typed."""
    return any(destination.exists(folder, marker) for marker in (REPORT, SEGMENTS, LEGACY_JOURNAL))


def find_batch(batch: str, output: str = "output") -> BatchToForget:
    """Find a batch by flow run id, report.json location or folder path, or folder name under `output`.

    Raises `UnknownBatch` when the name matches nothing; removes nothing.
    """
    batch = batch.strip()
    run = None
    if _is_uuid(batch):
        run, flow_name, children = _read_run(batch)
        if run is None:
            raise UnknownBatch(f"no flow run {batch} in the Prefect API, and no batch by that id")
        if flow_name not in BATCH_FLOWS:
            raise UnknownBatch(f"flow run {batch} is a {flow_name!r} run, not a batch ({' or '.join(BATCH_FLOWS)})")
        located = report_location_of_run(batch)
        output_dir = ((run.parameters or {}).get("export") or {}).get("output_dir")  # type: ignore[attr-defined]
        if not output_dir:
            output_dir = _split(located)[0] if located else output
        destination = resolve_destination(output_dir)
        folder = _split(located)[1] if located else _folder_of_run(destination, batch)
        if not _safe_folder(folder) or not _is_batch_folder(destination, folder):  # type: ignore[arg-type]
            folder = None  # its folder is gone (or never was): the flow run alone
    else:
        if "/" in batch.rstrip("/") or "://" in batch:
            output_dir, folder = _split(batch)
        else:
            output_dir, folder = output, batch.rstrip("/")
        if not _safe_folder(folder):
            raise UnknownBatch(f"{batch!r} names no batch folder")
        destination = resolve_destination(output_dir)
        if not destination.exists(folder):
            raise UnknownBatch(f"no batch {folder!r} in {destination.location()} and no flow run by that id")
        if not _is_batch_folder(destination, folder):
            raise UnknownBatch(f"{destination.location(folder)} is not a batch folder (no {REPORT}, no checkpoint): nothing removed")
    target = BatchToForget(output_dir=output_dir, folder=folder)
    report = _report(destination, target.folder) if target.folder else None
    if report is not None:
        target.name, target.documents, target.batch_key = report.name, report.totals.total, report.batch_key
        if report.parameters is not None:
            target.database = (report.parameters.export or {}).get("database") or None
        if run is None and report.flow_run_id:
            run, _, children = _read_run(report.flow_run_id)
    if run is not None:
        target.flow_run_id, target.child_flow_run_ids = str(run.id), children  # type: ignore[attr-defined]
        target.name = target.name or run.name  # type: ignore[attr-defined]
        target.flow_run_state = run.state.type.value if run.state else None  # type: ignore[attr-defined]
    if target.folder:
        target.location = destination.location(target.folder)
        if target.batch_key:
            target.manifest_entries = len(_manifest_entries(destination, target.batch_key, target.folder))
    return target


def _folder_of_run(destination: Destination, flow_run_id: str) -> str | None:
    """A run with no published report (crashed, refused): its folder ends with its id's first part
    (`tasks.collect.batch_folder_name`); only an unambiguous match counts."""
    suffix = "-" + flow_run_id.split("-")[0]
    found = [name for name in destination.batch_folders() if name.endswith(suffix)]
    return found[0] if len(found) == 1 else None


def _report(destination: Destination, folder: str) -> BatchReport | None:
    text = destination.read_text(folder, REPORT)
    if text is None:
        return None
    try:
        return BatchReport.model_validate_json(text)
    except ValueError:
        return None


def _manifest_entries(destination: Destination, key: str, folder: str) -> list[str]:
    """What `forget` would drop from the manifest (nothing shown for one it cannot read: `forget` says why)."""
    try:
        manifest = read_manifest(destination, key, "")
    except (ManifestError, ValueError, TypeError):
        return []
    return [] if manifest is None else [name for name, entry in manifest.documents.items() if entry.batch == folder]


def forget(target: BatchToForget, *, database: str | None = None, force: bool = False) -> Forgotten:
    """Remove what `find_batch` found. Whatever can refuse does so before anything is removed:
    a flow run that has not ended (`BatchBusy`, unless `force`: a run killed with -9 stays
    Running on the server forever), an ingestion holding the manifest's lock (it would write the
    entries back). Then: database rows, manifest entries,
    the folder, the flow runs (its fan-out children first).
    """
    from tasks.manifest import forget_batch

    if not force and target.flow_run_state in ("RUNNING", "PENDING", "CANCELLING", "PAUSED"):
        raise BatchBusy(
            f"flow run {target.flow_run_id} is {target.flow_run_state.lower()}: cancel it first, "
            "or pass --force if its process is gone"
        )
    destination = resolve_destination(target.output_dir)
    done = Forgotten()
    lock = IngestLock(destination, target.batch_key) if target.folder and target.batch_key else None
    if lock is not None and not lock.acquire(owner=f"docbatch delete {target.folder}"):
        raise BatchBusy("an ingestion that records into this batch's manifest is running: try again once it has ended")
    try:
        if database:
            done.database_rows = delete_batch_rows(database, target.folder or target.flow_run_id or "")
        if lock is not None:
            done.manifest_entries = forget_batch(destination, target.batch_key, target.folder)  # type: ignore[arg-type]
    finally:
        if lock is not None:
            lock.release()
    if target.folder:
        destination.delete_folder(target.folder)
        done.folder = target.location
    if target.flow_run_id:
        from prefect import get_client
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            for run_id in [*target.child_flow_run_ids, target.flow_run_id]:
                try:
                    client.delete_flow_run(uuid.UUID(run_id))
                except ObjectNotFound:
                    continue  # gone already (deleted with its parent)
                done.flow_run_ids.append(run_id)
    return done
