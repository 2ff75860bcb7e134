"""Retry-failed: re-extract only the failed documents of an earlier batch, with its settings."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from blocks.errors import SourceUnavailable
from blocks.models import BatchReport, DocumentResult
from flows.batch import run_batch
from flows.fanout import plan_fan_out
from flows.params import ExportSettings, ExtractionSettings
from flows.setup import REFUSALS, prepare_batch, refused
from flows.reports import load_report
from tasks.collect import batch_folder_name


def retry_run_name() -> str:
    name = (flow_run.parameters.get("batch_name") or "").strip()
    return name or f"Retry {flow_run.parameters.get('batch', '')[:36]}"


@flow(name="retry-failed", flow_run_name=retry_run_name, validate_parameters=True)
def retry_failed(batch: str, batch_name: str = "") -> BatchReport:
    """Extract the failed documents of an earlier batch again, with that batch's settings.

    The new report keeps the earlier batch's input order: its succeeded and skipped documents
    are carried over as they were, its failed ones replaced by the new attempt's results. It is
    written, with all exports, into a new batch folder beside the earlier one.

    Args:
        batch: The earlier batch: its flow run id, or its report.json (a path or an s3:// URI).
        batch_name: Name of the new batch and of this flow run; empty gives '<earlier name> (retry)'.
    """
    logger = get_run_logger()
    started = datetime.now(timezone.utc)
    run_id = flow_run.get_id()
    try:
        previous = load_report(batch)
        if previous.parameters is None:
            raise SourceUnavailable(f"the report of {previous.name!r} does not record its parameters (made by an older docbatch)")
        settings = previous.parameters
        extraction = ExtractionSettings(**settings.extraction)
        export = ExportSettings(**settings.export)
        setup = prepare_batch(
            settings.source, settings.include, settings.exclude, settings.recursive, extraction, export.output_dir, database=export.database
        )
        fan_out = plan_fan_out(setup, settings.workers, settings.work_pool, settings.shared_path) if settings.workers else None
    except REFUSALS as exc:
        return refused(exc, "Retry")  # type: ignore[return-value]

    name = (batch_name or "").strip() or f"{previous.name} (retry)"
    refs = [result.ref.model_copy(update={"index": n}) for n, result in enumerate(previous.results)]
    taken: dict[int, DocumentResult] = {
        n: result.model_copy(update={"ref": refs[n]}) for n, result in enumerate(previous.results) if result.status != "failed"
    }
    logger.info("Retrying %d failed document(s) of %r (%s)", len(refs) - len(taken), previous.name, previous.flow_run_id or batch)
    return run_batch(
        refs=refs, taken=taken, resumed=0, setup=setup, folder=batch_folder_name(name, started, str(run_id) if run_id else None),
        name=name, started=started, max_concurrency=settings.max_concurrency, formats=export.formats, parameters=settings,
        fan_out=fan_out,
    )
