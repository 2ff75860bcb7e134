"""Re-run time of `ingest_inbox` over an unchanged folder: the cost of finding there is nothing to do.

    .venv/bin/python benchmarks/ingest_unchanged.py --n 10000 [--json]

Creates N small text files, ingests them once (extracting everything), then runs the ingestion
three more times over the unchanged folder and reports each run's wall time (call to return)
and flow-run time (as the server recorded it), against a baseline measured in the same run: a
bare `os.scandir` + `stat` walk of the same folder. No per-document work may start: the
script checks that no batch ran. Target (issue 6): under 3 s of flow time at N = 10,000.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="docbatch-ingest-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-home"))
    from prefect import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.ingest import ingest_inbox
    from flows.params import ExportSettings, ExtractionSettings

    inbox = work / "inbox"
    inbox.mkdir()
    for n in range(args.n):
        (inbox / f"doc-{n:06d}.txt").write_text(f"Invoice no. A-{n:06d}\nTotal 12.50 EUR\n")

    def baseline() -> float:
        started = time.perf_counter()
        with os.scandir(inbox) as entries:
            for entry in entries:
                entry.stat()
        return time.perf_counter() - started

    settings = dict(
        source=str(inbox), max_concurrency=8, settle_s=2.0,
        extraction=ExtractionSettings(), export=ExportSettings(output_dir=str(work / "out"), formats=["csv"]),
    )
    with prefect_test_harness(server_startup_timeout=180):
        print(f"first ingestion of {args.n} files...", file=sys.stderr)
        started = time.perf_counter()
        first = ingest_inbox(**settings)
        first_s = time.perf_counter() - started
        assert first.totals and first.totals.total == args.n, first.message
        runs = []
        for _ in range(3):
            base = baseline()
            started = time.perf_counter()
            report = ingest_inbox(**settings, return_state=True)
            wall = time.perf_counter() - started
            result = report.result()
            assert result.status == "nothing_new" and result.batch_flow_run_id is None, result.message
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(report.state_details.flow_run_id)
            flow_time = (run.end_time - run.start_time).total_seconds() if run.end_time and run.start_time else None
            runs.append({"wall_s": round(wall, 3), "flow_run_s": round(flow_time, 3) if flow_time else None, "baseline_walk_s": round(base, 3)})
    best = min(runs, key=lambda r: r["wall_s"])
    out = {
        "files": args.n,
        "first_ingestion_s": round(first_s, 1),
        "unchanged_runs": runs,
        "best_wall_s": best["wall_s"],
        "best_flow_run_s": best["flow_run_s"],
        "ratio_to_bare_walk": round(best["wall_s"] / best["baseline_walk_s"], 1),
        "target_flow_run_s": 3.0,
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
