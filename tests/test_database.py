"""The SQL destination: a real PostgreSQL (initdb in a temporary folder) and SQLite, driven by
the CLI against a real Prefect API. Rows equal the report; running, resuming and retrying never
duplicate a row; a database that refuses keeps the file exports and says so."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tasks.database import prepare
from tests.conftest import ROOT
from tests.postgres_server import PASSWORD, USER, PostgresServer

CLI = [sys.executable, "-c", "import tests.counting; from flows.cli import main; main()"]
EXAMPLES = ROOT / "examples" / "documents"



@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def inputs(folder: Path) -> list[str]:
    """Three e-invoices (with line items), a text invoice and a zero-byte PDF that fails."""
    folder.mkdir(parents=True)
    for path in sorted((EXAMPLES / "e-invoices").iterdir()):
        shutil.copy(path, folder / path.name)
    shutil.copy(EXAMPLES / "invoices" / "Orlen.txt", folder / "Orlen.txt")
    (folder / "empty.pdf").write_bytes(b"")
    return sorted(p.name for p in folder.iterdir())


def cli(env: dict[str, str], *args: str, expect: int = 0, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    return done


def run(env: dict[str, str], *args: str) -> dict[str, Any]:
    return json.loads(cli(env, "run", *args, "--json").stdout)


def rows(url: str, query: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def folder_of(report: dict[str, Any]) -> str:
    return report["output_dir"].rstrip("/").rsplit("/", 1)[-1]


def assert_rows_equal_report(url: str, report: dict[str, Any]) -> None:
    """Every result of the report has its row, with its status, error and values, and its line items."""
    stored = {row["file"]: row for row in rows(url, "SELECT * FROM documents")}
    for result in report["results"]:
        row = stored[result["ref"]["name"]]
        fields = result["fields"]
        assert (row["status"], row["error_kind"], row["error"]) == (result["status"], result["error_kind"], result["error"])
        assert row["document_key"] == result["ref"]["uri"] and row["config_key"] == report["extraction_key"]
        if result["status"] == "succeeded":
            stored_fields = row["fields"] if isinstance(row["fields"], dict) else json.loads(row["fields"])
            assert stored_fields == fields
            assert row["invoice_number"] == fields.get("invoice_number")
            grand = (fields.get("totals") or {}).get("grand_total", fields.get("amount"))
            assert row["grand_total"] == pytest.approx(grand)
            assert str(row["issue_date"]) == (fields.get("issue_date") or fields.get("date"))
    expected_items = sum(len(r["fields"].get("line_items") or []) for r in report["results"])
    assert expected_items > 0
    assert rows(url, "SELECT count(*) AS n FROM line_items")[0]["n"] == expected_items


# -- SQLite: the embedded default -------------------------------------------------------------


def test_sqlite_rows_equal_the_report_and_running_again_adds_no_row(cli_env: dict[str, str], tmp_path: Path) -> None:
    names = inputs(tmp_path / "in")
    url = f"sqlite:///{tmp_path / 'db' / 'results.db'}"  # its folder does not exist yet: SQLite makes the file, the sink the folder
    args = [str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--database", url, "--format", "csv"]
    first = run(cli_env, *args, "--name", "first")
    assert first["database"] == {"url": url, "status": "written", "documents": len(names), "line_items": first["database"]["line_items"],
                                 "error": None, "layout_version": 1}
    assert first["totals"]["failed"] == 1 and first["database"]["line_items"] > 0
    assert_rows_equal_report(url, first)

    second = run(cli_env, *args, "--name", "second")
    assert second["database"]["status"] == "written"
    assert rows(url, "SELECT count(*) AS n FROM documents")[0]["n"] == len(names)  # upserted, not added
    assert_rows_equal_report(url, second)
    assert {row["batch_id"] for row in rows(url, "SELECT batch_id FROM documents")} == {folder_of(second)}
    batches = {row["batch_id"]: row for row in rows(url, "SELECT * FROM batches")}
    assert set(batches) == {folder_of(first), folder_of(second)}
    assert (batches[folder_of(second)]["documents"], batches[folder_of(second)]["failed"]) == (len(names), 1)
    assert rows(url, "SELECT version FROM docbatch_layout") == [{"version": 1}]

    # Forgetting the first batch removes its own row only: its documents now belong to the second.
    done = cli(cli_env, "delete", first["flow_run_id"], "--yes", "--database", url)
    assert "deleted 1 database row(s)" in done.stdout
    assert set(b["batch_id"] for b in rows(url, "SELECT batch_id FROM batches")) == {folder_of(second)}
    assert rows(url, "SELECT count(*) AS n FROM documents")[0]["n"] == len(names)
    done = cli(cli_env, "delete", second["flow_run_id"], "--yes")  # the database the batch wrote to, by default
    assert f"deleted {1 + len(names) + second['database']['line_items']} database row(s)" in done.stdout
    assert rows(url, "SELECT count(*) AS n FROM documents")[0]["n"] == 0
    assert rows(url, "SELECT count(*) AS n FROM line_items")[0]["n"] == 0


def test_export_db_loads_a_finished_batch_later_and_twice_adds_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    names = inputs(tmp_path / "in")
    report = run(cli_env, str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--format", "jsonl")
    assert report["database"] is None
    url = f"sqlite:///{tmp_path / 'later.db'}"
    for _ in range(2):
        loaded = json.loads(cli(cli_env, "export-db", str(Path(report["output_dir"]) / "report.json"), "--database", url, "--json").stdout)
        assert (loaded["status"], loaded["documents"]) == ("written", len(names))
    assert rows(url, "SELECT count(*) AS n FROM documents")[0]["n"] == len(names)
    assert_rows_equal_report(url, report)
    assert [row["batch_id"] for row in rows(url, "SELECT batch_id FROM batches")] == [folder_of(report)]


def test_a_url_carrying_a_password_is_refused_before_any_work(cli_env: dict[str, str], tmp_path: Path) -> None:
    inputs(tmp_path / "in")
    done = cli(cli_env, "run", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
               "--database", "postgresql+psycopg://someone:hunter2-secret@127.0.0.1:1/db", expect=2)
    assert "refused" in done.stderr and "password" in done.stderr and "sqlalchemy-connector" in done.stderr
    assert "hunter2-secret" not in done.stderr + done.stdout
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- PostgreSQL -------------------------------------------------------------------------------


def pg_env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "PGPASSWORD": PASSWORD}  # libpq's own: the URL (a flow parameter) carries none


def test_postgresql_rows_equal_the_report_and_a_retried_document_replaces_its_row(
    cli_env: dict[str, str], pg: PostgresServer, tmp_path: Path
) -> None:
    env = pg_env(cli_env)
    url = pg.url(pg.new_database())
    names = inputs(tmp_path / "in")
    (tmp_path / "in" / "later.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf\n")  # fails now, is fixed below
    first = run(env, str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--database", url, "--format", "csv")
    assert first["database"]["status"] == "written" and first["totals"]["failed"] == 2
    check = pg.url(url.rsplit("/", 1)[1], password=True)
    assert_rows_equal_report(check, first)
    assert rows(check, "SELECT pg_typeof(fields)::text AS t FROM documents LIMIT 1") == [{"t": "jsonb"}]
    assert rows(check, "SELECT status FROM documents WHERE file = 'later.pdf'") == [{"status": "failed"}]

    # The file is fixed; retry-failed extracts it again and its row is replaced, nothing added.
    shutil.copy(EXAMPLES / "e-invoices" / "EN16931_Einfach.pdf", tmp_path / "in" / "later.pdf")
    retried = json.loads(cli(env, "retry", str(Path(first["output_dir"]) / "report.json"), "--json").stdout)
    assert retried["database"]["status"] == "written"
    assert rows(check, "SELECT count(*) AS n FROM documents")[0]["n"] == len(names) + 1
    later = rows(check, "SELECT status, invoice_number, batch_id FROM documents WHERE file = 'later.pdf'")
    assert later == [{"status": "succeeded", "invoice_number": "471102", "batch_id": folder_of(retried)}]
    assert_rows_equal_report(check, retried)


def test_postgresql_a_resumed_batch_adds_no_row(cli_env: dict[str, str], pg: PostgresServer, tmp_path: Path) -> None:
    from tests.counting import CountingExtractor

    env = pg_env(cli_env)
    database = pg.new_database()
    url, check = pg.url(database), pg.url(database, password=True)
    (tmp_path / "in").mkdir()
    names = [f"inv-{n:03d}.txt" for n in range(60)]
    for name in names:
        (tmp_path / "in" / name).write_text(f"invoice {name}\n")
    CountingExtractor(calls_file=str(tmp_path / "calls.txt"), latency_ms=80).save("db-resume", overwrite=True)
    args = ["run", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--extractor", "test-counting-extractor/db-resume",
            "--concurrency", "2", "--database", url, "--name", "db resume"]
    child = subprocess.Popen([*CLI, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, written = time.monotonic() + 180, 0
    while time.monotonic() < deadline and child.poll() is None:
        try:
            written = rows(check, "SELECT count(*) AS n FROM documents")[0]["n"]
        except Exception:  # noqa: BLE001 - the tables are not there yet
            written = 0
        if written >= 5:  # rows land while the batch runs (each second)
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    assert child.wait(timeout=30) == -signal.SIGKILL, "the batch ended before it could be killed"
    assert 5 <= written < len(names)

    done = cli(env, *args, "--resume", "--json")
    report = json.loads(done.stdout)
    assert report["totals"]["resumed"] > 0 and report["database"]["documents"] == len(names)
    assert rows(check, "SELECT count(*) AS n FROM documents")[0]["n"] == len(names)
    assert sorted(row["file"] for row in rows(check, "SELECT file FROM documents")) == names
    assert {row["batch_id"] for row in rows(check, "SELECT batch_id FROM documents")} == {folder_of(report)}


def test_a_database_going_down_mid_batch_keeps_the_file_exports_and_says_so(cli_env: dict[str, str], tmp_path: Path) -> None:
    from tests.counting import CountingExtractor

    (tmp_path / "in").mkdir()
    names = [f"doc-{n:02d}.txt" for n in range(20)]
    for name in names:
        (tmp_path / "in" / name).write_text(f"invoice {name}\n")
    calls = tmp_path / "calls.txt"
    CountingExtractor(calls_file=str(calls), latency_ms=300).save("db-down", overwrite=True)
    with PostgresServer() as server:  # its own server: this test stops it
        database = server.new_database()
        env = pg_env(cli_env)
        args = ["run", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--extractor", "test-counting-extractor/db-down",
                "--concurrency", "1", "--database", server.url(database), "--format", "csv", "--json"]
        child = subprocess.Popen([*CLI, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (calls.exists() and len(calls.read_text().splitlines()) >= 3):
            time.sleep(0.05)
        server.stop()  # mid-batch: connected, tables created, some rows maybe in
        out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["status"] == "completed" and report["totals"]["succeeded"] == len(names)
    assert report["database"]["status"] == "failed" and report["database"]["error"]
    assert "OperationalError" in report["database"]["error"] or "connection" in report["database"]["error"].lower()
    csv = (Path(report["output_dir"]) / "documents.csv").read_text().splitlines()
    assert len(csv) == len(names) + 1  # every document in the file exports
    assert "The database refused" in err


def test_a_saved_connector_block_works_and_a_wrong_password_is_reported_without_it(
    cli_env: dict[str, str], pg: PostgresServer, tmp_path: Path
) -> None:
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector

    database = pg.new_database()
    block = f"results-{uuid.uuid4().hex[:6]}"
    for name, password in ((block, PASSWORD), (f"{block}-wrong", "wrong-pw-7a1c")):
        SqlAlchemyConnector(connection_info=ConnectionComponents(
            driver="postgresql+psycopg", username=USER, password=password, host="127.0.0.1", port=pg.port, database=database,
        )).save(name, overwrite=True)
    names = inputs(tmp_path / "in")
    good = run(cli_env, str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--database", f"sqlalchemy-connector/{block}", "--format", "csv")
    assert (good["database"]["status"], good["database"]["documents"]) == ("written", len(names))
    assert PASSWORD not in json.dumps(good) and "***" in good["database"]["url"]
    assert_rows_equal_report(pg.url(database, password=True), good)

    done = cli(cli_env, "run", str(tmp_path / "in"), "--output", str(tmp_path / "out2"), "--database", f"sqlalchemy-connector/{block}-wrong",
               "--format", "csv", "--json")
    report = json.loads(done.stdout)
    assert report["database"]["status"] == "failed" and "password authentication failed" in report["database"]["error"]
    assert report["totals"]["succeeded"] == len(names) - 1  # the batch went on
    written = "".join(p.read_text(errors="replace") for p in Path(report["output_dir"]).iterdir() if p.is_file())
    assert "wrong-pw-7a1c" not in done.stdout + done.stderr + written


def test_a_column_type_clash_is_reported_and_the_batch_goes_on(cli_env: dict[str, str], pg: PostgresServer, tmp_path: Path) -> None:
    database = pg.new_database()
    check = pg.url(database, password=True)
    engine = create_engine(check)
    prepare(engine)  # docbatch's tables, then someone makes grand_total a date
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE documents ALTER COLUMN grand_total TYPE date USING NULL"))
    engine.dispose()
    names = inputs(tmp_path / "in")
    report = run(pg_env(cli_env), str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--database", pg.url(database), "--format", "csv")
    assert report["database"]["status"] == "failed" and report["database"]["documents"] == 0
    assert "grand_total" in report["database"]["error"] and "type date" in report["database"]["error"]
    assert len((Path(report["output_dir"]) / "documents.csv").read_text().splitlines()) == len(names) + 1


# -- the sink on its own ------------------------------------------------------------------------


def synthetic(count: int) -> list[Any]:
    from blocks.models import DocumentRef, DocumentResult

    return [
        DocumentResult(
            ref=DocumentRef(index=n, uri=f"/in/d{n}.txt", name=f"d{n}.txt", size=1, fingerprint="1:1"), status="succeeded",
            fields={"invoice_number": f"N{n}", "totals": {"grand_total": "12.5" if n % 2 else "not a number"},
                    "issue_date": "2026-02-30" if n == 3 else "2026-01-31", "line_items": [{"name": "x", "quantity": 2}]},
        )
        for n in range(count)
    ]


def test_the_sink_writes_in_chunks_and_types_what_it_can(tmp_path: Path) -> None:
    from blocks.models import BatchReport, BatchTotals
    from tasks import database

    url = f"sqlite:///{tmp_path / 'sink.db'}"
    results = synthetic(2500)
    sink = database.DatabaseSink(database.resolve_target(url), "batch-1", "config-1")
    for start in range(0, len(results), 300):
        sink.add(results[start:start + 300])
    now = datetime.now(timezone.utc)
    outcome = sink.finish(BatchReport(name="b", source="s", status="completed", message="", totals=BatchTotals(total=2500, succeeded=2500),
                                      progress=100, started=now, finished=now, duration_s=0, extractor="e"))
    assert (outcome.status, outcome.documents, outcome.line_items) == ("written", 2500, 2500)
    typed = {row["file"]: row for row in rows(url, "SELECT file, grand_total, issue_date FROM documents WHERE file IN ('d1.txt', 'd2.txt', 'd3.txt')")}
    assert typed["d1.txt"]["grand_total"] == 12.5 and typed["d2.txt"]["grand_total"] is None  # not a number: NULL, kept in fields
    assert typed["d3.txt"]["issue_date"] is None and typed["d1.txt"]["issue_date"] == "2026-01-31"  # 30 February is no date


def test_a_refused_sink_keeps_nothing_and_says_why(tmp_path: Path) -> None:
    from tasks import database

    (tmp_path / "a-file").write_text("not a folder")
    sink = database.DatabaseSink(database.resolve_target(f"sqlite:///{tmp_path / 'a-file' / 'x.db'}"), "batch-1", "config-1")
    deadline = time.monotonic() + 30
    while sink.error is None and time.monotonic() < deadline:  # the connection is tried in the background
        time.sleep(0.01)
    assert sink.error is not None and "FileExistsError" in sink.error  # its folder cannot be made: a file is in the way
    sink.add(synthetic(10))
    assert sink._buffer == []  # noqa: SLF001 - once refused, results are not kept for it
    now = datetime.now(timezone.utc)
    from blocks.models import BatchReport, BatchTotals

    outcome = sink.finish(BatchReport(name="b", source="s", status="completed", message="", totals=BatchTotals(total=10, succeeded=10),
                                      progress=100, started=now, finished=now, duration_s=0, extractor="e"))
    assert (outcome.status, outcome.documents, outcome.error) == ("failed", 0, sink.error)


def test_nul_characters_never_stop_postgresql(pg: PostgresServer) -> None:
    """PostgreSQL's text and JSONB refuse NUL: a hostile file's value loses it instead of failing the chunk."""
    from tasks import database

    engine = create_engine(pg.url(pg.new_database(), password=True))
    database.prepare(engine)
    hostile = synthetic(2)
    hostile[1] = hostile[1].model_copy(update={"fields": {"invoice_number": "A\x00B", "note": {"text": "x\x00y"}, "line_items": [{"name": "n\x00"}]}})
    assert database.write_chunk(engine, hostile, "batch-1", "config-1") == (2, 2)
    with engine.connect() as connection:
        row = connection.execute(text("SELECT invoice_number, fields FROM documents WHERE file = 'd1.txt'")).one()
        item = connection.execute(text("SELECT name FROM line_items WHERE document_key = '/in/d1.txt'")).scalar_one()
    engine.dispose()
    assert (row.invoice_number, row.fields["note"]["text"], item) == ("AB", "xy", "n")
