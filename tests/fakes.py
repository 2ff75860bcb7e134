"""Test blocks: a scripted extractor (latency, failures, line items on demand) and a folder that changes under a batch.

The scripted extractor is a real `Extractor` block, saved to the test server and loaded by the flow by name,
exactly as a user's own extractor would be. It records how many documents were inside
`extract` at once, per tag, so tests can observe the concurrency bound.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

from prefect.context import TaskRunContext
from pydantic import Field

from blocks.errors import DocumentError
from blocks.extractor import Extractor
from blocks.local import LocalDirectory
from blocks.models import DocumentRef, ErrorKind, Extraction

_LOCK = threading.Lock()
_IN_FLIGHT: Counter[str] = Counter()
PEAK: Counter[str] = Counter()
CALLS: Counter[tuple[str, str]] = Counter()
TASK_RUN: dict[tuple[str, str], str] = {}  # (tag, document) -> the task run that extracted it last


class ScriptedExtractor(Extractor):
    """Test double with real behaviour: sleeps, fails permanently or transiently as told."""

    _block_type_name: ClassVar[str] = "Test Scripted Extractor"
    _block_type_slug: ClassVar[str] = "test-scripted-extractor"

    tag: str
    latency_ms: float = 0.0
    slow_ms: dict[str, float] = Field(default_factory=dict, description="name -> latency replacing latency_ms")
    permanent_failures: list[str] = Field(default_factory=list)
    transient_failures: dict[str, int] = Field(default_factory=dict, description="name -> failures before success")
    with_line_items: bool = False

    def extract(self, name: str, data: bytes) -> Extraction:
        with _LOCK:
            _IN_FLIGHT[self.tag] += 1
            PEAK[self.tag] = max(PEAK[self.tag], _IN_FLIGHT[self.tag])
            CALLS[(self.tag, name)] += 1
            call = CALLS[(self.tag, name)]
            context = TaskRunContext.get()
            TASK_RUN[(self.tag, name)] = str(context.task_run.id) if context else ""
        try:
            latency_ms = self.slow_ms.get(name, self.latency_ms)
            if latency_ms:
                time.sleep(latency_ms / 1000)
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


# --- A folder that changes under the batch --------------------------------------------------

_CAP_DAC_BYPASS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
_CAPABILITY_V3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@contextlib.contextmanager
def unprivileged_thread() -> Iterator[None]:
    """File permissions apply to this thread even when running as root (Linux).

    Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the calling thread's effective set (they
    stay permitted, so they come back on exit). Capabilities are per thread on Linux: the rest of
    the process, the Prefect API client included, keeps them. A non-root user has neither
    capability, so for one this changes nothing.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAPABILITY_V3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    saved = data[0].effective
    if not saved & _CAP_DAC_BYPASS:
        yield
        return
    data[0].effective = saved & ~_CAP_DAC_BYPASS
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


class ChangingDirectory(LocalDirectory):
    """A local folder whose files change right after the listing, read as an unprivileged worker.

    The listing and the read are LocalDirectory's own. Once the listing has yielded its last
    reference, the named files are deleted, appended to, touched (mtime only) or made unreadable
    (mode 000). Reads run in `unprivileged_thread()`, so mode 000 denies them as it would for
    an ordinary user, also when the tests run as root.
    """

    _block_type_name: ClassVar[str] = "Test Changing Directory"
    _block_type_slug: ClassVar[str] = "test-changing-directory"

    deleted: list[str] = Field(default_factory=list)
    appended: list[str] = Field(default_factory=list)
    touched: list[str] = Field(default_factory=list)
    denied: list[str] = Field(default_factory=list)

    def iter_documents(self) -> Iterator[DocumentRef]:
        yield from super().iter_documents()
        for name in self.deleted:
            (self.root / name).unlink(missing_ok=True)  # a second listing finds it gone already
        for name in self.appended:
            with (self.root / name).open("ab") as handle:
                handle.write(b"\nLine added after the listing.\n")
        for name in self.touched:
            info = (self.root / name).stat()
            os.utime(self.root / name, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))
        for name in self.denied:
            os.chmod(self.root / name, 0)

    def read(self, ref: DocumentRef, max_bytes: int) -> tuple[bytes, list[str]]:
        with unprivileged_thread():
            return super().read(ref, max_bytes)
