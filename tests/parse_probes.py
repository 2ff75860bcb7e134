"""Parse functions for tests/test_isolation.py, run inside parsing worker processes.

Module-level so a worker can import them by reference; each takes the document bytes first.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from blocks.errors import DocumentError
from blocks.models import ErrorKind


def echo(data: bytes, *args: object, **kwargs: object) -> dict[str, object]:
    return {"size": len(data), "head": bytes(data[:8]), "pid": os.getpid(), "args": args, "kwargs": kwargs}


def process_facts(data: bytes) -> dict[str, object]:
    """What a worker has imported and which limits it runs under."""
    import resource

    return {
        "pid": os.getpid(),
        "prefect": any(name == "prefect" or name.startswith("prefect.") for name in sys.modules),
        "numpy": sys.modules.get("numpy") is not None,
        "flows": "flows" in sys.modules or "tasks" in sys.modules,
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "main": getattr(sys.modules["__main__"], "__file__", None),
    }


def sleep_for(data: bytes, seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def allocate(data: bytes, megabytes: int) -> int:
    """Python-level allocation past the cap: a MemoryError in the worker."""
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


def allocate_then_abort(data: bytes, megabytes: int) -> int:
    """Like a C parser: take memory until malloc fails, then abort (PDFium does this)."""
    import ctypes

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    chunk = 8 * 1024 * 1024
    for _ in range(megabytes // 8):
        pointer = libc.malloc(chunk)
        if not pointer:
            time.sleep(0.2)  # the parent samples memory every 10 ms: let it see the peak even under load
            os.abort()
        ctypes.memset(pointer, 1, chunk)
    return 0


def kill_self(data: bytes) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault(data: bytes) -> None:
    import ctypes

    ctypes.string_at(0)


def raise_document_error(data: bytes, kind: str, message: str, transient: bool) -> None:
    raise DocumentError(ErrorKind(kind), message, transient=transient)


def raise_builtin(data: bytes, message: str) -> None:
    raise ValueError(message)


class Unpicklable(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("not picklable")


def raise_unpicklable(data: bytes) -> None:
    raise Unpicklable(7, "odd failure")


def deep_recursion(data: bytes) -> int:
    def down(n: int) -> int:
        return down(n + 1) + 1

    return down(0)
