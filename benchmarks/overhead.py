"""Orchestration overhead of `extract_batch` against a plain thread pool doing the same work.

What it measures
----------------
A fake extractor block (`bench-sleep-extractor`) sleeps `--latency-ms` per document, the way a
remote extraction service or an OCR call would keep a slot busy without using the CPU. The
script makes `--n` tiny files and extracts them twice in the same process:

1. with the real flow, `extract_batch(source=..., max_concurrency=C, max_documents=0, ...)`,
   listing, sharded task runs, progress artifact, collector, exports (the flow's default
   formats unless `--formats` says otherwise), artifacts and the flow's own exit included;
2. with `concurrent.futures.ThreadPoolExecutor(max_workers=C)` reading each file's bytes and
   calling the same extractor's `extract`.

With a sleeping extractor the ideal batch time is N·L/C. Whatever the flow takes beyond it is
docbatch's and Prefect's overhead (task-run engine, state events, API calls, logs, collector,
exports), reported as `ratio_to_ideal`, `ratio_to_threadpool` and `overhead_ms_per_doc`. It also
reports the process's peak RSS (ru_maxrss) and the RSS sampled from /proc/self/statm during
the measured flow run (to check memory does not grow with N beyond the results themselves),
the CPU time of this process and of the test server during the run (on a small machine the
server competes for the same cores), and a timeline of the run rebuilt from the task runs the
server recorded (setup, extraction phase and its slot utilisation, collector, finalisation).
Finally it checks that the server holds the batch's whole history:
len(plan_shards(N, C)) extraction task runs + list-documents + collect-results, all final.

Why
---
Sharding (tasks/sharding.py) exists to keep Prefect's per-task-run cost from dominating large
batches. This script is how to tell whether it does: the project's targets are
ratio_to_ideal <= 1.20 at N=1000 and <= 1.05 at N=10000 (L=50 ms, C=8), peak RSS not growing
with N beyond the results, and a complete history.

Reading the figures: in Prefect 3.8.8 a flow call returns only at the next 1-second tick of the
flow run's heartbeat thread, so `flow_wall_s` moves in steps of about 1 s (0-1 s after the flow
run's final state: `timeline.after_flow_run_end_s`; `timeline.flow_run_s` is the run without
it). On a 2-core machine the temporary server shares the cores, and other work on the machine
shows up directly: compare runs made back to back, and repeat a run before trusting a 0.2 s
difference.

How to run
----------
    .venv/bin/python benchmarks/overhead.py --n 1000 --latency-ms 50 --concurrency 8
    .venv/bin/python benchmarks/overhead.py --n 10000 --latency-ms 50 --concurrency 8 --json

Without PREFECT_API_URL it starts a temporary Prefect server (`prefect_test_harness`, with a
throw-away SQLite database and result storage); with it, it uses that server. A 5-document
warm-up flow run comes first so that server start-up and imports are not measured.

`--json` prints exactly one JSON object on stdout (everything else, Prefect's logs included,
goes to stderr). `--log-level` sets PREFECT_LOGGING_LEVEL for this process (default WARNING,
see `DEFAULT_LOG_LEVEL`). `--profile FILE` runs the measured flow under cProfile (main thread
and every thread started during the run; it slows the run down, so timings are then not
representative). `--experiment KEY=VALUE` (repeatable) replaces the flow's shard plan with a
variant, or another knob, for experiments only; without it nothing is patched:

    per_document_limit=INT  one task run per document up to this many documents (default 100)
    no_steal=1              a shard never takes documents from another (tasks.work.SharedWork)
    no_stream=1             list the whole folder before extracting, as a batch with a max_documents
                            limit does (flows.batch.STREAM_AFTER)
    progress_every_s=FLOAT  tasks.progress.PROGRESS_EVERY_S, how often the progress artifact is updated (default 1.0)
    switch_interval=FLOAT   sys.setswitchinterval for the run (CPython's default 0.005 s): how long a
                            thread waking from I/O or sleep may wait for the GIL
    skip_return_scan=1      skip Prefect's scan of the flow's return value for futures
                            (prefect.flow_engine.resolve_futures_to_states), which walks every result
    no_heartbeat=1          no flow-run heartbeat thread. In Prefect 3.8.8 that thread sleeps in 1 s
                            steps and the flow call joins it on exit, so a call returns up to 1 s
                            after its flow run ended (see `after_flow_run_end_s`)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Prefect's run loggers ship every record to the API and print it on stderr. At N <= 1000 the
# task runs log one INFO line per document (flows.batch.LOG_EACH_DOCUMENT_UP_TO), so INFO
# measures log shipping as much as orchestration. The benchmark therefore runs Prefect at
# WARNING by default, which measures the orchestration itself; `--log-level INFO` measures
# what a user running with Prefect's default level pays for the per-document log lines.
DEFAULT_LOG_LEVEL = "WARNING"
BLOCK_SLUG = "bench-sleep-extractor"
BLOCK_NAME = "bench"
WARMUP_DOCUMENTS = 5
EXPERIMENT_KEYS = {
    "per_document_limit": int,
    "no_steal": int,
    "no_stream": int,
    "progress_every_s": float,
    "switch_interval": float,
    "skip_return_scan": int,
    "no_heartbeat": int,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc[doc.find("`--json` prints"):],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=1000, help="documents in the measured batch (default 1000)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="time the fake extractor sleeps per document (default 50)")
    parser.add_argument("--concurrency", type=int, default=8, help="max_concurrency of the flow and workers of the thread pool (default 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    parser.add_argument(
        "--formats", default=None,
        help="comma-separated export formats of the flow runs, e.g. 'json,csv'; '' for report.json only "
        "(default: the flow's own default, ExportSettings().formats)",
    )
    parser.add_argument("--log-level", default=DEFAULT_LOG_LEVEL, help=f"PREFECT_LOGGING_LEVEL of this process (default {DEFAULT_LOG_LEVEL})")
    parser.add_argument("--history-timeout", type=float, default=120.0, help="seconds to wait for the server to record every task run (default 120)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the measured flow call (all threads started during it) into FILE")
    parser.add_argument("--experiment", action="append", default=[], metavar="KEY=VALUE", help="experiments only: patch the shard plan or a knob (keys below); repeatable")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (documents and exports)")
    args = parser.parse_args(argv)
    if args.n < 1 or not 1 <= args.concurrency <= 64 or args.latency_ms <= 0:
        parser.error("--n must be >= 1, --concurrency 1-64 (the flow's bounds), --latency-ms > 0")
    if args.formats is not None:
        args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    experiment: dict[str, Any] = {}
    for item in args.experiment:
        key, sep, value = item.partition("=")
        if not sep or key not in EXPERIMENT_KEYS:
            parser.error(f"--experiment takes KEY=VALUE with KEY in {', '.join(EXPERIMENT_KEYS)}; got {item!r}")
        experiment[key] = EXPERIMENT_KEYS[key](value)
    args.experiment = experiment
    return args


# --- the fake extractor --------------------------------------------------------------------------


def extractor_class() -> type:
    """The sleeping extractor block, defined once, after Prefect's settings are in os.environ."""
    global _EXTRACTOR_CLASS
    if _EXTRACTOR_CLASS is None:
        from typing import ClassVar

        from pydantic import Field

        from blocks.extractor import Extractor
        from blocks.models import Extraction

        class BenchSleepExtractor(Extractor):
            """Sleeps `latency_ms` per document, like a remote service, and returns a tiny record."""

            _block_type_name: ClassVar[str] = "Bench Sleep Extractor"
            _block_type_slug: ClassVar[str] = BLOCK_SLUG
            _description: ClassVar[str] = "Benchmark only: sleeps per document and returns fixed fields."

            latency_ms: float = Field(default=50.0, ge=0)

            def extract(self, name: str, data: bytes) -> Extraction:
                started = time.perf_counter()
                time.sleep(self.latency_ms / 1000.0)
                CALLS.append((started, time.perf_counter()))
                return Extraction(
                    fields={"document": name, "size": len(data), "total": 42.5},
                    text="",
                    pages=1,
                    media_type="text/plain",
                )

        _EXTRACTOR_CLASS = BenchSleepExtractor
    return _EXTRACTOR_CLASS


