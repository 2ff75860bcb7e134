"""`--per-document`: one JSON per document under documents/, mirroring the source tree, locally and on S3."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from blocks.local import LocalFolder
from blocks.models import BatchReport, DocumentRef, DocumentResult
from flows.params import ExportSettings
from tasks.per_document import PerDocumentWriter, document_path
from tests.conftest import ROOT, corpus
from tests.s3_server import REGION, s3_endpoint  # noqa: F401 - s3_endpoint is a fixture

TREE = {
    "invoices/2024/orlen.txt": corpus("invoice2data", "compare", "Orlen", "Orlen.txt"),
    "invoices/basic.txt": corpus("invoice2data", "custom", "basic", "basic.txt"),
    "broken/empty.pdf": corpus("nasty-inputs", "broken", "pdfplumber_empty-zero-bytes.pdf"),
    "top.txt": corpus("invoice2data", "custom", "basic", "basic.txt"),
}


def nested_source(root: Path) -> Path:
    for name, source in TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(source.read_bytes())
    return root


def check_files(report: BatchReport, read: Any) -> None:
    """Every result has its file at the mirrored path, holding the same JSON as its report entry."""
    assert sorted(r.ref.name for r in report.results) == sorted(TREE)
    for result in report.results:
        text = read(f"documents/{result.ref.name}.json")
        written = DocumentResult.model_validate_json(text)
        assert written == result
        assert json.loads(text)["status"] == result.status
    failed = next(r for r in report.results if r.ref.name == "broken/empty.pdf")
    assert failed.status == "failed" and json.loads(read("documents/broken/empty.pdf.json"))["error"] == failed.error


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("invoices/2024/a.pdf", ["documents", "invoices", "2024", "a.pdf.json"]),
        ("a.pdf", ["documents", "a.pdf.json"]),
        ("/etc/passwd", ["documents", "etc", "passwd.json"]),
        ("../../x.pdf", ["documents", "%2E%2E", "%2E%2E", "x.pdf.json"]),
        ("a/./b/../c", ["documents", "a", "%2E", "b", "%2E%2E", "c.json"]),
        ("a//b", ["documents", "a", "b.json"]),
        ("", ["documents", "_.json"]),
    ],
)
def test_names_map_inside_the_documents_folder(name: str, parts: list[str]) -> None:
    assert document_path(name) == parts


def test_an_overlong_name_is_shortened_and_kept_apart(tmp_path: Path) -> None:
    a, b = "x" * 300 + "a.pdf", "x" * 300 + "b.pdf"
    pa, pb = document_path(a)[-1], document_path(b)[-1]
    assert pa != pb and len(pa.encode()) <= 210
    writer = PerDocumentWriter(LocalFolder(path=str(tmp_path)), "batch")
    refs = [DocumentRef(index=n, uri=f"file:///{x}", name=x, size=1, fingerprint="f") for n, x in enumerate((a, b, "../../escape.txt"))]
    results = [DocumentResult(ref=ref, status="succeeded") for ref in refs]
    writer.add(results, [r.model_dump_json() for r in results])
    writer.finish()
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 3 and all(p.startswith("batch/documents/") for p in written)
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_a_resume_removes_the_temporaries_a_kill_left_in_documents_subfolders(tmp_path: Path) -> None:
    """A kill -9 mid-write leaves `.<name>.<random>.tmp` beside the file it was writing, at any
    depth of documents/; resuming sweeps them all and keeps every finished file."""
    kept = [tmp_path / "batch" / "report.json", tmp_path / "batch" / "documents" / "invoices" / "2024" / "a.pdf.json"]
    stale = [tmp_path / "batch" / ".results.csv.x1.tmp", tmp_path / "batch" / "documents" / "invoices" / "2024" / ".b.pdf.json.x2.tmp"]
    for path in kept + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    LocalFolder(path=str(tmp_path)).remove_temporaries("batch")
    assert [p.exists() for p in kept + stale] == [True, True, False, False]


def test_local_batch_mirrors_the_source_tree(prefect_api: str, tmp_path: Path) -> None:
    from flows.batch import extract_batch

    out = tmp_path / "out"
    report = extract_batch(source=str(nested_source(tmp_path / "in")), export=ExportSettings(output_dir=str(out), formats=["jsonl"], per_document=True))
    assert report.status == "partially_failed", report.message
    folder = Path(report.output_dir or "")
    check_files(report, lambda name: (folder / name).read_text(encoding="utf-8"))
    lines = (folder / "documents.jsonl").read_text(encoding="utf-8").splitlines()
    for line in lines:  # byte for byte the document's line in documents.jsonl
        name = json.loads(line)["ref"]["name"]
        assert (folder / "documents" / f"{name}.json").read_text(encoding="utf-8") == line
    assert len([p for p in (folder / "documents").rglob("*") if p.is_file()]) == len(TREE)  # no temporaries


def test_not_written_without_the_flag(prefect_api: str, tmp_path: Path) -> None:
    from flows.batch import extract_batch

    report = extract_batch(source=str(nested_source(tmp_path / "in")), export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["jsonl"]))
    assert report.output_dir and not (Path(report.output_dir) / "documents").exists()


def test_retry_failed_leaves_one_file_per_document(prefect_api: str, tmp_path: Path) -> None:
    from flows.batch import extract_batch
    from flows.retry import retry_failed

    source = nested_source(tmp_path / "in")
    first = extract_batch(source=str(source), export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["jsonl"], per_document=True))
    (source / "broken" / "empty.pdf").write_bytes(corpus("invoice2data", "compare", "coolblue1", "coolblue1.pdf").read_bytes())
    second = retry_failed(batch=first.flow_run_id or "")
    assert second.status == "completed", second.message
    folder = Path(second.output_dir or "")
    files = sorted(p.relative_to(folder / "documents").as_posix() for p in (folder / "documents").rglob("*") if p.is_file())
    assert files == sorted(f"{name}.json" for name in TREE)
    assert json.loads((folder / "documents" / "broken" / "empty.pdf.json").read_text())["status"] == "succeeded"


def test_a_resumed_batch_leaves_one_file_per_document(prefect_api: str, tmp_path: Path) -> None:
    """The interrupted run's checkpoint holds two results and left their files: resuming writes
    every document's file once more (overwriting), and nothing else."""
    from flows.batch import extract_batch
    from tasks.journal import JournalHeader, SegmentWriter

    source, out = nested_source(tmp_path / "in"), tmp_path / "out"
    earlier = extract_batch(source=str(source), export=ExportSettings(output_dir=str(tmp_path / "earlier"), formats=["jsonl"]))
    folder = "20250101-000000-interrupted-local"
    header = JournalHeader(batch_key=earlier.batch_key or "", batch_name="interrupted", source=earlier.source, run="r0", share=0)
    segment = SegmentWriter.open(LocalFolder(path=str(out)), folder, header)
    for done in earlier.results[:2]:
        segment.record(done)
        stale = out / folder / "documents" / f"{done.ref.name}.json"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text("stale")
    segment.close()

    report = extract_batch(source=str(source), resume=True, export=ExportSettings(output_dir=str(out), formats=["jsonl"], per_document=True))
    assert Path(report.output_dir or "").name == folder and report.totals.resumed == 2, report.message
    documents = out / folder / "documents"
    assert sorted(p.relative_to(documents).as_posix() for p in documents.rglob("*") if p.is_file()) == sorted(f"{n}.json" for n in TREE)
    check_files(report, lambda name: (out / folder / name).read_text(encoding="utf-8"))


