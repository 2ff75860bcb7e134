"""Throughput of a model batch against the script a user would write instead, at equal output.

What it measures
----------------
A scripted OpenAI-protocol server on 127.0.0.1 (`tests/openai_server.py`) answers every chat
completion after `--latency-ms`, like a model that takes that long, with JSON read from the
document. `--n` small text documents are extracted into one schema twice, at the same
concurrency, in this process:

1. `extract_batch` with an `openai-compatible-extractor` block: listing, text read by the
   isolated parse workers, the structured-output request, schema validation, results, journal,
   exports (JSON and CSV) and artifacts, the flow's own exit included; the result cache is off;
2. the script a user would write (`plain_script`): a thread pool that reads each file, sends the
   same instructions and text with httpx to the same server, parses and validates the answer with
   jsonschema, and keeps the fields in a list.

It checks that both give the same fields document by document, and prints both documents/s, the
ideal (N·L/C), and the ratios. The difference is what docbatch adds per document for what it
gives (per-file errors, checkpoint, exports, artifacts, retries, limits, token counts).

How to run
----------
    .venv/bin/python benchmarks/model_throughput.py [--n 400] [--latency-ms 200] [--concurrency 8]

Without PREFECT_API_URL it starts a temporary Prefect server (`prefect_test_harness`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEMA = {
    "type": "object",
    "properties": {"po_number": {"type": "string"}, "supplier": {"type": ["string", "null"]}, "amount": {"type": ["number", "null"]}},
    "required": ["po_number"],
}


def make_documents(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for k in range(n):
        (folder / f"po-{k:05d}.txt").write_text(f"PURCHASE ORDER\npo_number: PO-{k}\nsupplier: Supplier {k % 17}\namount: {k}.25\n")


def plain_script(folder: Path, url: str, concurrency: int, instructions: str) -> tuple[float, dict[str, Any]]:
    """What a user writes instead: read, post, parse, validate, keep; no errors kept, no exports."""
    import httpx
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(SCHEMA)
    client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency))

    def one(path: Path) -> tuple[str, dict[str, Any]]:
        text = path.read_text()
        body = {
            "model": "fake-model", "temperature": 0, "max_tokens": 256,
            "messages": [{"role": "system", "content": instructions}, {"role": "user", "content": f"Document: {path.name}\n\n{text}"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "extraction", "schema": SCHEMA}},
        }
        answer = client.post(f"{url}/chat/completions", json=body)
        answer.raise_for_status()
        fields = json.loads(answer.json()["choices"][0]["message"]["content"])
        validator.validate(fields)
        return path.name, fields

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = dict(pool.map(one, sorted(folder.iterdir())))
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed, results


def docbatch_run(folder: Path, out: Path, block: str, schema: Path, concurrency: int) -> tuple[float, dict[str, Any]]:
    from flows.batch import extract_batch
    from flows.params import ExportSettings, ExtractionSettings

    started = time.perf_counter()
    report = extract_batch(
        source=str(folder), max_concurrency=concurrency, max_documents=0,
        extraction=ExtractionSettings(extractor=block, target_schema=str(schema), cache=False),
        export=ExportSettings(output_dir=str(out), formats=["json", "csv"]),
    )
    elapsed = time.perf_counter() - started
    failed = [r for r in report.results if r.status != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} documents failed, e.g. {failed[0].ref.name}: {failed[0].error}")
    return elapsed, {r.ref.name: r.fields for r in report.results}


def measure(n: int, latency_ms: int, concurrency: int) -> dict[str, Any]:
    from blocks.openai_compatible import OpenAICompatibleExtractor
    from blocks.schemas import load_target_schema
    from tests.openai_server import Script, openai_server

    with tempfile.TemporaryDirectory(prefix="docbatch-model-bench-") as tmp:
        work = Path(tmp)
        make_documents(work / "in", n)
        schema = work / "schema.json"
        schema.write_text(json.dumps(SCHEMA))
        script = Script(delay_s=latency_ms / 1000)
        with openai_server(script) as url:
            extractor = OpenAICompatibleExtractor(base_url=url, model="fake-model", target_schema=str(schema), max_tokens=256)
            extractor.save("bench-model", overwrite=True)
            instructions = extractor._instructions(load_target_schema(str(schema)))
            plain_s, plain = plain_script(work / "in", url, concurrency, instructions)
            flow_s, flow = docbatch_run(work / "in", work / "out", "openai-compatible-extractor/bench-model", schema, concurrency)
    equal = sum(flow.get(name) == {**fields} for name, fields in plain.items())
    ideal = n * latency_ms / 1000 / concurrency
    return {
        "documents": n, "latency_ms": latency_ms, "concurrency": concurrency, "equal_fields": equal,
        "ideal_s": round(ideal, 2), "plain_script_s": round(plain_s, 2), "docbatch_s": round(flow_s, 2),
        "plain_script_docs_per_s": round(n / plain_s, 1), "docbatch_docs_per_s": round(n / flow_s, 1),
        "docbatch_to_plain": round(flow_s / plain_s, 3), "docbatch_to_ideal": round(flow_s / ideal, 3),
        "extra_slot_ms_per_doc": round((flow_s - plain_s) * 1000 / n * concurrency, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DOCBATCH_CACHE_DIR", tempfile.mkdtemp(prefix="docbatch-model-bench-cache-"))
    with contextlib.ExitStack() as stack:
        if "PREFECT_API_URL" not in os.environ:
            from prefect.testing.utilities import prefect_test_harness

            stack.enter_context(prefect_test_harness(server_startup_timeout=180))
        figures = measure(args.n, args.latency_ms, args.concurrency)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
