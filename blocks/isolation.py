"""Killable, memory-capped parsing: a pool of worker processes that run one document at a time.

Parsers are third-party C and Python code (PDFium, lxml, openpyxl) that can hang inside a C
call, recurse or balloon. A thread cannot be stopped in a C call (Prefect's timeout cannot
either); a process can. `ParsePool.run(func, *args)` sends a module-level function (by
reference) and its arguments to an idle worker and returns what it returns, or raises:

- `DocumentError(timeout)` when the call passes `timeout_s`: the worker is killed and replaced;
- `DocumentError(too_large)` when the worker hits its address-space cap (`RLIMIT_AS`, set in the
  worker): a `MemoryError` inside it, or its death while its address space was near the cap;
- `DocumentError(internal)` when the worker dies otherwise (a segfault, a SIGKILL);
- the `DocumentError` the function raised, with its kind, message and `transient` flag;
- any other exception the function raised, rebuilt in this process (or, when it does not
  survive pickling, an exception of the same class name and message), for `Extractor.classify`.

Workers start from multiprocessing's forkserver (never a plain fork of this many-threaded
process) with this module preloaded, so a new worker is a fork of a small process that has
already imported the readers: it costs milliseconds, not an interpreter start-up. Workers never
import Prefect, nor the parent's `__main__` (the CLI script, `prefect.engine`), nor numpy.
A worker is retired after `recycle_after` documents (leaks in long batches) and replaced when it
dies. Document bytes go through a pipe, one document per busy worker; nothing is kept.

Pools are shared per process and per limits (`get_pool`) and shut down at interpreter exit.
"""

from __future__ import annotations

import atexit
import importlib
import io
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import connection, popen_forkserver, spawn, util
from multiprocessing.context import reduction, set_spawning_popen
from typing import Any

from blocks.errors import DocumentError
from blocks.models import ErrorKind

# Imported by the forkserver once, so every worker forked from it starts with them loaded.
# `blocks.parsing` brings the readers and their small dependencies; the others are the
# readers' heavy imports, done lazily in-process but worth sharing between workers.
# The extraction paths (XML, layout) run on every document and are small (about 4 MB of address
# space with lxml); dateparser, invoice2data and pypdf (about 30 MB) load in a worker only when a
# document needs them (a month name, a templates folder, the third reader of the template cascade).
_WARM_IMPORTS = (
    "blocks.parsing", "blocks.field_paths", "blocks.einvoice", "blocks.layout", "lxml.etree",
    "pypdfium2", "docx", "openpyxl", "bs4", "charset_normalizer",
)

# How often a busy worker's memory is sampled while its parse runs (only parses that take
# longer than this are sampled at all): a sample reads /proc/<pid>/status, about 20 µs.
_SAMPLE_S = 0.01
# A worker that dies while its address space was at least this share of the cap ran out of it
# (PDFium aborts when an allocation fails instead of returning an error).
_NEAR_CAP = 0.8
# How long a retiring worker gets to exit by itself after its pipe closes, before SIGKILL.
_EXIT_GRACE_S = 2.0

_CTX = multiprocessing.get_context("forkserver")


