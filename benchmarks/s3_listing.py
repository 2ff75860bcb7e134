"""S3 listing: time and memory of `S3Source.iter_documents` over N keys, against a bare paginator.

    .venv/bin/python benchmarks/s3_listing.py --keys 10000 [--json]

Starts moto's S3 server in its own process on a free loopback port (boto3 reaches it over HTTP,
as it would AWS or MinIO; a separate process keeps the server's own CPU and memory out of the
figures), creates N small objects under a prefix (plus folder markers that must be skipped), then
lists the prefix twice in the same run:

- baseline: boto3's `list_objects_v2` paginator, keys only (the least any lister does);
- docbatch: `S3Source.iter_documents()`, building one `DocumentRef` per object (filters, hidden
  and marker skipping, ETag fingerprints).

It prints wall time of both and their ratio, references per second, and memory: the peak of
Python allocations during each listing (tracemalloc) and the size of the references kept, per
1,000 keys, so "streamed" can be checked: the listing itself holds one page (1,000 keys) at a
time, the references are what the batch keeps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import urllib.request
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REGION = "us-east-1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=10_000, help="objects under the listed prefix (default 10000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    return parser.parse_args(argv)


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def peak_alloc_mb(fn: Any) -> float:
    """Peak MB of Python allocations during the call (a separate pass: tracemalloc slows it down)."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import boto3

    from blocks.aws import AwsCredentials
    from blocks.s3 import S3Source

    with moto_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="bench", aws_secret_access_key="bench")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        print(f"creating {args.keys} objects on moto at {endpoint}...", file=sys.stderr)
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: client.put_object(Bucket=bucket, Key=f"inbox/{n // 1000:03d}/doc-{n:06d}.pdf", Body=b"%PDF-1.4 x"), range(args.keys)))
        for n in range(args.keys // 1000 + 1):
            client.put_object(Bucket=bucket, Key=f"inbox/{n:03d}/", Body=b"")  # folder markers, skipped
        setup_s = time.perf_counter() - started

        def baseline() -> int:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="inbox/")
            return sum(1 for page in pages for item in page.get("Contents", ()) if not item["Key"].endswith("/"))

        source = S3Source(
            bucket=bucket, prefix="inbox", endpoint_url=endpoint,
            credentials=AwsCredentials(aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION),
        )
        source.check()  # client creation and the probe are not part of the listing
        base_s, base_count = timed(baseline)
        ours_s, refs = timed(lambda: list(source.iter_documents()))
        base_peak = peak_alloc_mb(baseline)
        ours_peak = peak_alloc_mb(lambda: list(source.iter_documents()))
        tracemalloc.start()
        kept = [ref.model_copy() for ref in refs]
        kept_mb = tracemalloc.get_traced_memory()[0] / 1e6
        tracemalloc.stop()
        del kept

    assert base_count == len(refs) == args.keys, (base_count, len(refs))
    result = {
        "keys": args.keys,
        "setup_s": round(setup_s, 2),
        "baseline_paginator_s": round(base_s, 3),
        "docbatch_listing_s": round(ours_s, 3),
        "ratio_to_paginator": round(ours_s / base_s, 3),
        "refs_per_s": round(len(refs) / ours_s),
        "baseline_peak_alloc_mb": round(base_peak, 1),
        "docbatch_peak_alloc_mb": round(ours_peak, 1),
        "refs_kept_mb_per_1000": round(kept_mb / args.keys * 1000, 2),
        "listing_overhead_peak_mb": round(ours_peak - kept_mb, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
