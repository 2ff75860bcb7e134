"""Parsing in worker processes: killed on the time limit, capped in memory, recycled, replaced.

Real processes throughout; the functions the workers run are in `tests/parse_probes.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.embedded import EmbeddedExtractor
from blocks.errors import DocumentError
from blocks.isolation import ParsePool
from blocks.models import ErrorKind
from tests import parse_probes as probes
from tests.conftest import ROOT, corpus


def gone(pid: int, within: float = 3.0) -> bool:
    """True once no process (not even a zombie) has this pid."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture()
def pool():
    with ParsePool(max_workers=2, timeout_s=5, max_memory_mb=256, recycle_after=100) as parse_pool:
        yield parse_pool


def flate_bomb_pdf(megabytes: int) -> bytes:
    """A one-page PDF whose 2 KB content stream inflates to `megabytes` MiB of drawing operators.

    PDFium inflates a page's content stream whole to read its text; past the address-space
    cap an allocation fails and PDFium aborts the process.
    """
    chunk = b"0 0 m 1 1 l S\n" * (2**20 // 14)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = raw.compress(chunk) + raw.flush(zlib.Z_FULL_FLUSH)  # self-contained: repeatable as is
    checksum = 1
    for _ in range(megabytes):
        checksum = zlib.adler32(chunk, checksum)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    stream = b"\x78\xda" + block * megabytes + final + checksum.to_bytes(4, "big")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    pdf = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(pdf)


def test_workers_are_light_and_capped(pool: ParsePool) -> None:
    facts = pool.run(probes.process_facts, b"")
    assert facts["prefect"] is False and facts["flows"] is False
    assert facts["numpy"] is False
    assert facts["rlimit_as"] == 256 * 2**20
    assert facts["pid"] != os.getpid()
    echoed = pool.run(probes.echo, b"%PDF-1.7 body", 1, "two", flag=True)
    assert echoed["size"] == 13 and echoed["head"] == b"%PDF-1.7"
    assert echoed["args"] == (1, "two") and echoed["kwargs"] == {"flag": True}


def test_a_hanging_parse_is_killed_while_other_documents_finish(pool: ParsePool) -> None:
    fast = ParsePool(max_workers=2, timeout_s=1, max_memory_mb=256)
    outcome: dict[str, object] = {}

    def hang() -> None:
        started = time.monotonic()
        try:
            fast.run(probes.sleep_for, b"stuck", 60)
        except DocumentError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    try:
        hung = threading.Thread(target=hang)
        hung.start()
        deadline = time.monotonic() + 10
        while not fast.worker_pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        (hung_pid,) = fast.worker_pids()
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.extend(fast.run(probes.echo, b"x" * n)["size"] for n in range(10)))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        hung.join()
        assert sorted(results) == sorted(list(range(10)) * 3)
        error = outcome["error"]
        assert isinstance(error, DocumentError) and error.kind == ErrorKind.timeout
        assert error.message == "parsing took longer than 1 s and was stopped (timeout_s)"
        assert error.transient is False
        assert 1.0 <= outcome["seconds"] < 5.0  # type: ignore[operator]
        assert gone(hung_pid)
        assert hung_pid not in fast.worker_pids()
        assert fast.run(probes.echo, b"after")["size"] == 5
    finally:
        fast.shutdown()


def test_memory_over_the_cap_is_too_large(pool: ParsePool) -> None:
    with pytest.raises(DocumentError) as raised:
        pool.run(probes.allocate, b"", 400)  # a MemoryError inside the worker
    assert raised.value.kind == ErrorKind.too_large
    assert raised.value.message == "parsing needed more than 256 MB of memory and was stopped (max_memory_mb)"
    with pytest.raises(DocumentError) as raised:
        pool.run(probes.allocate_then_abort, b"", 600)  # malloc fails, then abort(): as PDFium does
    assert raised.value.kind == ErrorKind.too_large
    assert pool.run(probes.allocate, b"", 64) == 64 * 2**20  # under the cap is fine