def default_workers() -> int:
    """The number of CPUs this process may run on, at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class ParsePool:
    """Up to `max_workers` worker processes, started on demand, safe to call from many threads.

    Args:
        max_workers: Most worker processes alive at once (default: the number of CPUs). A call
            made while all are busy waits for one; the wait does not count toward `timeout_s`.
        timeout_s: Wall-clock limit of one call, from sending the document to the answer.
        max_memory_mb: Address-space cap (`RLIMIT_AS`) of each worker, in MiB; None for none.
        recycle_after: A worker is replaced after this many calls.

    Example:
        ```python
        from blocks.isolation import ParsePool
        from blocks.parsing import parse_document

        pool = ParsePool(max_workers=2, timeout_s=30, max_memory_mb=256)
        try:
            extraction = pool.run(parse_document, "a.pdf", data, settings)
        finally:
            pool.shutdown()
        ```
    """

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        timeout_s: float = 60.0,
        max_memory_mb: int | None = 256,
        recycle_after: int = 200,
        ocr: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if recycle_after < 1:
            raise ValueError("recycle_after must be at least 1")
        self.max_workers = max_workers or default_workers()
        self.timeout_s = float(timeout_s)
        self.max_memory_mb = max_memory_mb
        self.recycle_after = recycle_after
        # what a stopped call's message names: the work and the extractor settings that limit it
        self._work, self._settings = ("OCR", ("ocr_timeout_s", "ocr_max_memory_mb")) if ocr else (
            "parsing", ("timeout_s", "max_memory_mb"))
        self._cap = max_memory_mb * 1024 * 1024 if max_memory_mb else None
        _configure_forkserver()
        self._lock = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._closed = False

    # -- public -----------------------------------------------------------------------------

    def run(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """`func(*args, **kwargs)` in a worker process; `bytes` arguments travel as raw frames."""
        message = _encode_call(func, args, kwargs)
        worker = self._acquire()
        keep = False
        try:
            reply = self._call(worker, message)
            keep = reply[0] != "memory"
            return _decode_reply(reply, self)
        finally:
            self._release(worker, keep)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers, idle or busy."""
        with self._lock:
            return sorted(w.pid for w in (*self._idle, *self._busy))

    def shutdown(self) -> None:
        """Stop every worker (idle ones exit, busy ones are killed) and wait until they are gone.

        Calls running in other threads fail with a transient `internal` error. The pool cannot
        be used afterwards.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
            self._lock.notify_all()
        for worker in busy:
            worker.signal(signal.SIGKILL)  # its calling thread sees it die, reaps it and returns it
        for worker in idle:
            worker.stop()
        deadline = time.monotonic() + _EXIT_GRACE_S
        with self._lock:
            while self._busy and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- workers ----------------------------------------------------------------------------

    def _acquire(self) -> _Worker:
        with self._lock:
            while True:
                if self._closed:
                    raise DocumentError(ErrorKind.internal, "the parsing pool was shut down", transient=True)
                if self._idle:
                    worker = self._idle.pop()
                    self._busy.add(worker)
                    return worker
                if len(self._busy) + self._starting < self.max_workers:
                    self._starting += 1
                    break
                self._lock.wait()
        try:
            worker = _Worker(self._cap)
        except BaseException:
            with self._lock:
                self._starting -= 1
                self._lock.notify_all()
            raise
        with self._lock:
            self._starting -= 1
            if self._closed:
                closed = True
            else:
                closed = False
                self._busy.add(worker)
        if closed:
            worker.stop()
            raise DocumentError(ErrorKind.internal, "the parsing pool was shut down", transient=True)
        return worker

    def _release(self, worker: _Worker, keep: bool) -> None:
        with self._lock:
            if keep and not self._closed and worker.alive and worker.calls < self.recycle_after:
                self._busy.discard(worker)
                self._idle.append(worker)
                self._lock.notify_all()
                return
        worker.stop()  # still counted as busy until it is gone: never more than max_workers alive
        with self._lock:
            self._busy.discard(worker)
            self._lock.notify_all()

    def _call(self, worker: _Worker, message: list[bytes]) -> tuple[Any, ...]:
        started = time.monotonic()
        try:
            for frame in message:
                worker.conn.send_bytes(frame)
        except OSError:
            pass  # the worker is gone; the wait below sees the end of its pipe and says why
        deadline = started + self.timeout_s
        peak = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                worker.kill()
                raise DocumentError(
                    ErrorKind.timeout, f"{self._work} took longer than {self.timeout_s:g} s and was stopped ({self._settings[0]})"
                )
            try:
                if worker.conn.poll(min(remaining, _SAMPLE_S)):
                    break
            except OSError:
                break
            peak = max(peak, worker.address_space())
        try:
            reply = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            raise self._death(worker, peak) from None
        worker.calls += 1
        worker.vm_peak = reply[-1]
        return reply

    def _death(self, worker: _Worker, peak: int) -> DocumentError:
        """The error for a worker that died during a call (it is reaped here)."""
        code = worker.wait()
        with self._lock:
            closed = self._closed
        if closed:
            return DocumentError(ErrorKind.internal, "the parsing pool was shut down", transient=True)
        if self._cap and peak >= _NEAR_CAP * self._cap:
            return self.too_large()
        if code is not None and code < 0:
            how = f"died (signal {-code}, {_signal_name(-code)})"
        else:
            how = f"exited unexpectedly (exit code {code})"
        used = f"; it used {peak / 2**20:.0f} MB of address space" if peak else ""
        return DocumentError(ErrorKind.internal, f"the parsing worker process {how} while reading this document{used}")

    def too_large(self) -> DocumentError:
        return DocumentError(
            ErrorKind.too_large,
            f"{self._work} needed more than {self.max_memory_mb} MB of memory and was stopped ({self._settings[1]})",
        )


class _Worker:
    """One worker process and the parent's end of its pipe; used by one thread at a time."""

    def __init__(self, cap: int | None) -> None:
        parent_end, child_end = _CTX.Pipe(duplex=True)
        self.process = _WorkerProcess(target=_worker_main, args=(child_end, cap), name="docbatch-parse", daemon=True)
        try:
            self.process.start()
        finally:
            child_end.close()
        self.conn = parent_end
        self.pid: int = self.process.pid  # type: ignore[assignment]
        self.calls = 0
        self.vm_peak = 0
        self.exitcode: int | None = None
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def alive(self) -> bool:
        return not self._stopped and self.process.is_alive()

    def address_space(self) -> int:
        """Bytes of address space the worker holds now, or the peak since its last call when higher."""
        try:
            with open(f"/proc/{self.pid}/status", "rb") as status:
                text = status.read()
        except OSError:
            return 0
        size = peak = 0
        for line in text.splitlines():
            if line.startswith(b"VmSize:"):
                size = int(line.split()[1]) * 1024
            elif line.startswith(b"VmPeak:"):
                peak = int(line.split()[1]) * 1024
        return max(size, peak if peak > self.vm_peak else 0)

    def signal(self, number: int) -> None:
        try:
            os.kill(self.pid, number)
        except OSError:
            pass

    def kill(self) -> None:
        """SIGKILL, then reap."""
        self.signal(signal.SIGKILL)
        self.stop()

    def wait(self) -> int | None:
        """Reap the (dead or dying) process; its exit code, negative for a signal."""
        self.stop()
        return self.exitcode

    def stop(self) -> None:
        """Close the pipe (an idle worker then exits), wait briefly, SIGKILL if needed, reap."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self.conn.close()
            self.process.join(_EXIT_GRACE_S)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join()
            self.exitcode = self.process.exitcode
            self.process.close()


class _Popen(popen_forkserver.Popen):
    """The forkserver's Popen without the parent's `__main__` in the child's preparation data.

    multiprocessing makes each child import the parent's main module again (`docbatch`'s
    console script, `prefect.engine` under a Prefect worker), which would load Prefect and
    the flows into every parsing worker. Otherwise a copy of CPython 3.11-3.13's `_launch`.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_name", None)
        prep_data.pop("init_main_from_path", None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        forkserver = popen_forkserver.forkserver
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _WorkerProcess(_CTX.Process):  # type: ignore[name-defined,misc]
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        if (3, 11) <= sys.version_info[:2] < (3, 14):
            return _Popen(process_obj)
        # Other versions: the stock Popen, correct, but each worker imports the parent's main module.
        return popen_forkserver.Popen(process_obj)


_forkserver_configured = False
_forkserver_lock = threading.Lock()


def _configure_forkserver() -> None:
    """Preload this module in the forkserver (before it starts; a no-op once it runs)."""
    global _forkserver_configured
    with _forkserver_lock:
        if not _forkserver_configured:
            _CTX.set_forkserver_preload([__name__])
            _forkserver_configured = True


# -- the call protocol ----------------------------------------------------------------------
#
# Parent → worker: a pickled (payload, number of raw frames) pair, then each `bytes` argument as
# a raw frame (sent without copying), where the payload holds (func, args, kwargs) with
# placeholders. The frame count is readable even when the payload cannot be unpickled in the
# worker, so the stream never desynchronises. Worker → parent: one pickled tuple whose last
# item is the worker's VmPeak:
#   ("ok", result, peak) | ("document_error", kind, message, transient, peak)
#   ("exception", pickled exception or None, class name, message, peak) | ("memory", peak)


class _Frame:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Frame, (self.index,))


