"""`docbatch`: run a batch from the shell and get a summary, or the whole report as JSON."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Defaults that make the first run on a fresh machine work; explicit settings still win.
# Creating and migrating Prefect's SQLite database on 2 cores took longer than the temporary
# server's 20 s start-up timeout here, and this machine has no internet for telemetry.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from typing import TYPE_CHECKING, Annotated, Optional  # noqa: E402

import typer  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from blocks.errors import BatchRefused, SourceUnavailable  # noqa: E402
from blocks.models import DEFAULT_FORMATS, BatchReport, DatabaseOutcome  # noqa: E402

if TYPE_CHECKING:
    from flows.params import ExtractionSettings

EXIT_OK = 0
EXIT_BATCH_FAILED = 1
EXIT_BAD_PARAMETERS = 2
EXIT_SOURCE_UNAVAILABLE = 3
EXIT_INTERNAL = 4
EXIT_ACCESS_DENIED = 5
EXIT_UNREACHABLE = 6


def unavailable_exit_code(exc: SourceUnavailable) -> int:
    """3: the source or destination does not exist as named (folder, bucket, region); 5: the
    credentials are rejected or lack a permission; 6: the endpoint cannot be reached."""
    if exc.reason in ("access_denied", "bad_credentials"):
        return EXIT_ACCESS_DENIED
    if exc.reason == "unreachable":
        return EXIT_UNREACHABLE
    return EXIT_SOURCE_UNAVAILABLE


@contextmanager
def one_line_errors(
    err: Console, *, refusals: tuple[type[Exception], ...] = (), mistakes: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """What a command's call raises, as one line on stderr and the exit code that means it: the
    CLI's last line of defence, so no traceback reaches a user. `refusals` (a batch or command
    refused) and `mistakes` (a name that matches nothing) exit 2; an unavailable source or
    destination 3, 5 or 6 (`unavailable_exit_code`); anything else is an internal error, 4."""
    try:
        yield
    except typer.Exit:
        raise
    except refusals as exc:
        err.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(EXIT_BAD_PARAMETERS) from None
    except mistakes as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_BAD_PARAMETERS) from None
    except SourceUnavailable as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(unavailable_exit_code(exc)) from None
    except Exception as exc:  # noqa: BLE001 - one line, distinct code
        err.print(f"[red]internal error:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_INTERNAL) from None

def schema_settings(schema: str) -> dict[str, str]:
    """`--schema`: 'auto', 'invoice', 'receipt' and 'none' choose what the embedded extractor fills
    ('receipt' is also a model extractor's built-in target); anything else is a model extractor's
    target (a file path made absolute, so the flow reads the same file)."""
    schema = schema.strip()
    if schema in ("auto", "invoice", "none", ""):
        return {"schema_name": schema or "auto", "target_schema": ""}
    if schema == "receipt":
        return {"schema_name": "receipt", "target_schema": "receipt"}
    if not schema.startswith("{") and os.path.isfile(schema):
        schema = os.path.abspath(schema)
    return {"schema_name": "auto", "target_schema": schema}


app = typer.Typer(
    help="docbatch: batch document extraction on Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """docbatch: turn a folder of documents into structured records, exports and Prefect artifacts.

    Exit codes: 0 batch completed or partially_failed; 1 batch failed (every document failed);
    2 bad parameters or batch refused; 3 source unavailable; 4 internal error.
    """


@app.command()
def run(
    source: Annotated[str, typer.Argument(help="What to extract: a folder, an S3 prefix 's3://bucket/prefix', or a saved source block 'BLOCK-TYPE/NAME' (e.g. 's3-source/inbox').")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where each batch gets a sub-folder of exports: a folder, 's3://bucket/prefix', or a saved destination block.")] = "output",
    formats: Annotated[
        Optional[list[str]],
        typer.Option("--format", "-f", help="Export format, repeatable: json, jsonl, csv, xlsx, parquet, review (review.html); readable reports: xml, txt, html, docx, pdf (documents.<format>). Default: json, jsonl, csv, xlsx, parquet, review. report.json is always written."),
    ] = None,
    review_page_documents: Annotated[int, typer.Option("--review-page-documents", help="review.html shows the pages, with each value's box, of at most this many documents (those needing review first); every document is in its table. 0: table only.")] = 100,
    per_document: Annotated[bool, typer.Option("--per-document", help="Also write one JSON per document under documents/ in the batch folder, mirroring the source tree (a/b.pdf → documents/a/b.pdf.json), as results arrive.")] = False,
    database: Annotated[Optional[str], typer.Option("--database", help="Also upsert the results into an SQL database: 'sqlite:///results.db', 'postgresql+psycopg://user@host/db' (the password from PGPASSWORD or ~/.pgpass, never in the URL), or a saved 'sqlalchemy-connector/NAME' block. A database that refuses never stops the batch.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Documents extracted at the same time (1-64).")] = 4,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Batch name, also the Prefect flow run name. Default: 'Batch YYYY-MM-DD HH:mm'.")] = None,
    include: Annotated[Optional[list[str]], typer.Option("--include", "-i", help="Glob a file must match, repeatable, e.g. '*.pdf'.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", "-x", help="Glob that drops a file, repeatable, e.g. 'drafts/*'.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Also read sub-folders.")] = True,
    max_documents: Annotated[int, typer.Option("--max-documents", help="Refuse a batch with more documents than this, before any work; 0 = unlimited (extraction then starts while a large folder is still being listed).")] = 1000,
    extractor: Annotated[str, typer.Option("--extractor", help="'embedded' (offline default) or a saved extractor block 'BLOCK-TYPE/NAME'.")] = "embedded",
    keep_text: Annotated[bool, typer.Option("--keep-text", help="Keep each document's full text in the report and exports.")] = False,
    max_file_size_mb: Annotated[float, typer.Option("--max-file-size-mb", help="Documents larger than this fail as too_large.")] = 100.0,
    max_pages: Annotated[int, typer.Option("--max-pages", help="PDFs with more pages fail as too_large.")] = 2000,
    retries: Annotated[int, typer.Option("--retries", help="Retries for transient errors (0-10).")] = 2,
    templates: Annotated[Optional[str], typer.Option("--templates", help="Folder of invoice2data templates (.yml/.json): the first whose keywords match a document fills its fields (embedded extractor).")] = None,
    embedded_xml: Annotated[bool, typer.Option("--embedded-xml/--no-embedded-xml", help="Read the Factur-X / ZUGFeRD / XRechnung XML that PDFs embed (exact fields); --no-embedded-xml reads their page text instead.")] = True,
    ocr: Annotated[bool, typer.Option("--ocr/--no-ocr", help="Read images and PDF pages without a text layer by OCR (offline, RapidOCR; about 2 s a page on one core); --no-ocr fails them as no_text (embedded extractor).")] = True,
    languages: Annotated[Optional[list[str]], typer.Option("--language", "-l", help="Language of the documents (ISO 639-1, e.g. de), repeatable: narrows how dates with month names are read. Default: any.")] = None,
    schema: Annotated[str, typer.Option("--schema", help="'auto' (default: the receipt schema for documents that look like receipts, the invoice schema for the others, or a template's fields), 'invoice', 'receipt', 'none' (text, pages and type only), or for model extractors a JSON Schema file, pasted JSON, or a saved 'extraction-schema/NAME'.")] = "auto",
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Instructions sent with every document to a model extractor, e.g. 'These are German supplier invoices'.")] = None,
    max_tokens_per_batch: Annotated[int, typer.Option("--max-tokens-per-batch", help="Model extractors: stop starting documents once the batch's tokens (in + out) reach N; the rest are skipped. 0 = no cap.")] = 0,
    max_cost_per_batch: Annotated[float, typer.Option("--max-cost-per-batch", help="Model extractors: stop starting documents once the batch's cost (the block's prices) reaches this. 0 = no cap.")] = 0.0,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Model extractors: reuse the result of the same bytes with the same configuration (no tokens); --no-cache always asks the model.")] = True,
    review_min_confidence: Annotated[float, typer.Option("--review-min-confidence", help="A document needs review when a required value was read with a confidence below this (0-1), or a validation check fails (totals, VAT, dates, currency, VAT id, IBAN); 0 = confidence not judged.")] = 0.4,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be sent to a model extractor, with a token and cost estimate per document, and send nothing.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="0 (default): extract in this process. K > 0: fan out over a Prefect work pool as K child flow runs of the 'extract-shard' deployment (see README, Fan-out); the source and output must be S3 or a path every worker shares (--shared-path).")] = 0,
    work_pool: Annotated[Optional[str], typer.Option("--work-pool", help="With --workers: the work pool whose workers run the shares. Default: the pool 'extract-shard' is deployed to.")] = None,
    shared_path: Annotated[bool, typer.Option("--shared-path", help="With --workers: a local source or output folder is the same path on every worker (a network share).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the newest unfinished run of this same batch in --output (after a crash or kill): documents already in its checkpoint are not extracted again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole BatchReport as JSON on stdout and nothing else.")] = False,
) -> None:
    """Extract every document of SOURCE and print a summary.

    Exit codes: 0 completed or partially_failed; 1 failed; 2 bad parameters or batch refused;
    3 source or destination not found (folder, bucket, region); 4 internal error;
    5 access denied or credentials rejected; 6 storage endpoint unreachable.
    """
    err = Console(stderr=True, soft_wrap=True)
    from flows.params import ExportSettings, ExtractionSettings

    try:
        extraction = ExtractionSettings(
            extractor=extractor, keep_text=keep_text, max_file_size_mb=max_file_size_mb, max_pages=max_pages, retries=retries,
            templates=templates or "", embedded_xml=embedded_xml, ocr=ocr, languages=languages or [],
            **schema_settings(schema), prompt=prompt or "",
            max_tokens_per_batch=max_tokens_per_batch, max_cost_per_batch=max_cost_per_batch, cache=cache,
            review_min_confidence=review_min_confidence,
        )
        export = ExportSettings(
            output_dir=output, formats=formats if formats else list(DEFAULT_FORMATS), review_page_documents=review_page_documents,
            per_document=per_document, database=database or "",
        )
        if not 1 <= concurrency <= 64:
            raise typer.BadParameter("must be between 1 and 64", param_hint="--concurrency")
        if max_documents < 0:
            raise typer.BadParameter("must be 0 (unlimited) or more", param_hint="--max-documents")
        if not 0 <= workers <= 256:
            raise typer.BadParameter("must be between 0 and 256", param_hint="--workers")
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            err.print(f"[red]error:[/] invalid {where}: {error['msg']}")
        raise typer.Exit(EXIT_BAD_PARAMETERS) from None

    from flows.setup import open_ends

    try:  # before the flow run starts: one line and a distinct exit code, no flow run to clean up
        open_ends(source, include or [], exclude or [], recursive, output)
    except SourceUnavailable as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(unavailable_exit_code(exc)) from None
    try:  # a broken template or schema is refused here, with its file and reason, before any document is read
        if extraction.extractor.strip() in ("", "embedded"):
            from blocks.embedded import EmbeddedExtractor

            EmbeddedExtractor(**extraction.embedded_options()).with_batch_settings(
                schema=extraction.target_schema, prompt=extraction.prompt
            ).check()
        elif extraction.target_schema:
            from blocks.schemas import load_target_schema

            load_target_schema(extraction.target_schema)
    except ValueError as exc:
        err.print(f"[red]refused:[/] the extractor's configuration cannot be used: {exc}")
        raise typer.Exit(EXIT_BAD_PARAMETERS) from None

    if dry_run:
        run_dry(source, include or [], exclude or [], recursive, extraction, max_documents, as_json, err)

    from flows.batch import extract_batch

    with one_line_errors(err, refusals=(BatchRefused,)):
        report = extract_batch(
            source=source,
            include=include or [],
            exclude=exclude or [],
            recursive=recursive,
            max_concurrency=concurrency,
            batch_name=name or "",
            extraction=extraction,
            export=export,
            max_documents=max_documents,
            resume=resume,
            workers=workers,
            work_pool=work_pool or "",
            shared_path=shared_path,
        )

    # + list-documents and collect-results
    # Fanned out, the shards' task runs belong to the child flow runs: here only list-documents and collect-results.
    extracted = 0 if workers else report.totals.total - report.totals.resumed
    finish(report, as_json, err, extracted=extracted, concurrency=concurrency, other_task_runs=2)


def run_dry(
    source: str, include: list[str], exclude: list[str], recursive: bool, extraction: ExtractionSettings, max_documents: int,
    as_json: bool, err: Console,
) -> None:
    """`--dry-run`: the estimate table (or JSON), then exit 0; nothing is sent, no flow run is made."""
    from flows.dry_run import dry_run

    try:
        plan = dry_run(source, include=include, exclude=exclude, recursive=recursive, extraction=extraction,
                       max_documents=max_documents)
    except (BatchRefused, ValueError) as exc:
        err.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(EXIT_BAD_PARAMETERS) from None
    except SourceUnavailable as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(unavailable_exit_code(exc)) from None
    if as_json:
        sys.stdout.write(plan.model_dump_json(indent=2) + "\n")
        raise typer.Exit(EXIT_OK)
    from rich.markup import escape

    table = Table(title=f"dry run: {plan.extractor} over {plan.source} (nothing sent)")
    for column in ("#", "file", "pages", "text chars", "requests", "tokens in (est.)", "tokens out (max)", "cost (max)"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for item in plan.documents:
        e = item.estimate
        if e is None:
            table.add_row(str(item.index), escape(item.file), "", "", "", "", "", escape(item.error or ""))
        else:
            table.add_row(str(item.index), escape(item.file), str(e.pages or ""), f"{e.text_chars:,}", str(e.requests),
                          f"{e.tokens_in:,}", f"{e.tokens_out_max:,}", "" if e.cost_max is None else f"{e.cost_max:.4f}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    cost = "" if plan.cost_max is None else f", cost at most {plan.cost_max:.4f}"
    console.print(f"{len(plan.documents)} documents, {plan.requests} requests: about {plan.tokens_in:,} tokens in, "
                  f"at most {plan.tokens_out_max:,} out{cost}")
    raise typer.Exit(EXIT_OK)


def finish(report: BatchReport, as_json: bool, err: Console, *, extracted: int, concurrency: int, other_task_runs: int) -> None:
    """Wait for the server to hold the batch's history, print the report, exit with its code."""
    if report.flow_run_id:
        from flows.history import wait_for_history
        from tasks.sharding import plan_shards

        expected = len(plan_shards(extracted, concurrency)) + other_task_runs
        if not wait_for_history(report.flow_run_id, expected):
            err.print("[yellow]warning:[/] the Prefect server has not yet recorded every task run of this batch")
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        print_summary(report, Console(width=None if sys.stdout.isatty() else 160))
    raise typer.Exit(EXIT_BATCH_FAILED if report.status == "failed" else EXIT_OK)


@app.command()
def retry(
    batch: Annotated[str, typer.Argument(help="The earlier batch: its flow run id, or its report.json (path or s3:// URI).")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Name of the new batch; default '<earlier name> (retry)'.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole BatchReport as JSON on stdout and nothing else.")] = False,
) -> None:
    """Extract the failed documents of an earlier batch again, with its settings.

    Writes a new batch folder whose report keeps the earlier input order: earlier successes
    carried over, failures replaced by the new attempt. Exit codes as for `run`.
    """
    err = Console(stderr=True, soft_wrap=True)
    from flows.retry import retry_failed

    with one_line_errors(err):
        report = retry_failed(batch=batch, batch_name=name or "")
    from flows.reports import load_report

    retried = len(load_report(batch).failed_results())  # only these were extracted again
    concurrency = report.parameters.max_concurrency if report.parameters else 4
    finish(report, as_json, err, extracted=retried, concurrency=concurrency, other_task_runs=1)  # + collect-results


@app.command()
def batches(
    status: Annotated[Optional[str], typer.Option("--status", help="Only batches that ended so: completed, partially_failed or failed.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200, help="At most this many batches, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout.")] = False,
) -> None:
    """List earlier batches from the Prefect API: name, status, totals, when, where the report is."""
    if status is not None and status not in ("completed", "partially_failed", "failed"):
        Console(stderr=True).print("[red]error:[/] --status must be completed, partially_failed or failed")
        raise typer.Exit(EXIT_BAD_PARAMETERS)
    from flows.reports import list_batches

    found = list_batches(status, limit)  # type: ignore[arg-type]
    if as_json:
        sys.stdout.write(json.dumps([b.model_dump() for b in found], indent=2) + "\n")
        return
    table = Table(title=f"{len(found)} batch(es)", title_justify="left")
    for column in ("started", "name", "status", "documents", "failed", "needs review", "report", "flow run"):
        table.add_column(column, overflow="fold")
    for item in found:
        totals = item.totals or {}
        table.add_row(
            (item.started or "")[:19], item.name, item.status or item.state, str(totals.get("total", "")),
            str(totals.get("failed", "")), str(totals.get("needs_review", "")), item.report or "", item.flow_run_id,
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@app.command()
def delete(
    batch: Annotated[str, typer.Argument(help="The batch: its flow run id, its report.json location, or its folder name as `docbatch batches` shows them.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where the batch folders live, for a folder name: a folder, 's3://bucket/prefix', or a saved destination block.")] = "output",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    database: Annotated[Optional[str], typer.Option("--database", help="Delete the batch's rows from this SQL database (a URL or a 'sqlalchemy-connector/NAME' block). Default: the database the batch wrote to, if any.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Delete even when its flow run is still marked running (its process is gone).")] = False,
) -> None:
    """Forget a batch: delete its export folder, its flow run, and its ingestion manifest entries
    (so the next ingestion run extracts those files again).

    Exit codes: 0 deleted; 1 not confirmed (nothing removed); 2 no such batch, or it is still running;
    3, 5, 6 as for `run` when the output cannot be read; 4 internal error.
    """
    err = Console(stderr=True, soft_wrap=True)
    from flows.forget import BatchBusy, UnknownBatch, find_batch, forget
    from tasks.manifest import ManifestError

    with one_line_errors(err, mistakes=(UnknownBatch,)):  # an unreachable Prefect API is an internal error
        target = find_batch(batch, output)
    from rich.markup import escape

    console = Console(soft_wrap=True)
    documents = "" if target.documents is None else f", {target.documents} document(s)"
    console.print(f"Batch {escape(repr(target.name or '?'))}{documents}")
    console.print(f"  folder:   {escape(target.location or '(none found)')}")
    runs = f"{target.flow_run_id} ({(target.flow_run_state or '').lower()})" if target.flow_run_id else "(none found)"
    if target.child_flow_run_ids:
        runs += f" and {len(target.child_flow_run_ids)} child flow run(s)"
    console.print(f"  flow run: {runs}")
    if target.manifest_entries:
        console.print(f"  ingestion manifest: {target.manifest_entries} document(s) to forget (extracted again on the next run)")
    database = database or target.database  # the batch's own database, as it ran
    if database:
        console.print(f"  database: its rows in {escape(database)}")
    if not yes and not typer.confirm("Delete all of this?", default=False):
        err.print("nothing removed")
        raise typer.Exit(EXIT_BATCH_FAILED)
    with one_line_errors(err, refusals=(BatchBusy, ManifestError)):
        done = forget(target, database=database, force=force)
    console.print(f"removed folder {escape(done.folder)}" if done.folder else "no folder to remove")
    console.print(f"removed {len(done.flow_run_ids)} flow run(s): {', '.join(done.flow_run_ids)}" if done.flow_run_ids else "no flow run to remove")
    console.print(f"forgot {len(done.manifest_entries)} document(s) in the ingestion manifest")
    if done.database_rows is not None:
        console.print(f"deleted {done.database_rows} database row(s)")


@app.command()
def webhook(
    url: Annotated[str, typer.Argument(help="URL that receives a POST (JSON: batch name, status, totals, report) when a batch ends partially_failed or failed.")],
    allow_private_urls: Annotated[bool, typer.Option("--allow-private-urls", help="Allow a URL on a private or loopback address.")] = False,
) -> None:
    """Create (or replace) the Prefect automation that calls URL when a batch ends with failures."""
    from flows.webhook import AUTOMATION_NAME, install_webhook

    automation_id = install_webhook(url, allow_private_urls=allow_private_urls)
    Console().print(f"automation {AUTOMATION_NAME!r} ({automation_id}) calls the webhook block 'docbatch-batch-failures'")


REVIEW_LINES = 20  # documents needing review listed under the summary line


def print_summary(report: BatchReport, console: Console) -> None:
    from rich.markup import escape

    from blocks.invoice_schema import headline

    table = Table(title=f"{report.name} — {report.status}", title_justify="left")
    for column, justify in (("#", "right"), ("file", "left"), ("status", "left"), ("pages", "right"), ("fields / error", "left")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    colours = {"succeeded": "green", "failed": "red", "skipped": "yellow"}
    for result in report.results:
        if result.status == "succeeded":
            values = {k: v for k, v in headline(result.fields).items() if v not in (None, "", 0)}
            detail = ", ".join(f"{k}={v}" for k, v in values.items())[:120]
            if result.fields_source:
                detail = f"({result.fields_source}) {detail}"
        else:
            detail = f"{result.error_kind.value if result.error_kind else ''}: {result.error}"
        table.add_row(
            str(result.ref.index), result.ref.name,
            f"[{colours[result.status]}]{result.status}[/]" + (" [yellow]needs review[/]" if result.review == "needs_review" else ""),
            "" if result.pages is None else str(result.pages), escape(detail),
        )
    if report.results_omitted:
        table.add_row("", f"[yellow]{report.results_omitted:,} results: too many to hold here, all in report.json[/]", "", "", "")
    console.print(table)
    totals = report.totals
    rate = f"{report.success_rate:.1f} %" if report.success_rate is not None else "n/a"
    console.print(
        f"{totals.total} documents: {totals.succeeded} succeeded ({totals.needs_review} need review), "
        f"{totals.failed} failed, {totals.skipped} skipped "
        f"(success rate {rate}) in {report.duration_s:.1f} s — {report.message}"
    )
    if totals.needs_review:
        console.print("[yellow]Need review:[/]")
        for note in report.needs_review[:REVIEW_LINES]:
            console.print(f"  {escape(note.file)}: {escape(' '.join(note.reasons))}", overflow="fold")
        if totals.needs_review > REVIEW_LINES:
            console.print(f"  …and {totals.needs_review - REVIEW_LINES} more (review and review_reasons in the exports)")
    if report.output_dir:
        console.print(f"Exports: {report.output_dir}")
    if report.database is not None:
        print_database(report.database, console)


def print_database(outcome: DatabaseOutcome, console: Console) -> None:
    from rich.markup import escape

    if outcome.error:
        console.print(f"[red]Database {escape(outcome.url)} refused the rows:[/] {escape(outcome.error)} "
                      "(the file exports are written; `docbatch export-db` loads them later)")
    else:
        console.print(f"Database: {outcome.documents} document row(s), {outcome.line_items} line item row(s) upserted into {escape(outcome.url)}")


@app.command("export-db")
def export_db(
    report: Annotated[str, typer.Argument(help="The finished batch: its report.json (path or s3:// URI), its folder, or its flow run id.")],
    database: Annotated[str, typer.Option("--database", help="SQLAlchemy URL ('sqlite:///results.db', 'postgresql+psycopg://user:password@host/db') or a saved 'sqlalchemy-connector/NAME' block.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print what was loaded as JSON on stdout.")] = False,
) -> None:
    """Load a finished batch's results into an SQL database (upserted: loading twice adds no rows).

    For a batch whose database refused while it ran, or one run without a database.
    Exit codes: 0 loaded; 1 the database refused; 2 bad database setting; 3 no such report.
    """
    err = Console(stderr=True, soft_wrap=True)
    from flows.reports import load_report
    from tasks.database import load_report as load_into, resolve_target

    try:
        target = resolve_target(database, allow_password=True)  # given here, never stored: the password may be in it
    except BatchRefused as exc:
        err.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(EXIT_BAD_PARAMETERS) from None
    try:
        finished = load_report(report)
    except SourceUnavailable as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(unavailable_exit_code(exc)) from None
    batch_id = (finished.output_dir or finished.name).rstrip("/").rsplit("/", 1)[-1]
    outcome = load_into(finished, target, batch_id, finished.extraction_key or finished.batch_key or "")
    if as_json:
        sys.stdout.write(outcome.model_dump_json(indent=2) + "\n")
    else:
        print_database(outcome, Console(soft_wrap=True))
    raise typer.Exit(EXIT_BATCH_FAILED if outcome.error else EXIT_OK)


def main() -> None:
    from flows.lifeline import hold

    hold()  # first: what this process starts (Prefect's temporary server, workers) ends with it, even on kill -9
    app()


if __name__ == "__main__":
    main()