def test_cli_flag(cli_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    source = nested_source(tmp_path / "in")
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(source), "-o", str(tmp_path / "out"), "-f", "jsonl", "--per-document", "--json"],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = BatchReport.model_validate_json(done.stdout)
    assert report.parameters and report.parameters.export["per_document"] is True
    folder = Path(report.output_dir or "")
    check_files(report, lambda name: (folder / name).read_text(encoding="utf-8"))


def test_s3_batch_mirrors_the_source_tree(prefect_api: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.batch import extract_batch

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup")
    bucket = f"perdoc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for name, source in TREE.items():
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=source.read_bytes())
    for key, value in {"AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_SECRET_ACCESS_KEY": "x", "AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    report = extract_batch(source=f"s3://{bucket}/in", export=ExportSettings(output_dir=f"s3://{bucket}/out", formats=["jsonl"], per_document=True))
    assert report.status == "partially_failed", report.message
    folder_key = (report.output_dir or "").removeprefix(f"s3://{bucket}/")

    def read(name: str) -> str:
        return s3.get_object(Bucket=bucket, Key=f"{folder_key}/{name}")["Body"].read().decode("utf-8")

    check_files(report, read)
    listed = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=f"{folder_key}/documents/").get("Contents", ())]
    assert sorted(listed) == sorted(f"{folder_key}/documents/{name}.json" for name in TREE)