def _encode_call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[bytes]:
    frames: list[Any] = []
    placed: list[Any] = []
    for arg in args:
        if isinstance(arg, (bytes, bytearray, memoryview)):
            placed.append(_Frame(len(frames)))
            frames.append(arg)
        else:
            placed.append(arg)
    payload = pickle.dumps((func, tuple(placed), kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    return [pickle.dumps((payload, len(frames)), protocol=pickle.HIGHEST_PROTOCOL), *frames]


def _decode_reply(reply: tuple[Any, ...], pool: ParsePool) -> Any:
    status = reply[0]
    if status == "ok":
        return reply[1]
    if status == "document_error":
        _, kind, message, transient, _ = reply
        raise DocumentError(ErrorKind(kind), message, transient=transient)
    if status == "memory":
        raise pool.too_large()
    _, blob, name, message, _ = reply
    error: BaseException | None = None
    if blob is not None:
        try:
            error = pickle.loads(blob)
        except Exception:  # noqa: BLE001 - a class this process cannot import: rebuilt below
            error = None
    if error is None:
        error = type(name, (Exception,), {"__module__": "blocks.isolation.worker"})(message)
    raise error


# -- the worker process ---------------------------------------------------------------------


def _worker_main(conn: connection.Connection, cap: int | None) -> None:
    import resource

    _prepare_process()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the batch's to handle, not ours
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an aborting parser leaves no core file
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    while True:
        try:
            header = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply = _serve(conn, header)
        except MemoryError:
            reply = None
        except (EOFError, OSError):  # the batch process went away in the middle of a call
            return
        del header
        try:
            # after a MemoryError: a fresh worker rather than a fragmented heap
            conn.send_bytes(reply if reply is not None else pickle.dumps(("memory", 0)))
        except (EOFError, OSError):
            return
        if reply is None:
            return
        del reply


def _serve(conn: connection.Connection, header: bytes) -> bytes:
    """One call: read its frames, run it, return the pickled reply (locals die with the frame)."""
    payload, count = pickle.loads(header)
    frames = [conn.recv_bytes() for _ in range(count)]
    try:
        func, args, kwargs = pickle.loads(payload)
        args = tuple(frames[a.index] if isinstance(a, _Frame) else a for a in args)
        del frames
        result = func(*args, **kwargs)
        return pickle.dumps(("ok", result, _vm_peak()), protocol=pickle.HIGHEST_PROTOCOL)
    except DocumentError as exc:
        return pickle.dumps(("document_error", exc.kind.value, exc.message, exc.transient, _vm_peak()))
    except MemoryError:
        raise
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        return pickle.dumps(("exception", _pickled(exc), type(exc).__name__, str(exc), _vm_peak()))


def _pickled(exc: BaseException) -> bytes | None:
    try:
        blob = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)
    except Exception:  # noqa: BLE001 - sent by class name and message instead
        return None
    return blob


def _vm_peak() -> int:
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def kill_on_parent_death() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """SIGKILL this worker when the forkserver exits, which it does when the batch process dies.

    A worker inherits the write end of the pipe by which the forkserver learns that the batch
    process is gone (so that it could start processes itself); closed here, or a worker stuck in
    a parse would keep the forkserver, and so itself, alive after a SIGKILL of the batch.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        try:
            os.close(alive_fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None  # type: ignore[union-attr]
    kill_on_parent_death()
    if os.getppid() == 1:  # the forkserver was already gone before prctl
        os._exit(1)


def _prepare_process() -> None:
    """Set up a parsing process: no numpy, the readers imported. Idempotent."""
    # openpyxl imports numpy when it is installed, only to recognise numpy numbers it writes.
    # Here that would cost 0.14 s and 50-115 MB of address space per worker (OpenBLAS threads
    # and buffers), all of it counted against the worker's RLIMIT_AS.
    if "numpy" not in sys.modules:
        sys.modules["numpy"] = None  # type: ignore[assignment]
    for name in _WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - imported again, with its error, when a parse needs it
            pass


def _in_forkserver() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


# -- shared pools ---------------------------------------------------------------------------

_POOLS: dict[tuple[Any, ...], ParsePool] = {}
_POOLS_LOCK = threading.Lock()


def get_pool(
    *, max_workers: int | None = None, timeout_s: float, max_memory_mb: int | None, recycle_after: int,
    ocr: bool = False,
) -> ParsePool:
    """The process-wide pool for these limits, created on first use (its workers on demand).

    OCR pools (`ocr`) are apart from parsing pools even with equal limits: their workers hold
    the OCR engine and numpy, which parsing workers must not carry.
    """
    key = (max_workers or default_workers(), float(timeout_s), max_memory_mb, recycle_after, ocr)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ParsePool(
                max_workers=key[0], timeout_s=timeout_s, max_memory_mb=max_memory_mb, recycle_after=recycle_after,
                ocr=ocr,
            )
        return pool


def shutdown_pools() -> None:
    """Shut every shared pool down (run at interpreter exit)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown()


def _forget_pools_after_fork() -> None:
    # A forked child must not talk to its parent's workers; it starts pools of its own.
    global _POOLS_LOCK
    _POOLS_LOCK = threading.Lock()
    _POOLS.clear()


atexit.register(shutdown_pools)
os.register_at_fork(after_in_child=_forget_pools_after_fork)

if _in_forkserver():
    _prepare_process()
