"""Batches over a paid model API: a limit shared by concurrent batches, budgets, the result cache,
costs and the dry run, each against the scripted OpenAI-protocol server on 127.0.0.1 and the
session's real Prefect API (the shared limit is a Prefect global concurrency limit)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from blocks.openai_compatible import OpenAICompatibleExtractor
from tasks.result_cache import HIT_WARNING
from tests.openai_server import Script, openai_server
from tests.test_cli import docbatch

SCHEMA = {"type": "object", "properties": {"po_number": {"type": "string"}, "amount": {"type": ["number", "null"]}}, "required": ["po_number"]}


def _folder(path: Path, prefix: str, n: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        (path / f"{prefix}-{k}.txt").write_text(f"po_number: {prefix.upper()}-{k}\namount: {k}.5\n")
    return path


def _save(url: str, tmp_path: Path, **kw: object) -> tuple[str, Path]:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    name = f"b-{uuid.uuid4().hex[:8]}"
    OpenAICompatibleExtractor(base_url=url, model="fake-model", target_schema=str(schema), **kw).save(name)  # type: ignore[arg-type]
    return f"openai-compatible-extractor/{name}", schema


def _run(cli_env: dict[str, str], folder: Path, out: Path, block: str, *flags: str) -> dict:
    done = docbatch(cli_env, "run", str(folder), "-o", str(out), "--json", "--extractor", block, "-f", "json", *flags)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr and "| ERROR" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_two_concurrent_batches_share_the_blocks_request_limit(cli_env: dict[str, str], prefect_api: str, tmp_path: Path) -> None:
    # Each batch alone takes 12 × 1.0 s / 2 = 6 s: longer than the two CLI processes' start-up can
    # differ on a loaded 2-core machine (with 10 × 0.6 s, batch a once finished before b's first request).
    script = Script(delay_s=1.0)
    a, b = _folder(tmp_path / "a", "a", 12), _folder(tmp_path / "b", "b", 12)
    with openai_server(script) as url:
        block, _ = _save(url, tmp_path, max_concurrent_requests=2)
        command = [sys.executable, "-m", "flows.cli", "run"]
        batches = [
            subprocess.Popen([*command, str(folder), "-o", str(tmp_path / f"out-{folder.name}"), "--json", "-c", "4",
                              "--extractor", block, "-f", "json"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for folder in (a, b)
        ]
        outputs = [p.communicate(timeout=300) for p in batches]
    for process, (stdout, stderr) in zip(batches, outputs):
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr and "| ERROR" not in stderr, stderr
        assert json.loads(stdout)["totals"]["succeeded"] == 12
    names = [r["body"]["messages"][1]["content"].split("\n", 1)[0] for r in script.requests]
    assert len(names) == 24
    # the two batches sent at the same time (their requests interleave) ...
    firsts = {p: min(i for i, n in enumerate(names) if n.startswith(f"Document: {p}-")) for p in "ab"}
    lasts = {p: max(i for i, n in enumerate(names) if n.startswith(f"Document: {p}-")) for p in "ab"}
    assert firsts["a"] < lasts["b"] and firsts["b"] < lasts["a"], names
    # ... and together never had more than the block's 2 requests in flight (8 slots asked for)
    assert script.peak_in_flight == 2


def test_a_token_budget_stops_starting_documents(cli_env: dict[str, str], prefect_api: str, tmp_path: Path) -> None:
    script = Script()
    folder = _folder(tmp_path / "in", "p", 5)
    with openai_server(script) as url:
        block, _ = _save(url, tmp_path)
        report = _run(cli_env, folder, tmp_path / "out", block, "-c", "1", "--max-tokens-per-batch", "10")
    statuses = [r["status"] for r in report["results"]]
    assert statuses == ["succeeded"] + ["skipped"] * 4
    assert all("token budget of 10 was reached" in r["error"] for r in report["results"][1:])
    assert len(script.requests) == 1
    assert report["totals"]["tokens_in"] + report["totals"]["tokens_out"] >= 10


def test_costs_at_the_blocks_prices_and_a_cost_budget(cli_env: dict[str, str], prefect_api: str, tmp_path: Path) -> None:
    script = Script()
    folder = _folder(tmp_path / "in", "p", 3)
    with openai_server(script) as url:
        block, _ = _save(url, tmp_path, price_per_million_tokens_in=2.0, price_per_million_tokens_out=8.0)
        report = _run(cli_env, folder, tmp_path / "out", block, "-c", "1", "--no-cache")
        for result in report["results"]:
            assert result["cost"] == round((result["tokens_in"] * 2.0 + result["tokens_out"] * 8.0) / 1e6, 8)
        assert abs(report["totals"]["cost"] - sum(r["cost"] for r in report["results"])) < 1e-9
        one = report["results"][0]["cost"]
        capped = _run(cli_env, folder, tmp_path / "out2", block, "-c", "1", "--no-cache", "--max-cost-per-batch", str(one * 0.5))
    assert [r["status"] for r in capped["results"]] == ["succeeded", "skipped", "skipped"]
    assert "cost budget" in capped["results"][1]["error"]


def test_a_rerun_and_the_same_file_elsewhere_cost_no_tokens(cli_env: dict[str, str], prefect_api: str, tmp_path: Path) -> None:
    script = Script()
    folder = _folder(tmp_path / "in", "p", 3)
    copy = _folder(tmp_path / "elsewhere" / "deep", "p", 1)  # p-0.txt again, same bytes
    with openai_server(script) as url:
        block, schema = _save(url, tmp_path)
        first = _run(cli_env, folder, tmp_path / "out1", block)
        assert len(script.requests) == 3 and first["totals"]["tokens_in"] > 0
        second = _run(cli_env, folder, tmp_path / "out2", block)
        assert len(script.requests) == 3  # not one more request
        assert second["totals"]["tokens_in"] == second["totals"]["tokens_out"] == 0
        assert [r["fields"] for r in second["results"]] == [r["fields"] for r in first["results"]]
        assert all(HIT_WARNING in r["warnings"] for r in second["results"])
        elsewhere = _run(cli_env, tmp_path / "elsewhere", tmp_path / "out3", block)
        assert len(script.requests) == 3 and elsewhere["results"][0]["fields"]["po_number"] == "P-0"
        schema.write_text(json.dumps({**SCHEMA, "required": ["po_number", "amount"]}))  # a new configuration
        _run(cli_env, folder, tmp_path / "out4", block)
        assert len(script.requests) == 6
        _run(cli_env, folder, tmp_path / "out5", block, "--no-cache")
        assert len(script.requests) == 9


def test_a_dry_run_estimates_and_sends_nothing(cli_env: dict[str, str], prefect_api: str, tmp_path: Path) -> None:
    script = Script()
    folder = _folder(tmp_path / "in", "p", 2)
    (folder / "empty.txt").write_bytes(b"")
    with openai_server(script) as url:
        block, _ = _save(url, tmp_path, max_tokens=300, price_per_million_tokens_in=1.0, price_per_million_tokens_out=4.0)
        done = docbatch(cli_env, "run", str(folder), "-o", str(tmp_path / "out"), "--extractor", block, "--dry-run", "--json")
        table = docbatch(cli_env, "run", str(folder), "-o", str(tmp_path / "out"), "--extractor", block, "--dry-run")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert script.requests == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    by_file = {d["file"]: d for d in plan["documents"]}
    assert by_file["empty.txt"]["estimate"] is None and "empty" in by_file["empty.txt"]["error"]
    estimate = by_file["p-0.txt"]["estimate"]
    assert estimate["tokens_out_max"] == 300 and estimate["tokens_in"] > 50  # instructions and schema included
    assert estimate["cost_max"] == round((estimate["tokens_in"] * 1.0 + 300 * 4.0) / 1e6, 8)
    assert plan["tokens_in"] == sum(d["estimate"]["tokens_in"] for d in plan["documents"] if d["estimate"])
    assert table.returncode == 0 and "nothing sent" in table.stdout and "p-1.txt" in table.stdout