_EXTRACTOR_CLASS: type | None = None
CALLS: list[tuple[float, float]] = []  # (start, end) of each extractor call, for `slot_idle`


def slot_idle(calls: list[tuple[float, float]], concurrency: int) -> dict[str, float]:
    """Seconds of slot time not spent in an extractor call, from the first call's start to the
    last call's end: while the slots fill up, in the middle, and in the tail once they empty."""
    if not calls:
        return {}
    events = sorted([(start, 1) for start, _ in calls] + [(end, -1) for _, end in calls])
    first, last = events[0][0], events[-1][0]
    full = [t for (t, _), n in zip(events, itertools.accumulate(d for _, d in events)) if n >= concurrency]
    ramp_end, tail_start = (full[0], full[-1]) if full else (last, last)
    idle = {"ramp": 0.0, "middle": 0.0, "tail": 0.0}
    in_flight, previous = 0, first
    for moment, delta in events:
        gap = (concurrency - in_flight) * (moment - previous)
        idle["ramp" if moment <= ramp_end else "tail" if previous >= tail_start else "middle"] += gap
        in_flight += delta
        previous = moment
    busy = sum(end - start for start, end in calls)
    return {
        "span_s": round(last - first, 3),
        "idle_ramp_s": round(idle["ramp"] / concurrency, 3),
        "idle_middle_s": round(idle["middle"] / concurrency, 3),
        "idle_tail_s": round(idle["tail"] / concurrency, 3),
        "call_beyond_latency_ms": round(1000 * busy / len(calls), 3),
    }