def test_pdfium_decompression_bomb_is_too_large_and_cheap(tmp_path: Path) -> None:
    bomb = flate_bomb_pdf(400)
    assert len(bomb) < 1_000_000
    extractor = EmbeddedExtractor(max_memory_mb=256, max_workers=1)
    started = time.monotonic()
    with pytest.raises(DocumentError) as raised:
        extractor.extract("bomb.pdf", bomb)
    assert raised.value.kind == ErrorKind.too_large
    assert "(max_memory_mb)" in raised.value.message
    assert time.monotonic() - started < 10
    assert extractor.extract("after.txt", b"Invoice 12").text == "Invoice 12"


def test_a_worker_that_dies_is_replaced(pool: ParsePool) -> None:
    first = pool.run(probes.echo, b"")["pid"]
    with pytest.raises(DocumentError) as raised:
        pool.run(probes.kill_self, b"")
    assert raised.value.kind == ErrorKind.internal and raised.value.transient is False
    assert "worker process died (signal 9, SIGKILL)" in raised.value.message
    with pytest.raises(DocumentError) as raised:
        pool.run(probes.segfault, b"")
    assert "signal 11, SIGSEGV" in raised.value.message
    later = {pool.run(probes.echo, b"")["pid"] for _ in range(5)}
    assert first not in later and gone(first)
    assert len(pool.worker_pids()) <= 2
    assert all(pool.run(probes.echo, b"ok")["size"] == 2 for _ in range(5))


def test_workers_are_recycled_after_n_documents() -> None:
    with ParsePool(max_workers=1, timeout_s=5, max_memory_mb=256, recycle_after=3) as pool:
        pids = [pool.run(probes.echo, b"")["pid"] for _ in range(7)]
        assert pids[0] == pids[1] == pids[2] != pids[3]
        assert pids[3] == pids[4] == pids[5] != pids[6]
        assert gone(pids[0]) and gone(pids[3])


def test_errors_come_back_as_raised(pool: ParsePool) -> None:
    for kind, transient in [(ErrorKind.corrupt, False), (ErrorKind.backend, True), (ErrorKind.encrypted, False)]:
        with pytest.raises(DocumentError) as raised:
            pool.run(probes.raise_document_error, b"", kind.value, f"a {kind.value} problem", transient)
        assert (raised.value.kind, raised.value.message, raised.value.transient) == (kind, f"a {kind.value} problem", transient)
    with pytest.raises(ValueError, match="^boom$"):
        pool.run(probes.raise_builtin, b"", "boom")
    with pytest.raises(RecursionError):
        pool.run(probes.deep_recursion, b"")
    # an exception that does not survive pickling keeps its class name and message
    extractor = EmbeddedExtractor()
    with pytest.raises(Exception) as raised:
        pool.run(probes.raise_unpicklable, b"")
    in_process = extractor.classify(probes.Unpicklable(7, "odd failure"))
    assert extractor.classify(raised.value).message == in_process.message == "Unpicklable: code 7: odd failure"
    assert pool.run(probes.echo, b"still fine")["size"] == 10


def test_isolated_extraction_equals_in_process_extraction() -> None:
    isolated = EmbeddedExtractor(max_workers=2)
    direct = EmbeddedExtractor(isolate=False)
    paths = [
        corpus("invoice2data", "compare", case, f"{case}.pdf")
        for case in ["AmazonWebServices", "FlipkartInvoice", "SammyMaystoneLinesTest", "coolblue1", "free_fiber"]
    ]
    paths += [corpus("office", "docx", "blk-paras-and-tables.docx"), corpus("office", "xlsx", "date_1904.xlsx")]
    paths += sorted(p for p in (ROOT / "examples" / "documents").rglob("*") if p.is_file())
    for path in paths:
        data = path.read_bytes()
        try:
            expected = direct.extract(path.name, data).model_dump()
        except DocumentError as exc:
            with pytest.raises(DocumentError) as raised:
                isolated.extract(path.name, data)
            assert (raised.value.kind, raised.value.message) == (exc.kind, exc.message), path
        else:
            assert isolated.extract(path.name, data).model_dump() == expected, path


