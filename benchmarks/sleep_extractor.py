"""The benchmarks' extractor block for fanned-out batches: sleeps per document, like a remote service.

A module of its own so every worker's flow run can import it (`DOCBATCH_BLOCK_MODULES`).
"""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from blocks.extractor import Extractor
from blocks.models import Extraction


class ScaleSleepExtractor(Extractor):
    """Sleeps `latency_ms` per document and returns a tiny record."""

    _block_type_name: ClassVar[str] = "Scale Sleep Extractor"
    _block_type_slug: ClassVar[str] = "scale-sleep-extractor"
    _description: ClassVar[str] = "Benchmark only: sleeps per document and returns fixed fields."

    latency_ms: float = Field(default=50.0, ge=0)

    def extract(self, name: str, data: bytes) -> Extraction:
        time.sleep(self.latency_ms / 1000.0)
        return Extraction(fields={"document": name, "size": len(data), "total": 42.5}, text="", pages=1, media_type="text/plain")