# --- measuring helpers ---------------------------------------------------------------------------

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_BYTES / MB


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def other_process_cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def other_process_rss_mb(pid: int | None) -> dict[str, float] | None:
    if pid is None:
        return None
    try:
        values = {}
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024
        return values
    except (OSError, ValueError):
        return None


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of this process, by native thread id."""
    cpu: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            cpu[int(tid)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return cpu


class Sampler:
    """While in use, samples this process's RSS every `interval_s` and its threads' CPU time.

    Thread CPU is read from /proc/self/task every `cpu_every` samples; a thread that ends keeps
    its last sample, so worker threads of the flow's task runner are counted too (to within
    one sampling period). Threads are grouped by name without their numbers.
    """

    def __init__(self, interval_s: float = 0.05, cpu_every: int = 20) -> None:
        self.interval_s = interval_s
        self.cpu_every = cpu_every
        self.baseline = self.peak = self.last = 0.0
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.baseline = self.peak = self.last = rss_mb()
        self._cpu_start = thread_cpu_s()
        self._sample_cpu()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample_cpu(self) -> None:
        for thread in threading.enumerate():
            if thread.native_id is not None:
                self._names[thread.native_id] = "main" if thread is threading.main_thread() else thread.name
        self._cpu_last.update(thread_cpu_s())

    def _run(self) -> None:
        count = 0
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_mb())
            count += 1
            if count % self.cpu_every == 0:
                self._sample_cpu()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample_cpu()
        self.last = rss_mb()
        self.peak = max(self.peak, self.last)

    def cpu_by_thread(self, top: int = 8) -> dict[str, float]:
        groups: dict[str, float] = {}
        for tid, cpu in self._cpu_last.items():
            name = self._names.get(tid, "unnamed (not a Python thread)")
            name = re.sub(r"-\d+(_\d+)?", "", name)  # ThreadPoolExecutor-3_0 -> ThreadPoolExecutor
            groups[name] = groups.get(name, 0.0) + cpu - self._cpu_start.get(tid, 0.0)
        ranked = sorted(groups.items(), key=lambda item: -item[1])
        return {name: round(cpu, 3) for name, cpu in ranked[:top] if cpu > 0}


@contextlib.contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """cProfile the main thread and every thread started inside the block; stats summed into `path`."""
    if not path:
        yield
        return
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(frame: Any, event: str, arg: Any) -> None:  # first profile event of a new thread
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        sys.setprofile(None)
        profile.enable()

    main = cProfile.Profile()
    threading.setprofile(start_in_thread)
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        stats = pstats.Stats(main)
        with lock:
            for profile in profiles:
                with contextlib.suppress(TypeError, ValueError):
                    stats.add(profile)
        stats.dump_stats(path)
        print(f"\nprofile of the measured flow call ({len(profiles)} thread(s) + main) in {path}; top by own time:", file=sys.stderr)
        stats.stream = sys.stderr  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)


# --- the shard plan used by the flow ---------------------------------------------------------------


def experimental_plan(experiment: dict[str, Any]) -> Callable[[int, int], list[range]]:
    """tasks.sharding.plan_shards with the experiment's per-document limit (benchmark only)."""
    from tasks import sharding

    return functools.partial(sharding.plan_shards, per_document_limit=experiment["per_document_limit"])


