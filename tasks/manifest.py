"""The ingestion manifest: what was already processed from a source, under which settings.

One JSON file per (source, filters, extractor settings) key, at the destination in
`.manifests/<key>.json`, replaced atomically after each run. A missing manifest where earlier
ingestion batches exist, or an unreadable one, is rebuilt from those batches' reports and
reported, never taken as "nothing processed"; a manifest from a newer docbatch is an error.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from blocks.models import BatchReport, DocumentRef, DocumentResult
from blocks.resolve import Destination

MANIFESTS = ".manifests"
MANIFEST_FORMAT = "docbatch-manifest"
MANIFEST_VERSION = 1
LOCK_STALE_S = 6 * 3600

EntryStatus = Literal["done", "failed", "parked"]


class ManifestError(Exception):
    """The manifest cannot be used (written by a newer docbatch)."""


class Entry(BaseModel):
    fingerprint: str = Field(description="Size and mtime locally, the ETag on S3, when last seen.")
    sha256: str | None = Field(default=None, description="Hash of the content last extracted.")
    status: EntryStatus
    attempts: int = 0
    error: str | None = None
    batch: str | None = Field(default=None, description="Batch folder of the last attempt.")


class Manifest(BaseModel):
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION
    key: str
    source: str
    updated: datetime | None = None
    documents: dict[str, Entry] = Field(default_factory=dict)


def manifest_name(key: str) -> str:
    return f"{key}.json"


def read_manifest(destination: Destination, key: str, advice: str) -> Manifest | None:
    """The manifest with `key` as stored; None when there is none.

    Raises `ManifestError` for one a newer docbatch wrote (`advice`: what the reader should do),
    `ValueError` (pydantic's `ValidationError` is one) or `TypeError` for one that cannot be read.
    """
    text = destination.read_text(MANIFESTS, manifest_name(key))
    if text is None:
        return None
    raw = json.loads(text)
    if isinstance(raw, dict) and raw.get("format") == MANIFEST_FORMAT and int(raw.get("version", 0)) > MANIFEST_VERSION:
        raise ManifestError(
            f"the manifest {destination.location(MANIFESTS, manifest_name(key))} was written by a newer docbatch "
            f"(version {raw['version']}){advice}"
        )
    return Manifest.model_validate(raw)


def load_manifest(destination: Destination, key: str, source: str) -> tuple[Manifest, str | None]:
    """The manifest, and a sentence when it had to be rebuilt (None when read as it was)."""
    problem: str | None = None
    try:
        stored = read_manifest(destination, key, "; upgrade docbatch or point ingestion at another destination")
    except (ValueError, TypeError) as exc:
        problem = f"the manifest could not be read ({type(exc).__name__})"
    else:
        if stored is not None and stored.key == key:
            return stored, None
        if stored is not None:
            problem = "the manifest belongs to other settings"
    manifest = Manifest(key=key, source=source)
    rebuilt = _rebuild(destination, key, manifest)
    if problem is not None:
        return manifest, f"{problem}: rebuilt from {rebuilt} earlier batch report(s)"
    if rebuilt:
        return manifest, f"the manifest was missing: rebuilt from {rebuilt} earlier batch report(s)"
    return manifest, None  # a first run: nothing was processed yet


def _rebuild(destination: Destination, key: str, manifest: Manifest) -> int:
    """Fill `manifest` from the reports of earlier ingestion batches with this key, oldest first."""
    used = 0
    for folder in destination.batch_folders():
        text = destination.read_text(folder, "report.json")
        if text is None:
            continue
        try:
            report = BatchReport.model_validate_json(text)
        except ValidationError:
            continue
        if report.batch_key != key:
            continue
        used += 1
        record(manifest, report.results, folder, max_attempts=10**6)
    return used


def record(manifest: Manifest, results: Iterable[DocumentResult], batch: str, *, max_attempts: int) -> list[str]:
    """Enter a batch's outcomes: successes are done, failures count an attempt (parked at the
    limit). Returns the names entered, in order (`results` may be read once only)."""
    names: list[str] = []
    for result in results:
        names.append(result.ref.name)
        before = manifest.documents.get(result.ref.name)
        same_file = before is not None and before.fingerprint == result.ref.fingerprint
        attempts = (before.attempts if same_file and before.status != "done" else 0) + 1
        if result.status in ("succeeded", "skipped"):
            manifest.documents[result.ref.name] = Entry(
                fingerprint=result.ref.fingerprint, sha256=result.sha256, status="done", attempts=attempts, batch=batch
            )
        else:
            manifest.documents[result.ref.name] = Entry(
                fingerprint=result.ref.fingerprint, sha256=result.sha256, status="parked" if attempts >= max_attempts else "failed",
                attempts=attempts, error=f"{result.error_kind.value if result.error_kind else 'error'}: {result.error}", batch=batch,
            )
    return names


def forget_batch(destination: Destination, key: str, batch: str) -> list[str]:
    """Drop from the manifest with `key` every document whose last attempt was in the batch
    folder `batch`, so the next ingestion run sees those files as new and extracts them again.

    Used when a batch is deleted: its results are gone, so the manifest must not keep saying
    they exist. Entries of other batches stay as they are. Returns the names dropped (none when
    there is no manifest, or one that cannot be read: the next run rebuilds it from the batch
    reports still there, which no longer include this one). The caller holds the `IngestLock`.
    """
    try:
        manifest = read_manifest(destination, key, ": upgrade docbatch to delete batches it records")
    except (ValueError, TypeError):
        return []
    if manifest is None:
        return []
    dropped = [name for name, entry in manifest.documents.items() if entry.batch == batch]
    if dropped:
        for name in dropped:
            del manifest.documents[name]
        save_manifest(destination, manifest)
    return dropped


def save_manifest(destination: Destination, manifest: Manifest) -> str:
    manifest.updated = datetime.now(timezone.utc)
    with destination.atomic_path(MANIFESTS, manifest_name(manifest.key)) as path:
        path.write_text(manifest.model_dump_json(indent=1), encoding="utf-8")
    return destination.location(MANIFESTS, manifest_name(manifest.key))


class Plan(BaseModel):
    """What one ingestion run does with each listed document."""

    new: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    retried: list[str] = Field(default_factory=list)
    unchanged: int = 0
    parked: list[str] = Field(default_factory=list)

    @property
    def todo(self) -> list[str]:
        return [*self.new, *self.changed, *self.retried]


def plan(manifest: Manifest, refs: list[DocumentRef], *, max_attempts: int) -> Plan:
    """Compare the listing with the manifest: only size+mtime (or ETag) for unchanged files, so an
    unchanged folder costs no read at all; a file whose fingerprint moved is extracted again
    (its content hash is checked after extraction, when it was only touched)."""
    result = Plan()
    for ref in refs:
        if ref.refused:
            continue
        entry = manifest.documents.get(ref.name)
        if entry is None:
            result.new.append(ref.name)
        elif entry.fingerprint != ref.fingerprint:
            result.changed.append(ref.name)
        elif entry.status == "done":
            result.unchanged += 1
        elif entry.status == "failed" and entry.attempts < max_attempts:
            result.retried.append(ref.name)
        else:
            result.parked.append(ref.name)
    return result


def _is_stale(holder: dict) -> bool:
    """A lock whose holder is gone: its process on this host has died, its flow run has ended,
    or it is older than LOCK_STALE_S (a run on another host that crashed unseen)."""
    if time.time() - float(holder.get("since") or 0) > LOCK_STALE_S:
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True  # killed (even with kill -9): nothing will ever release it
        except PermissionError:
            pass  # alive, another user's
    owner = str(holder.get("owner") or "")
    try:
        import uuid

        run_id = uuid.UUID(owner)
    except ValueError:
        return False
    try:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
    except Exception:  # noqa: BLE001 - no API, or no such run: keep the lock rather than guess
        return False
    return state is not None and state.is_final()


class IngestLock:
    """One ingestion per manifest at a time: an exclusively created lock file at the destination.

    A run that finds the lock held by a live run stops at once ("another ingestion is running");
    a lock whose holder is gone (its process died, its flow run ended, or older than
    LOCK_STALE_S) is taken over.
    """

    def __init__(self, destination: Destination, key: str) -> None:
        self.destination = destination
        self.name = f"{key}.lock"
        self.held = False

    def acquire(self, owner: str) -> bool:
        body = json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        if self.destination.create_exclusive(MANIFESTS, self.name, body=body):
            self.held = True
            return True
        text = self.destination.read_text(MANIFESTS, self.name)
        try:
            holder = json.loads(text or "{}")
        except ValueError:
            holder = {}
        if _is_stale(holder):
            self.destination.delete(MANIFESTS, self.name)
            self.held = self.destination.create_exclusive(MANIFESTS, self.name, body=body)
        return self.held

    def release(self) -> None:
        if self.held:
            self.destination.delete(MANIFESTS, self.name)
            self.held = False
