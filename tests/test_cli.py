"""`docbatch run` as a user runs it: a real subprocess against the session's Prefect API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT, copy_into, corpus

DOCBATCH = [sys.executable, "-m", "flows.cli"]


def docbatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DOCBATCH, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_examples_partially_failed_exit_zero_and_summary(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = docbatch(cli_env, "run", str(EXAMPLES), "--output", str(tmp_path), "--name", "cli examples")
    assert done.returncode == 0, done.stderr
    assert "cli examples — partially_failed" in done.stdout
    assert "pdfminer_aes-256-r6.pdf" in done.stdout and "encrypted" in done.stdout
    assert "Traceback" not in done.stderr and "| ERROR" not in done.stderr
    assert len(list(tmp_path.glob("*/report.json"))) == 1


def test_json_output_is_the_report_and_nothing_else(cli_env: dict[str, str], tmp_path: Path) -> None:
    names = copy_into(tmp_path / "in", corpus("invoice2data", "compare", "coolblue1", "coolblue1.pdf"))
    done = docbatch(cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "-f", "csv", "-c", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # the whole of stdout is one JSON document
    assert report["status"] == "completed" and [r["ref"]["name"] for r in report["results"]] == names
    assert set(report["exports"]) == {"documents.csv", "line_items.csv", "report.json"}  # its table gives line items
    assert "Beginning flow run" in done.stderr  # Prefect's logs went to stderr


def test_failed_batch_exit_code(cli_env: dict[str, str], tmp_path: Path) -> None:
    copy_into(tmp_path / "in", corpus("nasty-inputs", "broken", "pdfplumber_empty-zero-bytes.pdf"))
    done = docbatch(cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr
    assert "failed" in done.stdout and "empty" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "rtf"], "formats"),  # pdf is a format since the readable reports
        (["--concurrency", "0"], "between 1 and 64"),
        (["--concurrency", "65"], "between 1 and 64"),
        (["--max-documents", "1"], "more than 1 documents"),
        (["--no-such-option"], "No such option"),
    ],
)
def test_bad_parameters_exit_2_with_one_clear_line(cli_env: dict[str, str], tmp_path: Path, args: list[str], message: str) -> None:
    copy_into(tmp_path / "in", corpus("invoice2data", "custom", "basic", "basic.txt"), corpus("invoice2data", "compare", "Orlen", "Orlen.txt"))
    done = docbatch(cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_missing_source_exit_3(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = docbatch(cli_env, "run", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out"))
    assert done.returncode == 3
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_help_explains_every_option(cli_env: dict[str, str]) -> None:
    done = docbatch(cli_env, "run", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for option in ("--output", "--format", "--concurrency", "--name", "--include", "--exclude", "--max-documents", "--json", "--recursive", "--extractor", "--keep-text"):
        assert option in text
    assert "Exit codes" in text and "parquet" in text


def test_output_that_cannot_be_a_folder_is_refused_before_any_work(cli_env: dict[str, str], tmp_path: Path) -> None:
    copy_into(tmp_path / "in", corpus("invoice2data", "custom", "basic", "basic.txt"))
    (tmp_path / "taken").write_text("a file where the output folder should go")
    done = docbatch(cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "taken" / "out"))
    assert done.returncode == 3, done.stderr
    assert "cannot be created" in done.stderr and "is a file" in done.stderr
    assert "Beginning flow run" not in done.stderr and "Traceback" not in done.stderr