@contextlib.contextmanager
def applied_experiment(experiment: dict[str, Any]) -> Iterator[Callable[[int, int], list[range]]]:
    """Yield the plan the flow will use; patch anything only when an experiment is given."""
    import flows.batch
    import tasks.share
    import tasks.sharding

    if not experiment:
        yield tasks.share.plan_shards
        return
    with contextlib.ExitStack() as stack:

        def patch(owner: Any, name: str, value: Any) -> None:
            saved = getattr(owner, name)
            setattr(owner, name, value)
            stack.callback(setattr, owner, name, saved)

        plan = tasks.share.plan_shards
        if "per_document_limit" in experiment:
            plan = experimental_plan(experiment)
            patch(tasks.share, "plan_shards", plan)
            patch(tasks.sharding, "PER_DOCUMENT_LIMIT", experiment["per_document_limit"])
            patch(flows.batch, "STREAM_AFTER", max(experiment["per_document_limit"], flows.batch.STREAM_AFTER))
        if experiment.get("no_stream"):
            patch(flows.batch, "STREAM_AFTER", sys.maxsize)
        if experiment.get("no_steal"):
            import tasks.work

            take = tasks.work.SharedWork.take
            patch(tasks.work.SharedWork, "take", lambda self, shard, steal=True: take(self, shard, steal=False))
        if "progress_every_s" in experiment:
            import tasks.progress

            patch(tasks.progress, "PROGRESS_EVERY_S", experiment["progress_every_s"])
        if "switch_interval" in experiment:
            stack.callback(sys.setswitchinterval, sys.getswitchinterval())
            sys.setswitchinterval(experiment["switch_interval"])
        if experiment.get("skip_return_scan"):
            import prefect.flow_engine

            from blocks.models import BatchReport

            scan = prefect.flow_engine.resolve_futures_to_states
            patch(prefect.flow_engine, "resolve_futures_to_states", lambda expr: expr if isinstance(expr, BatchReport) else scan(expr))
        if experiment.get("no_heartbeat"):
            import prefect.flow_engine

            patch(prefect.flow_engine.BaseFlowRunEngine, "heartbeat_seconds", property(lambda self: None))
        yield plan


# --- the runs ---------------------------------------------------------------------------------------


