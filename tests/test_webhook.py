"""The failure webhook: a real `prefect server` runs the automation, which POSTs to a server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ROOT, corpus
from tests.prefect_server import PrefectServer

pytestmark = pytest.mark.server


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Receiver.received.append({"path": self.path, "body": json.loads(body or b"{}")})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_batch_with_failures_calls_the_webhook_and_a_clean_one_does_not(tmp_path: Path) -> None:
    Receiver.received = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/docbatch"
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    clean.mkdir()
    broken.mkdir()
    shutil.copyfile(corpus("invoice2data", "compare", "Orlen", "Orlen.txt"), clean / "orlen.txt")
    shutil.copyfile(corpus("invoice2data", "compare", "Orlen", "Orlen.txt"), broken / "orlen.txt")
    (broken / "bad.pdf").write_bytes(b"%PDF-1.4\n" + b"x" * 300)
    cli = [sys.executable, "-m", "flows.cli"]
    try:
        with PrefectServer() as server:
            env = {**server.env, "PREFECT_LOGGING_COLORS": "false"}

            def docbatch(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run([*cli, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

            installed = docbatch("webhook", url, "--allow-private-urls")
            assert installed.returncode == 0, installed.stderr
            assert docbatch("run", str(clean), "-o", str(tmp_path / "out"), "--name", "clean batch").returncode == 0
            failing = docbatch("run", str(broken), "-o", str(tmp_path / "out"), "--name", "failing batch")
            assert failing.returncode == 0, failing.stderr
            deadline = time.monotonic() + 90
            while not Receiver.received and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(3)  # room for a wrong second call (the clean batch) to arrive too
    finally:
        receiver.shutdown()
    assert len(Receiver.received) == 1, Receiver.received
    call = Receiver.received[0]
    assert call["path"] == "/hooks/docbatch"
    body = call["body"]
    assert body["event"] == "docbatch.batch.completed" and body["batch_name"] == "failing batch"
    assert body["status"] == "partially_failed" and body["totals"]["failed"] == 1 and body["totals"]["succeeded"] == 1
    assert body["report"].endswith("report.json")
