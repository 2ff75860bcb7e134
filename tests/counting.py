"""A test extractor that writes down every document it extracts, across processes.

The crash test kills a `docbatch` process and runs it again; only a file outside the process
can tell which documents each run really extracted. Each call appends one line with
`O_APPEND`, which the kernel keeps whole even when a process is killed mid-batch.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import ClassVar

from pydantic import Field

from blocks.extractor import Extractor
from blocks.models import Extraction


class CountingExtractor(Extractor):
    """Sleeps, appends the document's name to `calls_file`, returns fields derived from the bytes."""

    _block_type_name: ClassVar[str] = "Test Counting Extractor"
    _block_type_slug: ClassVar[str] = "test-counting-extractor"

    calls_file: str = Field(description="File that receives one line per extracted document.")
    latency_ms: float = 0.0
    hold_file: str | None = Field(
        default=None,
        description="While this file lists the process (one `who` per line, as written to calls_file), it extracts nothing: "
        "a test freezes one run's processes and lets another's go on, whatever the machine's speed.",
    )

    def extract(self, name: str, data: bytes) -> Extraction:
        # Under a test's Prefect worker: which worker's process extracted it (tests/test_fanout.py).
        who = f"{os.environ['DOCBATCH_TEST_WORKER']}:{os.getpid()}" if "DOCBATCH_TEST_WORKER" in os.environ else str(os.getpid())
        while self.hold_file and who in _lines(self.hold_file):
            time.sleep(0.05)
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        fd = os.open(self.calls_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{who} {name}\n".encode())
        finally:
            os.close(fd)
        text = data.decode()
        return Extraction(
            fields={"invoice_number": text.split()[1], "digest": hashlib.md5(data).hexdigest()[:8], "total": float(len(data))},
            text=text,
            pages=1,
            media_type="text/plain",
        )


def _lines(path: str) -> set[str]:
    try:
        with open(path) as held:
            return {line.strip() for line in held}
    except FileNotFoundError:
        return set()