def test_passwords_reach_the_worker_and_no_message() -> None:
    encrypted = corpus("nasty-inputs", "encrypted", "pdfminer_aes-256-r6.pdf").read_bytes()
    opened = EmbeddedExtractor(passwords=[SecretStr("wrong"), SecretStr("usersecret")]).extract("x.pdf", encrypted)
    assert "Hello" in opened.text
    with pytest.raises(DocumentError) as raised:
        EmbeddedExtractor(passwords=[SecretStr("hunter2")]).extract("x.pdf", encrypted)
    assert raised.value.kind == ErrorKind.encrypted and "hunter2" not in raised.value.message


def test_ten_thousand_pages_are_refused_fast() -> None:
    data = corpus("nasty-inputs", "derived", "many-pages-10000_simple1.pdf").read_bytes()
    extractor = EmbeddedExtractor()
    extractor.extract("warm.txt", b"warm up")
    started = time.monotonic()
    with pytest.raises(DocumentError) as raised:
        extractor.extract("many.pdf", data)
    assert raised.value.kind == ErrorKind.too_large and "10000 pages" in raised.value.message
    assert time.monotonic() - started < 5  # about 20 ms here: the pages are counted, never read


def test_shutdown_leaves_no_process_and_fails_running_calls_cleanly() -> None:
    pool = ParsePool(max_workers=3, timeout_s=30, max_memory_mb=256)
    threads = [threading.Thread(target=pool.run, args=(probes.echo, b"x")) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome: list[BaseException] = []

    def busy() -> None:
        try:
            pool.run(probes.sleep_for, b"", 30)
        except DocumentError as exc:
            outcome.append(exc)

    sleeper = threading.Thread(target=busy)
    sleeper.start()
    time.sleep(0.3)
    pids = pool.worker_pids()
    assert 1 <= len(pids) <= 3
    started = time.monotonic()
    pool.shutdown()
    sleeper.join(5)
    assert time.monotonic() - started < 5
    assert all(gone(pid) for pid in pids)
    assert pool.worker_pids() == []
    assert outcome and outcome[0].kind == ErrorKind.internal and outcome[0].transient is True  # type: ignore[attr-defined]
    with pytest.raises(DocumentError, match="shut down"):
        pool.run(probes.echo, b"")


MAIN_SCRIPT = """
import json, multiprocessing.forkserver, sys
import prefect  # a main module that imports Prefect, as the docbatch CLI and prefect.engine do
from blocks.isolation import get_pool
from tests import parse_probes
pool = get_pool(max_workers=2, timeout_s=10, max_memory_mb=256, recycle_after=50)
facts = pool.run(parse_probes.process_facts, b"")
facts["pids"] = pool.worker_pids()
facts["forkserver"] = multiprocessing.forkserver._forkserver._forkserver_pid
print(json.dumps(facts))
"""


def test_workers_skip_the_parent_main_and_exit_with_it(tmp_path: Path) -> None:
    script = tmp_path / "batch_main.py"
    script.write_text(MAIN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # shutting the pool down at exit prints nothing
    facts = json.loads(done.stdout)
    assert facts["prefect"] is False and facts["main"] is None
    assert all(gone(pid) for pid in [*facts["pids"], facts["forkserver"]])


HUNG_SCRIPT = """
import json, multiprocessing.forkserver, threading, time
from blocks.isolation import ParsePool
from tests import parse_probes
pool = ParsePool(max_workers=1, timeout_s=600)
threading.Thread(target=pool.run, args=(parse_probes.sleep_for, b"", 600), daemon=True).start()
while not pool.worker_pids():
    time.sleep(0.01)
print(json.dumps([*pool.worker_pids(), multiprocessing.forkserver._forkserver._forkserver_pid]), flush=True)
time.sleep(600)
"""


def test_a_killed_batch_process_leaves_no_worker_behind(tmp_path: Path) -> None:
    script = tmp_path / "hung_main.py"
    script.write_text(HUNG_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    batch = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(batch.stdout.readline())  # type: ignore[union-attr]
        assert len(pids) == 2 and not gone(pids[0], within=0.2)
    finally:
        batch.kill()  # SIGKILL: no atexit, the worker is stuck in its parse
        batch.wait()
    assert all(gone(pid, within=5) for pid in pids)
