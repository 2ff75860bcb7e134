"""Fan-out at scale: N synthetic documents of L ms each through K = 1, 2, 4 process workers.

    .venv/bin/python benchmarks/scale.py --n 10000 --latency-ms 50 --concurrency 8          # table
    .venv/bin/python benchmarks/scale.py --n 2000 --workers 1 2 --json                      # one JSON object

Starts a real `prefect server` (own PREFECT_HOME in a temporary folder), deploys
deployments.yaml, starts max(K) process workers (`--limit 1`: one share each, polling every
second), saves a sleeping extractor block, then for each K runs `extract_batch(workers=K,
shared_path=True)` in a fresh Python process (the parent) over a local folder every worker
shares (this machine). Prints wall time of the parent's flow call, the ideal N·L/(C·K), their
ratio, and the parent's peak RSS. Everything started is stopped by process id at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.prefect_server import PrefectServer  # noqa: E402 - the tests' throw-away server and workers

PARENT = """
import json, resource, sys, time
from flows.batch import extract_batch
from flows.params import ExportSettings, ExtractionSettings
n, k, c, source, output, block = sys.argv[1:7]
started = time.perf_counter()
report = extract_batch(source=source, max_concurrency=int(c), batch_name=f"scale K={k}", max_documents=0,
                       extraction=ExtractionSettings(extractor=block),
                       export=ExportSettings(output_dir=output, formats=["jsonl", "csv"]),
                       workers=int(k), shared_path=int(k) > 0)
wall = time.perf_counter() - started
print(json.dumps({"wall_s": wall, "status": report.status, "total": report.totals.total, "succeeded": report.totals.succeeded,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="documents (default 10000)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="time each document takes (default 50)")
    parser.add_argument("--concurrency", type=int, default=8, help="documents in flight per worker (default 8)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="values of K (default 1 2 4); 0: the batch in the parent's own process, for its memory")
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    args = parser.parse_args(argv)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    work = Path(tempfile.mkdtemp(prefix="docbatch-scale-"))
    documents = work / "documents"
    documents.mkdir()
    for n in range(args.n):
        (documents / f"doc-{n:06d}.txt").write_text(f"Invoice no. S-{n}\n")
    rows = []
    with PrefectServer() as server:
        server.prefect("work-pool", "create", "docbatch-process", "--type", "process", check=True)
        deployed = server.prefect("deploy", "--all", "--prefect-file", "deployments.yaml", cwd=ROOT, env={"PWD": str(ROOT)})
        assert deployed.returncode == 0, deployed.stderr
        ingest = server.api("GET", "/deployments/name/ingest-inbox/ingest-inbox")
        server.api("PATCH", f"/deployments/{ingest['id']}", json={"paused": True})
        env = {"PYTHONPATH": str(ROOT), "DOCBATCH_BLOCK_MODULES": "benchmarks.sleep_extractor", "PREFECT_WORKER_QUERY_SECONDS": "1",
               "PREFECT_LOGGING_LEVEL": "WARNING"}
        for number in range(max(args.workers)):
            folder = work / f"worker-{number + 1}"
            folder.mkdir()
            server.start_worker("docbatch-process", "--name", f"w{number + 1}", "--limit", "1", cwd=folder, env=env)
        block = "scale-sleep-extractor/scale"
        saved = subprocess.run([sys.executable, "-c", "from benchmarks.sleep_extractor import ScaleSleepExtractor as E\n"
                                f"E(latency_ms={args.latency_ms}).save('scale', overwrite=True)"],
                               cwd=ROOT, env={**server.env, **env}, capture_output=True, text=True, timeout=120)
        assert saved.returncode == 0, saved.stderr
        time.sleep(3)  # the workers' first poll
        for k in args.workers:
            output = work / f"out-{k}"
            done = subprocess.run([sys.executable, "-c", PARENT, str(args.n), str(k), str(args.concurrency), str(documents), str(output), block],
                                  cwd=ROOT, env={**server.env, **env}, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise SystemExit(f"K={k} failed:\n{done.stderr[-3000:]}")
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            ideal = args.n * args.latency_ms / 1000 / (args.concurrency * max(k, 1))
            row = {"workers": k, "n": args.n, "latency_ms": args.latency_ms, "concurrency": args.concurrency, **measured,
                   "ideal_s": round(ideal, 2), "ratio": round(measured["wall_s"] / ideal, 3)}
            row["wall_s"] = round(row["wall_s"], 2)
            row["peak_rss_mb"] = round(row["peak_rss_mb"], 1)
            rows.append(row)
            say(f"K={k}: {row['wall_s']} s, ideal {row['ideal_s']} s, ratio {row['ratio']}, parent peak RSS {row['peak_rss_mb']} MB, "
                f"{row['succeeded']}/{row['total']} succeeded")
    if args.json:
        print(json.dumps({"rows": rows}, indent=2))
    else:
        print(f"\n| K | N | L ms | C | wall s | ideal s | ratio | parent peak RSS MB |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            print(f"| {row['workers']} | {row['n']:,} | {row['latency_ms']:g} | {row['concurrency']} | {row['wall_s']} | {row['ideal_s']} | {row['ratio']} | {row['peak_rss_mb']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