def make_documents(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"doc-{index:06d}.txt"
        path.write_bytes(f"doc {index}\n".encode())
        paths.append(path)
    return paths


def export_settings(output: Path, formats: list[str] | None) -> Any:
    """The flow's export parameter: its default formats unless `--formats` named some."""
    from flows.params import ExportSettings

    return ExportSettings(output_dir=str(output), **({} if formats is None else {"formats": formats}))


def run_flow(source: Path, output: Path, concurrency: int, formats: list[str] | None) -> Any:
    from flows.batch import extract_batch
    from flows.params import ExtractionSettings

    return extract_batch(
        source=str(source),
        max_concurrency=concurrency,
        max_documents=0,
        extraction=ExtractionSettings(extractor=f"{BLOCK_SLUG}/{BLOCK_NAME}", retries=0),
        export=export_settings(output, formats),
    )


def run_thread_pool(paths: list[Path], extractor: Any, concurrency: int) -> tuple[float, list[float]]:
    """Wall time of the plain thread pool, and each document's read + extract time in ms."""

    def one(path: Path) -> float:
        started = time.perf_counter()
        extractor.extract(path.name, path.read_bytes())
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        durations = list(pool.map(one, paths))
    return time.perf_counter() - started, durations


def per_document_ms(durations: list[float], latency_ms: float) -> dict[str, float]:
    """Mean and tail of per-document time beyond the extractor's sleep (wake-up and read latency)."""
    if not durations:
        return {}
    ordered = sorted(d - latency_ms for d in durations)
    return {
        "mean": round(sum(ordered) / len(ordered), 3),
        "p50": round(ordered[len(ordered) // 2], 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
    }


def timeline(flow_run_id: str, documents: int, latency_s: float, concurrency: int, returned_at: datetime) -> dict[str, Any]:
    """Phases of the flow run rebuilt from the flow and task runs the server recorded."""
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
        while True:
            page = client.read_task_runs(flow_run_filter=flow_filter, limit=200, offset=len(runs))
            runs += page
            if len(page) < 200:
                break

    def seconds(a: datetime | None, b: datetime | None) -> float | None:
        return round((b - a).total_seconds(), 3) if a and b else None

    def timed(prefix: str) -> list[Any]:
        return [r for r in runs if r.name.startswith(prefix) and r.start_time and r.end_time]

    listing, collect = timed("list-documents"), timed("collect-results")
    extract = [r for r in runs if r.name.startswith("extract ") and r.start_time and r.end_time]
    # The flow run's own duration as recorded, and how long after its final state the call returned
    # (Prefect's exit work: joining the heartbeat thread, up to 1 s in 3.8.8). Same clock: the states'
    # timestamps are taken in this process.
    out: dict[str, Any] = {
        "flow_run_s": seconds(flow_run.start_time, flow_run.end_time),
        "after_flow_run_end_s": seconds(flow_run.end_time, returned_at),
    }
    if listing:
        out["list_s"] = seconds(listing[0].start_time, listing[0].end_time)
    if extract:
        first = min(r.start_time for r in extract)
        last = max(r.end_time for r in extract)
        busy = sum((r.end_time - r.start_time).total_seconds() for r in extract)
        phase = (last - first).total_seconds()
        out["setup_s"] = seconds(flow_run.start_time, first)
        out["extract_phase_s"] = round(phase, 3)
        out["extract_task_runs"] = len(extract)
        out["extract_task_busy_s"] = round(busy, 3)
        # Share of the extraction phase the C slots spent inside task runs (the rest is task-run
        # engine work between runs, and the tail), and how much of the task runs' own time was
        # not the extractor's sleep (reading, hashing, results, GIL waits).
        out["task_busy_ratio"] = round(busy / (concurrency * phase), 3) if phase else None
        out["in_task_overhead_s"] = round(busy - documents * latency_s, 3)
        if collect:
            out["gap_before_collect_s"] = seconds(last, collect[0].start_time)
    if collect:
        out["collect_s"] = seconds(collect[0].start_time, collect[0].end_time)
        out["finalize_s"] = seconds(collect[0].end_time, flow_run.end_time)
    return out


def server_pid() -> int | None:
    try:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer._instances.get(None)
        process = getattr(server, "server_process", None)
        return process.pid if process else None
    except Exception:  # noqa: BLE001 - only for reporting
        return None


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from flows.history import recorded_task_runs, wait_for_history

    n, latency_s, concurrency = args.n, args.latency_ms / 1000.0, args.concurrency
    export_settings(workdir / "out", args.formats)  # an unknown format fails here, before any run
    extractor = extractor_class()(latency_ms=args.latency_ms)
    extractor.save(BLOCK_NAME, overwrite=True)

    warmup_paths = make_documents(workdir / "warmup", WARMUP_DOCUMENTS)
    paths = make_documents(workdir / "documents", n)
    pid = server_pid()

    warm_started = time.perf_counter()
    warm = run_flow(workdir / "warmup", workdir / "out-warmup", concurrency, args.formats)
    if warm.flow_run_id:
        wait_for_history(warm.flow_run_id, WARMUP_DOCUMENTS + 2, timeout_s=60)
    run_thread_pool(warmup_paths, extractor, concurrency)
    warmup_s = time.perf_counter() - warm_started

    threadpool_s, threadpool_durations = run_thread_pool(paths, extractor, concurrency)

    gc.collect()
    with applied_experiment(args.experiment) as plan:
        shards = plan(n, concurrency)
        server_cpu_before = other_process_cpu_s(pid)
        cpu_before = process_cpu_s()
        with Sampler() as sampler:
            call_started_at = datetime.now(timezone.utc)
            started = time.perf_counter()
            CALLS.clear()
            with profiled(args.profile):
                report = run_flow(workdir / "documents", workdir / "out", concurrency, args.formats)
            flow_wall_s = time.perf_counter() - started
            call_ended_at = datetime.now(timezone.utc)
        client_cpu_s = process_cpu_s() - cpu_before
        server_cpu_after = other_process_cpu_s(pid)

    expected = len(shards) + 2  # extraction task runs + list-documents + collect-results
    history_started = time.perf_counter()
    complete = wait_for_history(report.flow_run_id, expected, timeout_s=args.history_timeout) if report.flow_run_id else False
    history_wait_s = time.perf_counter() - history_started
    recorded, final = recorded_task_runs(report.flow_run_id) if report.flow_run_id else (0, 0)
    phases = timeline(report.flow_run_id, n, latency_s, concurrency, call_ended_at) if report.flow_run_id else {}

    ideal_s = n * latency_s / concurrency
    server_rss = other_process_rss_mb(pid)
    result: dict[str, Any] = {
        "n": n,
        "latency_ms": args.latency_ms,
        "concurrency": concurrency,
        "formats": [f.value for f in export_settings(workdir / "out", args.formats).formats],
        "log_level": args.log_level,
        "experiment": args.experiment or None,
        "shards": len(shards),
        "largest_shard": max((len(shard) for shard in shards), default=0),
        "flow_wall_s": round(flow_wall_s, 3),
        "threadpool_wall_s": round(threadpool_s, 3),
        "ideal_s": round(ideal_s, 3),
        "ratio_to_ideal": round(flow_wall_s / ideal_s, 4) if ideal_s else None,
        "ratio_to_threadpool": round(flow_wall_s / threadpool_s, 4) if threadpool_s else None,
        "overhead_ms_per_doc": round((flow_wall_s - ideal_s) / n * 1000, 3),
        "threadpool_overhead_ms_per_doc": round((threadpool_s - ideal_s) / n * 1000, 3),
        # Each document's own time beyond L: the flow's from DocumentResult.duration_ms (read, hash,
        # extract), the thread pool's around read + extract. The difference is time the document's
        # thread waited for the GIL or a core while the process and the server did other work.
        "slots": slot_idle(list(CALLS), concurrency),
        "doc_extra_ms_flow": per_document_ms([r.duration_ms for r in report.results], args.latency_ms),
        "doc_extra_ms_threadpool": per_document_ms(threadpool_durations, args.latency_ms),
        # Wall time from the call to the flow body's start (flow run creation, parameter validation),
        # and from the collector's rollup (report.finished) to the call's return: exports, artifacts,
        # the completion event, the flow's return-value handling, final state and exit.
        "flow_start_s": round((report.started - call_started_at).total_seconds(), 3),
        "report_duration_s": report.duration_s,
        "collect_and_finish_s": round((call_ended_at - report.finished).total_seconds(), 3),
        "timeline": phases,
        "client_cpu_s": round(client_cpu_s, 3),
        "client_cpu_by_thread_s": sampler.cpu_by_thread(),
        "server_cpu_s": round(server_cpu_after - server_cpu_before, 3) if server_cpu_before is not None and server_cpu_after is not None else None,
        "cpu_count": os.cpu_count(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        # The export writer process of a large batch (reaped by then); 0 when the batch wrote its
        # exports in process. The Prefect server is a child too but still running, so not counted.
        "export_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "rss_before_mb": round(sampler.baseline, 1),
        "rss_peak_during_mb": round(sampler.peak, 1),
        "rss_delta_mb": round(sampler.peak - sampler.baseline, 1),
        "rss_after_mb": round(sampler.last, 1),
        "server_rss_mb": round(server_rss["VmRSS"], 1) if server_rss and "VmRSS" in server_rss else None,
        "server_peak_rss_mb": round(server_rss["VmHWM"], 1) if server_rss and "VmHWM" in server_rss else None,
        "results": len(report.results),
        "status": report.status,
        "succeeded": report.totals.succeeded,
        "task_runs_recorded": recorded,
        "task_runs_final": final,
        "task_runs_expected": expected,
        "history_complete": bool(complete and recorded == expected and final == recorded),
        "history_wait_s": round(history_wait_s, 3),
        "warmup_s": round(warmup_s, 3),
    }
    return result


def print_table(r: dict[str, Any], out: Any) -> None:
    t = r.get("timeline") or {}

    def row(label: str, value: Any, note: str = "") -> None:
        text = "-" if value is None else (f"{value:,.3f}" if isinstance(value, float) else str(value))
        print(f"  {label:<34} {text:>12}  {note}", file=out)

    print(f"\nextract_batch overhead: N={r['n']} documents, L={r['latency_ms']:g} ms, C={r['concurrency']}"
          f", formats={','.join(r['formats']) or 'report.json only'}, log level {r['log_level']}", file=out)
    if r["experiment"]:
        print(f"  EXPERIMENT (patched for this run): {r['experiment']}", file=out)
    print(f"  {r['shards']} extraction task run(s), largest shard {r['largest_shard']}", file=out)
    print("time", file=out)
    row("ideal N*L/C (s)", r["ideal_s"])
    row("thread pool wall (s)", r["threadpool_wall_s"], f"{r['threadpool_overhead_ms_per_doc']:.3f} ms/doc over ideal")
    row("flow wall (s)", r["flow_wall_s"])
    row("ratio to ideal", r["ratio_to_ideal"])
    row("ratio to thread pool", r["ratio_to_threadpool"])
    row("overhead per document (ms)", r["overhead_ms_per_doc"])
    flow_doc, pool_doc = r["doc_extra_ms_flow"], r["doc_extra_ms_threadpool"]
    if flow_doc and pool_doc:
        row("one document beyond L (ms)", flow_doc["mean"],
            f"mean in the flow (p99 {flow_doc['p99']}); thread pool {pool_doc['mean']} (p99 {pool_doc['p99']})")
    print("where the flow's time goes (s)", file=out)
    row("call -> flow body starts", r["flow_start_s"])
    row("flow setup (to 1st extract run)", t.get("setup_s"), f"listing {t.get('list_s')}")
    row("extraction phase", t.get("extract_phase_s"),
        f"slots busy in task runs {t.get('task_busy_ratio')}, in-task overhead {t.get('in_task_overhead_s')} s")
    slots = r.get("slots") or {}
    if slots:
        row("  extractor calls: first to last", slots["span_s"], f"mean call {slots['call_beyond_latency_ms']} ms")
        row("  slots idle (per slot, s)", slots["idle_middle_s"], f"between calls; filling {slots['idle_ramp_s']}, emptying {slots['idle_tail_s']}")
    row("gap before collector", t.get("gap_before_collect_s"))
    row("collector (exports, artifacts)", t.get("collect_s"))
    row("collector end -> flow run end", t.get("finalize_s"))
    row("flow run end -> call returns", t.get("after_flow_run_end_s"), "heartbeat thread join")
    row("report.finished -> call returns", r["collect_and_finish_s"])
    row("this process CPU (s)", r["client_cpu_s"], f"of {r['cpu_count']} cores")
    row("server process CPU (s)", r["server_cpu_s"])
    for name, cpu in r["client_cpu_by_thread_s"].items():
        row(f"  thread {name[:24]}", cpu)
    print("memory (MB)", file=out)
    row("peak RSS of the process", r["peak_rss_mb"])
    row("peak RSS of the export writer", r["export_process_peak_rss_mb"], "child process writing the export files")
    row("RSS before -> peak during run", f"{r['rss_before_mb']} -> {r['rss_peak_during_mb']}", f"delta {r['rss_delta_mb']}")
    row("server RSS now / peak", f"{r['server_rss_mb']} / {r['server_peak_rss_mb']}")
    print("history", file=out)
    row("task runs recorded / expected", f"{r['task_runs_recorded']} / {r['task_runs_expected']}",
        f"final {r['task_runs_final']}, waited {r['history_wait_s']:.2f} s")
    row("history complete", r["history_complete"])
    row("batch status", f"{r['status']} ({r['succeeded']}/{r['n']})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    json_out = None
    if args.json:  # keep stdout for the JSON object: anything else (child processes too) goes to stderr
        sys.stdout.flush()
        json_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)

    workdir = Path(tempfile.mkdtemp(prefix="docbatch-bench-"))
    harness = "PREFECT_API_URL" not in os.environ
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = args.log_level
    if harness:  # a throw-away server: keep its persisted flow results out of ~/.prefect too
        os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(workdir / "storage"))

    try:
        with contextlib.ExitStack() as stack:
            if harness:
                from prefect.testing.utilities import prefect_test_harness

                print("starting a temporary Prefect server...", file=sys.stderr)
                stack.enter_context(prefect_test_harness(server_startup_timeout=180))
            result = benchmark(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if json_out is not None:
        json_out.write(json.dumps(result) + "\n")
        json_out.flush()
    else:
        print_table(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
