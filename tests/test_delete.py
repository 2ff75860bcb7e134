"""`docbatch delete`: a batch's folder, flow run and manifest entries go; nothing of another batch does."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from blocks.models import BatchReport
from flows.params import ExportSettings, ExtractionSettings
from tests.conftest import ROOT, corpus
from tests.s3_server import REGION, s3_endpoint  # noqa: F401 - s3_endpoint is a fixture

DOCBATCH = [sys.executable, "-m", "flows.cli"]


def docbatch(env: dict[str, str], *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DOCBATCH, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, input=answer)


def flow_run_exists(flow_run_id: str) -> bool:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_flow_run(uuid.UUID(flow_run_id))
        except ObjectNotFound:
            return False
    return True


def small_batch(source: Path, output: str, name: str) -> BatchReport:
    from flows.batch import extract_batch

    if not source.exists():
        source.mkdir(parents=True)
        (source / "basic.txt").write_bytes(corpus("invoice2data", "custom", "basic", "basic.txt").read_bytes())
        (source / "orlen.txt").write_bytes(corpus("invoice2data", "compare", "Orlen", "Orlen.txt").read_bytes())
    report = extract_batch(source=str(source), batch_name=name, export=ExportSettings(output_dir=output, formats=["jsonl"]))
    assert report.flow_run_id and report.output_dir
    return report


def test_delete_by_flow_run_id_and_by_folder_removes_only_that_batch(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = small_batch(tmp_path / "in", str(out), "delete me")
    second = small_batch(tmp_path / "in", str(out), "keep me")

    done = docbatch(cli_env, "delete", first.flow_run_id or "", "--yes")
    assert done.returncode == 0, done.stderr
    assert first.output_dir in done.stdout and first.flow_run_id in done.stdout
    assert "2 document(s)" in done.stdout and "removed 1 flow run(s)" in done.stdout
    assert not Path(first.output_dir or "").exists() and not flow_run_exists(first.flow_run_id or "")
    assert Path(second.output_dir or "", "report.json").is_file() and flow_run_exists(second.flow_run_id or "")

    folder = Path(second.output_dir or "").name  # as a folder name under --output
    done = docbatch(cli_env, "delete", folder, "--output", str(out), "--yes")
    assert done.returncode == 0, done.stderr
    assert not Path(second.output_dir or "").exists() and not flow_run_exists(second.flow_run_id or "")
    assert out.is_dir()  # the output folder itself stays


def test_answering_no_removes_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    report = small_batch(tmp_path / "in", str(tmp_path / "out"), "ask first")
    done = docbatch(cli_env, "delete", report.flow_run_id or "", answer="n\n")
    assert done.returncode == 1
    assert "Delete all of this?" in done.stdout and "nothing removed" in done.stderr
    assert Path(report.output_dir or "", "report.json").is_file() and flow_run_exists(report.flow_run_id or "")


@pytest.mark.parametrize("kind", ["unknown uuid", "unknown folder", "not a batch folder", "hidden folder"])
def test_an_unknown_batch_is_one_line_and_nothing_is_removed(cli_env: dict[str, str], tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "keep.txt").write_text("not a batch")
    (out / ".manifests").mkdir()
    name = {"unknown uuid": str(uuid.uuid4()), "unknown folder": "20990101-000000-nothing-12345678",
            "not a batch folder": "notes", "hidden folder": ".manifests"}[kind]
    done = docbatch(cli_env, "delete", name, "--output", str(out), "--yes")
    assert done.returncode == 2, done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert (out / "notes" / "keep.txt").is_file() and (out / ".manifests").is_dir()


def test_delete_on_s3(cli_env: dict[str, str], s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3: Any = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup")
    bucket = f"delete-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    aws = {"AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_SECRET_ACCESS_KEY": "x", "AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": REGION}
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    first = small_batch(tmp_path / "in", f"s3://{bucket}/out", "s3 delete me")
    second = small_batch(tmp_path / "in", f"s3://{bucket}/out", "s3 keep me")

    def keys(report: BatchReport) -> list[str]:
        prefix = (report.output_dir or "").removeprefix(f"s3://{bucket}/") + "/"
        return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", ())]

    assert keys(first) and keys(second)
    done = docbatch({**cli_env, **aws}, "delete", first.flow_run_id or "", "--yes")
    assert done.returncode == 0, done.stderr
    assert first.output_dir in done.stdout
    assert keys(first) == [] and not flow_run_exists(first.flow_run_id or "")
    assert f"{(second.output_dir or '').removeprefix(f's3://{bucket}/')}/report.json" in keys(second)
    assert flow_run_exists(second.flow_run_id or "")


def test_deleting_an_ingestion_batch_makes_the_next_run_extract_its_files_again(cli_env: dict[str, str], tmp_path: Path) -> None:
    from flows.ingest import ingest_inbox
    from tests.counting import CountingExtractor

    log = tmp_path / "calls.txt"
    block = f"delete-{uuid.uuid4().hex[:8]}"
    CountingExtractor(calls_file=str(log), latency_ms=5).save(block)

    def calls() -> list[str]:
        return sorted(line.split(" ", 1)[1] for line in log.read_text().splitlines()) if log.exists() else []

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for n in range(2):
        (inbox / f"inv-{n}.txt").write_text(f"invoice INV-{n}\n")
    settings = dict(
        source=str(inbox), extraction=ExtractionSettings(extractor=f"test-counting-extractor/{block}"),
        export=ExportSettings(output_dir=str(out), formats=["jsonl"]), settle_s=0,
    )
    first = ingest_inbox(**settings)
    assert first.status == "completed" and first.batch_flow_run_id
    (inbox / "inv-2.txt").write_text("invoice INV-2\n")
    second = ingest_inbox(**settings)  # another batch, whose entry must survive the delete
    assert second.new == ["inv-2.txt"] and second.batch_flow_run_id
    assert calls() == ["inv-0.txt", "inv-1.txt", "inv-2.txt"]

    done = docbatch(cli_env, "delete", first.batch_flow_run_id, "--yes")
    assert done.returncode == 0, done.stderr
    assert "forgot 2 document(s) in the ingestion manifest" in done.stdout
    assert not flow_run_exists(first.batch_flow_run_id) and flow_run_exists(second.batch_flow_run_id)

    third = ingest_inbox(**settings)
    assert sorted(third.new) == ["inv-0.txt", "inv-1.txt"] and third.unchanged == 1, third
    assert calls() == ["inv-0.txt", "inv-0.txt", "inv-1.txt", "inv-1.txt", "inv-2.txt"]
    fourth = ingest_inbox(**settings)
    assert fourth.status == "nothing_new" and fourth.unchanged == 3


def test_database_rows_of_that_batch_only(cli_env: dict[str, str], tmp_path: Path) -> None:
    from flows.batch import extract_batch
    from tasks.database import count_rows, resolve_target

    url = f"sqlite:///{tmp_path / 'results.db'}"
    reports = []
    for name in ("db delete me", "db keep me"):
        source = tmp_path / name.replace(" ", "-")
        source.mkdir()
        (source / "basic.txt").write_bytes(corpus("invoice2data", "custom", "basic", "basic.txt").read_bytes())
        export = ExportSettings(output_dir=str(tmp_path / "out"), formats=["jsonl"], database=url)
        reports.append(extract_batch(source=str(source), batch_name=name, export=export))
    first, second = (Path(r.output_dir or "").name for r in reports)
    engine = resolve_target(url).engine()
    try:
        assert count_rows(engine, first)["documents"] == 1 and count_rows(engine, second)["documents"] == 1
        done = docbatch(cli_env, "delete", reports[0].flow_run_id or "", "--yes", "--database", url)
        assert done.returncode == 0, done.stderr
        assert "deleted 2 database row(s)" in done.stdout  # its batches row and its documents row
        assert count_rows(engine, first) == {"batches": 0, "documents": 0, "line_items": 0}
        assert count_rows(engine, second)["batches"] == 1 and count_rows(engine, second)["documents"] == 1
    finally:
        engine.dispose()
