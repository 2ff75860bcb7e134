"""A scripted extractor block for flow tests: latency, failures and line items on demand.

It is a real `Extractor` block, saved to the test server and loaded by the flow by name,
exactly as a user's own extractor would be. It records how many documents were inside
`extract` at once, per tag, so tests can observe the concurrency bound.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import ClassVar

from pydantic import Field

from blocks.errors import DocumentError
from blocks.extractor import Extractor
from blocks.models import ErrorKind, Extraction

_LOCK = threading.Lock()
_IN_FLIGHT: Counter[str] = Counter()
PEAK: Counter[str] = Counter()
CALLS: Counter[tuple[str, str]] = Counter()


class ScriptedExtractor(Extractor):
    """Test double with real behaviour: sleeps, fails permanently or transiently as told."""

    _block_type_name: ClassVar[str] = "Test Scripted Extractor"
    _block_type_slug: ClassVar[str] = "test-scripted-extractor"

    tag: str
    latency_ms: float = 0.0
    permanent_failures: list[str] = Field(default_factory=list)
    transient_failures: dict[str, int] = Field(default_factory=dict, description="name -> failures before success")
    with_line_items: bool = False

    def extract(self, name: str, data: bytes) -> Extraction:
        with _LOCK:
            _IN_FLIGHT[self.tag] += 1
            PEAK[self.tag] = max(PEAK[self.tag], _IN_FLIGHT[self.tag])
            CALLS[(self.tag, name)] += 1
            call = CALLS[(self.tag, name)]
        try:
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000)
            if name in self.permanent_failures:
                raise DocumentError(ErrorKind.corrupt, f"{name} is scripted to be corrupt")
            if call <= self.transient_failures.get(name, 0):
                raise DocumentError(ErrorKind.backend, f"scripted HTTP 503 on call {call}", transient=True)
            text = data.decode("utf-8", "replace")
            fields = {"name": name, "length": len(data), "vendor": {"name": "ACME", "country": "DE"}}
            if self.with_line_items:
                fields["line_items"] = [
                    {"description": f"{name} item {i}", "quantity": i, "amount": 1.5 * i} for i in (1, 2)
                ]
            return Extraction(fields=fields, text=text, pages=1, media_type="text/plain")
        finally:
            with _LOCK:
                _IN_FLIGHT[self.tag] -= 1
