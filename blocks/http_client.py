"""The one HTTP road every model or hosted extractor takes: a shared client, retries, clean errors.

Extractors are synchronous (`extract(name, data)`) and run in up to 64 worker threads of one
process. Giving each thread (or each call) its own client would mean a TCP and TLS handshake per
document and no HTTP/2 multiplexing; sharing one *sync* httpx client across threads works but
cannot multiplex HTTP/2 streams. So this module keeps one `httpx.AsyncClient(http2=True)` per
process on one background event-loop thread, and `send()` is a blocking facade that submits the
request there and waits: all task threads share one connection pool (one HTTP/2 connection per
host when the server offers it, kept-alive HTTP/1.1 connections otherwise), and back-off sleeps
are `asyncio.sleep`s that cost no thread.

What it promises callers (see `send`):
- retries only what may pass (429, 408, 5xx, connection failures, timeouts), honouring
  `Retry-After`, with capped exponential back-off and full jitter otherwise;
- every failure is a `DocumentError` (`HttpError`, `HttpAuthError`), so the batch machinery
  classifies it without parsing messages; httpx exceptions never escape, not even chained;
- secrets passed in `secrets=` never appear in a message, an excerpt, or a log record of httpx,
  httpcore or hpack while the request runs;
- no call blocks forever: each attempt has a wall-clock cap and the whole call a deadline;
- a forked child builds its own loop and client (never touches the parent's sockets), and the
  interpreter exits without "Event loop is closed" or "Task was destroyed" noise.

Example:
    ```python
    from blocks.http_client import RetryPolicy, Timeouts, send

    answer = send(
        "POST", "http://127.0.0.1:8080/v1/chat/completions",
        service="openai-compatible-extractor/local-llama at http://127.0.0.1:8080",
        headers={"Authorization": f"Bearer {key}"}, json=payload,
        timeouts=Timeouts(read_s=300), secrets=[key],
    )
    fields = answer.json()        # HttpError (backend, permanent) when the body is not JSON
    ```
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import http.cookiejar
import json as _json
import logging
import math
import os
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
from pydantic import BaseModel, ConfigDict, Field

from blocks.errors import DocumentError
from blocks.models import ErrorKind

__all__ = [
    "HttpAuthError",
    "HttpError",
    "Response",
    "RetryPolicy",
    "Timeouts",
    "redact",
    "send",
    "shutdown",
]

log = logging.getLogger(__name__)

# One connection per extraction slot: max_concurrency goes up to 64 task threads per process, and
# each holds at most one request in flight, so 64 HTTP/1.1 connections never make a thread wait
# for the pool (over HTTP/2 they share one connection per host). httpcore closes idle connections
# to other hosts when the pool is full, so several services in one process fit in the same 64.
MAX_CONNECTIONS = 64
# Below the 5 s keep-alive of uvicorn (which serves most self-hosted model APIs) and of httpx's
# own default: a connection the server is about to close is dropped by us first, instead of
# racing it and losing the request to "Server disconnected" (which would then cost a retry).
KEEPALIVE_EXPIRY_S = 4.0
# A 2xx body larger than this is refused (permanent `backend` error) rather than held in memory:
# extraction answers are JSON of some kilobytes; 64 MiB leaves room for base64 page images.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Error bodies are read this far for the excerpt; the rest is dropped with the connection.
ERROR_BODY_BYTES = 64 * 1024
EXCERPT_CHARS = 500
REDACTED = "***"
USER_AGENT = "docbatch (httpx)"
# Extra time the blocking facade grants the event loop beyond the computed deadline, before it
# gives up on the future (only ever reached if the loop thread itself is stuck).
_DEADLINE_SLACK_S = 10.0
_SHUTDOWN_WAIT_S = 5.0

_TRANSIENT_STATUSES = frozenset({408, 429})  # plus every 5xx
_AUTH_STATUSES = frozenset({401, 403})


# --------------------------------------------------------------------------- settings


class Timeouts(BaseModel):
    """Timeouts of one attempt, in seconds (httpx's four phases, plus a wall-clock cap).

    httpx's read timeout bounds the wait for *each* chunk, not the whole answer: a server
    dripping one byte a minute would never trip it. `total_s` caps an attempt end to end; it
    defaults to the sum of the four phases.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_s: float = Field(default=10.0, gt=0, description="TCP connect and TLS handshake.")
    read_s: float = Field(
        default=120.0, gt=0,
        description="Wait for the next bytes of the answer; a model reading a long document "
        "answers only when done, so this is the one to raise per call.",
    )
    write_s: float = Field(default=30.0, gt=0, description="Wait for the socket to accept the next chunk of the body.")
    pool_s: float = Field(default=30.0, gt=0, description="Wait for a free connection in the shared pool.")
    total_s: float | None = Field(
        default=None, gt=0, description="Wall-clock cap of one attempt; None: the sum of the above.",
    )

    @property
    def attempt_s(self) -> float:
        """Wall-clock cap of one attempt."""
        return self.total_s if self.total_s is not None else self.connect_s + self.read_s + self.write_s + self.pool_s

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_s, read=self.read_s, write=self.write_s, pool=self.pool_s)


class RetryPolicy(BaseModel):
    """How often and how long to retry a transient failure.

    Back-off is exponential with *full* jitter, `uniform(0, min(max_delay_s, base_delay_s * 2**n))`
    for the n-th retry: when a rate limit hits 64 threads at once, equal or no jitter makes them
    come back together and hit it again; full jitter spreads them over the whole window (the
    AWS Architecture Blog's "Exponential Backoff and Jitter" measured it as the least total work).
    A `Retry-After` from the server replaces the back-off: the server knows when it will cope.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=1, le=20, description="Attempts in all, the first included.")
    base_delay_s: float = Field(default=0.5, ge=0)
    max_delay_s: float = Field(default=30.0, ge=0)
    max_retry_after_s: float = Field(
        default=120.0, ge=0,
        description="Longest Retry-After honoured; a longer one ends retrying (transient error: try the document later).",
    )

    def backoff_s(self, retry: int) -> float:
        """Seconds to sleep before retry number `retry` (0 for the first retry), full jitter."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(retry, 60))
        return random.uniform(0.0, ceiling)


DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRY = RetryPolicy()


# --------------------------------------------------------------------------- errors


class HttpError(DocumentError):
    """A request to a remote service failed; `kind`/`transient` say what the batch should do.

    - `kind=timeout, transient=True`: the last attempt timed out (connect, read, write, pool or
      the attempt's wall-clock cap) and no attempts were left.
    - `kind=backend, transient=True`: the last attempt got 429, 408 or 5xx, or lost its
      connection, and no attempts were left; or the server asked (`Retry-After`) for a longer
      wait than `RetryPolicy.max_retry_after_s` (then `retry_after_s` says how long).
    - `kind=backend, transient=False`: a permanent answer (400, 404, 409, 413, 422, any other
      4xx, a redirect, which is not followed), a 2xx body over `MAX_RESPONSE_BYTES`, a body that
      is not JSON (`Response.json()`), or a request httpx cannot send (bad URL or scheme).

    `status` is the last HTTP status (None when no answer came), `attempts` how many requests
    were made, `waited_s` the back-off slept between them, `body_excerpt` the answer's text
    (secrets redacted, one line, at most ~500 characters) and `service` the caller's name for
    the service. Pickles with all of them (Prefect stores a failed task's exception).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        transient: bool = False,
        service: str = "",
        status: int | None = None,
        attempts: int = 1,
        waited_s: float = 0.0,
        retry_after_s: float | None = None,
        body_excerpt: str = "",
    ) -> None:
        super().__init__(kind, message, transient=transient)
        self.service = service
        self.status = status
        self.attempts = attempts
        self.waited_s = waited_s
        self.retry_after_s = retry_after_s
        self.body_excerpt = body_excerpt

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Exception pickling would call cls(message) alone; rebuild from kind and message, then
        # restore every attribute.
        return type(self), (self.kind, self.message), self.__dict__.copy()


class HttpAuthError(HttpError):
    """The service rejected the credentials (HTTP 401 or 403): `backend`, permanent, never retried.

    A class of its own because every further document of the batch would fail the same way:
    the batch layer stops early on it instead of burning the whole list against a bad key.
    """

    stops_batch = True


# --------------------------------------------------------------------------- redaction


def _secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue  # replacing "" would put *** between every character
        forms.update({
            secret,
            quote(secret, safe=""),      # in a query string or path, percent-encoded
            quote(secret),               # the same with '/' kept
            quote_plus(secret),          # form encoding (space as '+')
            _json.dumps(secret)[1:-1],   # inside a JSON string ('/' or '"' escaped)
        })
    return tuple(sorted(forms, key=len, reverse=True))  # longest first: no half-replaced form


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (and its URL-encoded and JSON-escaped forms) replaced by ``***``.

    Empty secrets are ignored. A very short secret redacts every occurrence of those
    characters: that is the price of never showing it.
    """
    for form in _secret_forms(secrets):
        text = text.replace(form, REDACTED)
    return text


class _SecretsInFlight(logging.Filter):
    """Redacts the secrets of requests in flight from httpx, httpcore and hpack log records.

    httpx logs each request's URL at INFO (an API key in the query string), httpcore logs the
    response headers at DEBUG, and hpack (HTTP/2) logs header values it encodes and decodes,
    `x-api-key` included. Filters run in the thread that logs (the loop thread here), before any
    handler sees the record, so a record is clean wherever it goes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._forms: tuple[str, ...] = ()  # replaced whole, read without the lock

    def add(self, secrets: Sequence[str]) -> None:
        with self._lock:
            for secret in secrets:
                self._counts[secret] = self._counts.get(secret, 0) + 1
            self._forms = _secret_forms(self._counts)

    def remove(self, secrets: Sequence[str]) -> None:
        with self._lock:
            for secret in secrets:
                left = self._counts.get(secret, 0) - 1
                if left > 0:
                    self._counts[secret] = left
                else:
                    self._counts.pop(secret, None)
            self._forms = _secret_forms(self._counts)

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def filter(self, record: logging.LogRecord) -> bool:
        forms = self._forms
        if forms:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record is the handler's business, not a reason to fail a request
                return True
            clean = message
            for form in forms:
                clean = clean.replace(form, REDACTED)
            if clean != message:
                record.msg, record.args = clean, None
        return True


_log_filter = _SecretsInFlight()
# A filter on a logger only sees records logged on that very logger, not on its children.
for _name in ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
              "httpcore.socks", "hpack.hpack", "hpack.table"):
    logging.getLogger(_name).addFilter(_log_filter)


def _one_line(text: str, secrets: Sequence[str]) -> str:
    # Redact, collapse whitespace (one-line messages), redact again: collapsing could rejoin a
    # secret that contained whitespace.
    return redact(" ".join(redact(text, secrets).split()), secrets)


def _excerpt(text: str, secrets: Sequence[str]) -> str:
    # Truncated after redaction, so a cut can never leave part of a secret behind.
    clean = _one_line(text, secrets)
    if not clean:
        return "(empty body)"
    return clean if len(clean) <= EXCERPT_CHARS else clean[:EXCERPT_CHARS] + "…"


def _decode(content: bytes, encoding: str) -> str:
    try:
        return content.decode(encoding, errors="replace")
    except LookupError:  # an unknown charset in Content-Type
        return content.decode("utf-8", errors="replace")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------- response


@dataclass(frozen=True)
class Response:
    """A 2xx answer, read whole. Redirects are not followed (see `send`), so never a 3xx.

    `headers` has lower-case names, repeated headers joined with ", ". `attempts` and `waited_s`
    (back-off slept) say what it cost, e.g. for a result's warnings; `http_version` is
    ``HTTP/1.1`` or ``HTTP/2``.
    """

    status: int
    headers: dict[str, str] = field(repr=False)
    content: bytes = field(repr=False)
    attempts: int
    waited_s: float
    http_version: str
    service: str
    encoding: str = "utf-8"
    _secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def text(self) -> str:
        """The body decoded with the Content-Type charset (UTF-8 if none), bad bytes replaced."""
        return _decode(self.content, self.encoding)

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises `HttpError` (kind `backend`, permanent, `status` set) when it is not JSON, with
        the parser's reason and an excerpt: a server answering 2xx with something else is
        broken, and trying again would get the same.
        """
        try:
            return _json.loads(self.content)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            reason = _one_line(str(exc), self._secrets)
        excerpt = _excerpt(self.text, self._secrets)
        message = _one_line(
            f"{self.service} answered HTTP {self.status} with a body that is not valid JSON ({reason}): {excerpt}",
            self._secrets,
        )
        raise HttpError(
            ErrorKind.backend, message, transient=False, service=self.service, status=self.status,
            attempts=self.attempts, waited_s=self.waited_s, body_excerpt=excerpt,
        )


# --------------------------------------------------------------------------- the loop thread


class _Runtime:
    """One event loop on one daemon thread, and the process's `AsyncClient` living in it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="docbatch-http-loop", daemon=True)
        self.thread.start()
        self.client: httpx.AsyncClient = asyncio.run_coroutine_threadsafe(self._make_client(), self.loop).result()

    @staticmethod
    async def _make_client() -> httpx.AsyncClient:
        # Built inside the loop so every async primitive belongs to it.
        return httpx.AsyncClient(
            http2=True,
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ),
            timeout=DEFAULT_TIMEOUTS.to_httpx(),
            # A redirect of an API call is a configuration error to show, not to follow: 301/302
            # turn a POST into a body-less GET, and the request (API key included) would go to
            # whatever the Location names.
            follow_redirects=False,
            # A cookie jar that keeps nothing: one client serves every service and API key of the
            # process, and a session cookie set for one caller must not ride along with another's.
            cookies=http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])),
            headers={"User-Agent": USER_AGENT},
            # trust_env stays on: HTTPS_PROXY/NO_PROXY and SSL_CERT_FILE are how a site reaches
            # its model servers.
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                leftovers = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    self.loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())  # getaddrinfo threads
            finally:
                self.loop.close()

    async def _aclose(self) -> None:
        # Cancel requests still in flight (their callers get a transient HttpError), wait for
        # them to unwind, then close the pool's connections: no task is left to be "destroyed".
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.client.aclose()

    def close(self) -> None:
        if not self.thread.is_alive() or threading.current_thread() is self.thread:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), self.loop).result(_SHUTDOWN_WAIT_S)
        except Exception:  # noqa: BLE001 - best effort at exit: a half-closed pool is dropped anyway
            log.debug("closing the HTTP client did not finish cleanly", exc_info=False)
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # the loop closed meanwhile
            return
        self.thread.join(_SHUTDOWN_WAIT_S)


_lock = threading.Lock()
_runtime: _Runtime | None = None
# Runtimes inherited through fork(): never used, never closed (closing would act on sockets the
# parent still uses), and kept referenced so their garbage collection warns about nothing.
_inherited: list[_Runtime] = []
_exiting = False


def _runtime_for_this_process() -> _Runtime | None:
    """The loop and client of this process, started on first use; None once the interpreter exits."""
    global _runtime
    runtime = _runtime
    if runtime is not None and runtime.pid == os.getpid() and runtime.thread.is_alive():
        return runtime
    with _lock:
        if _exiting:
            return None
        runtime = _runtime
        if runtime is not None and runtime.pid != os.getpid():  # forked without our hook (should not happen)
            _inherited.append(runtime)
            runtime = None
        if runtime is None or not runtime.thread.is_alive():
            runtime = _runtime = _Runtime()
        return runtime


def _after_fork_in_child() -> None:
    # Only the forking thread survives a fork: the parent's loop thread is gone, and a lock
    # another thread held at that moment stays held forever. Start from scratch.
    global _lock, _runtime
    _lock = threading.Lock()
    if _runtime is not None:
        _inherited.append(_runtime)
        _runtime = None
    _log_filter.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def shutdown() -> None:
    """Close this process's client and stop its loop thread; the next `send` starts new ones.

    Runs by itself at interpreter exit (atexit runs while daemon threads still run, after
    non-daemon threads were joined): requests still in flight are cancelled and their callers
    get a transient `HttpError`.
    """
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None and runtime.pid == os.getpid():
        runtime.close()


def _shutdown_at_exit() -> None:
    global _exiting
    _exiting = True
    shutdown()


atexit.register(_shutdown_at_exit)


# --------------------------------------------------------------------------- one call


@dataclass
class _Call:
    method: str
    service: str
    timeouts: Timeouts
    retry: RetryPolicy
    secrets: tuple[str, ...]


@dataclass
class _Failure:
    """What went wrong in one attempt; `what` continues a sentence that starts with the service."""

    what: str
    transient: bool
    timeout: bool = False
    auth: bool = False
    status: int | None = None
    retry_after_s: float | None = None
    excerpt: str = ""


def _retry_after_s(value: str | None) -> float | None:
    """Seconds a `Retry-After` value asks for (RFC 9110 §10.2.3: delay-seconds or an HTTP-date).

    None when absent or unreadable (the back-off applies then); a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)  # delay-seconds is 1*DIGIT; a decimal is accepted too
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime format has no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _exception_failure(exc: Exception, call: _Call) -> _Failure:
    detail = _one_line(str(exc), call.secrets)
    detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    t = call.timeouts
    if isinstance(exc, httpx.ConnectTimeout):
        return _Failure(f"could not be connected to within the connect timeout of {t.connect_s:g} s", True, timeout=True)
    if isinstance(exc, httpx.ReadTimeout):
        return _Failure(f"sent nothing for the read timeout of {t.read_s:g} s", True, timeout=True)
    if isinstance(exc, httpx.WriteTimeout):
        return _Failure(f"accepted no more of the request for the write timeout of {t.write_s:g} s", True, timeout=True)
    if isinstance(exc, httpx.PoolTimeout):
        return _Failure(
            f"got no free connection from this process's pool within {t.pool_s:g} s (all {MAX_CONNECTIONS} busy)",
            True, timeout=True,
        )
    if isinstance(exc, httpx.ConnectError):
        return _Failure(f"could not be connected to ({detail})", True)
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.CloseError, httpx.RemoteProtocolError)):
        return _Failure(f"dropped the connection before a complete answer ({detail})", True)
    if isinstance(exc, httpx.ProxyError):
        return _Failure(f"could not be reached through the proxy ({detail})", True)
    # Whatever is left fails the same way again.
    if isinstance(exc, httpx.DecodingError):
        return _Failure(f"answered with a body httpx could not decode ({detail})", False)
    return _Failure(f"was not called: httpx cannot send this request ({detail})", False)  # bad URL or scheme


def _status_failure(response: httpx.Response, body: bytes, call: _Call) -> _Failure:
    status = response.status_code
    excerpt = _excerpt(_decode(body, response.charset_encoding or "utf-8"), call.secrets)
    if status in _AUTH_STATUSES:
        return _Failure(f"(HTTP {status})", False, auth=True, status=status, excerpt=excerpt)
    if status in _TRANSIENT_STATUSES or status >= 500:
        retry_after = _retry_after_s(response.headers.get("retry-after"))
        return _Failure(
            f"answered HTTP {status}: {excerpt}", True, status=status, retry_after_s=retry_after, excerpt=excerpt,
        )
    if 300 <= status < 400:
        location = _one_line(response.headers.get("location", "(no Location)"), call.secrets)
        return _Failure(
            f"answered HTTP {status}, a redirect to {location} (redirects are not followed: use the final URL): {excerpt}",
            False, status=status, excerpt=excerpt,
        )
    return _Failure(f"answered HTTP {status}: {excerpt}", False, status=status, excerpt=excerpt)


async def _read(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the (decoded) body; False when there was more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], False
    return b"".join(chunks), True


async def _attempt(client: httpx.AsyncClient, request: httpx.Request, call: _Call) -> Response | _Failure:
    try:
        async with asyncio.timeout(call.timeouts.attempt_s):
            response = await client.send(request, stream=True)
            try:
                ok = 200 <= response.status_code < 300
                body, complete = await _read(response, MAX_RESPONSE_BYTES if ok else ERROR_BODY_BYTES)
            finally:
                await response.aclose()
    except httpx.TimeoutException as exc:
        return _exception_failure(exc, call)
    except TimeoutError:
        cap = call.timeouts.attempt_s
        return _Failure(f"sent no complete answer within {cap:g} s (the attempt's cap)", True, timeout=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _exception_failure(exc, call)
    if not ok:
        return _status_failure(response, body, call)
    if not complete:
        return _Failure(
            f"answered HTTP {response.status_code} with more than {MAX_RESPONSE_BYTES // 2**20} MiB, which is refused",
            False, status=response.status_code,
        )
    return Response(
        status=response.status_code, headers=dict(response.headers.items()), content=body,
        attempts=0, waited_s=0.0, http_version=response.http_version, service=call.service,
        encoding=response.charset_encoding or "utf-8", _secrets=call.secrets,
    )


def _final_error(failure: _Failure, attempts: int, waited_s: float, call: _Call, *, over_cap: bool = False) -> HttpError:
    s = call.service
    if failure.auth:
        message = f"the API key was rejected by {s} {failure.what}: {failure.excerpt}"
    elif over_cap:
        message = (
            f"{s} answered HTTP {failure.status} and asked to wait {failure.retry_after_s:.0f} s before retrying, "
            f"longer than the {call.retry.max_retry_after_s:g} s this client waits: {failure.excerpt} "
            f"(gave up after {_plural(attempts, 'attempt')})"
        )
    elif failure.transient:
        message = f"{s} {failure.what} (gave up after {_plural(attempts, 'attempt')}, {waited_s:.1f} s of back-off)"
    elif attempts == 0:
        message = f"{s} {failure.what}"
    else:
        message = f"{s} {failure.what} ({_plural(attempts, 'attempt')}, not retried)"
    error_type = HttpAuthError if failure.auth else HttpError
    return error_type(
        ErrorKind.timeout if failure.timeout else ErrorKind.backend,
        _one_line(message, call.secrets),
        transient=failure.transient,
        service=s,
        status=failure.status,
        attempts=attempts,
        waited_s=waited_s,
        retry_after_s=failure.retry_after_s,
        body_excerpt=failure.excerpt,
    )


async def _send_with_retries(client: httpx.AsyncClient, request: httpx.Request, call: _Call) -> Response:
    attempts = 0
    waited = 0.0
    while True:
        attempts += 1
        outcome = await _attempt(client, request, call)
        if isinstance(outcome, Response):
            return dataclasses.replace(outcome, attempts=attempts, waited_s=waited)
        failure = outcome
        if not failure.transient or attempts >= call.retry.max_attempts:
            break
        if failure.retry_after_s is not None:
            if failure.retry_after_s > call.retry.max_retry_after_s:
                # Raised outside any `except` block, like every error here: no httpx exception
                # rides along as __context__ into tracebacks.
                raise _final_error(failure, attempts, waited, call, over_cap=True)
            delay = failure.retry_after_s
        else:
            delay = call.retry.backoff_s(attempts - 1)
        log.debug("%s %s; retrying in %.2f s (attempt %d of %d)", call.service, _one_line(failure.what, call.secrets),
                  delay, attempts + 1, call.retry.max_attempts)
        await asyncio.sleep(delay)
        waited += delay  # the planned wait: asyncio may wake up to a clock tick early
    raise _final_error(failure, attempts, waited, call)


def send(
    method: str,
    url: str,
    *,
    service: str,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
    files: Any = None,
    data: Mapping[str, Any] | None = None,
    timeouts: Timeouts | None = None,
    retry: RetryPolicy | None = None,
    secrets: Sequence[str] = (),
) -> Response:
    """Send one request through the process's shared client, retrying transient failures.

    Blocking and thread-safe: call it from any number of threads. `service` names the service
    in messages ("openai-compatible-extractor/local-llama at http://127.0.0.1:8080"). Bodies are
    `json`, `content` (bytes), `data` (a form) and/or `files` (multipart, as httpx takes them;
    give bytes, or seekable files, since a retry sends the body again). Retries resend the same
    request, POST included: extraction calls are idempotent (same document, same answer) and
    at worst cost a second bill.

    Returns a `Response` for 2xx. Redirects are not followed: a 3xx raises a permanent
    `HttpError` naming the Location. Raises `HttpAuthError` for 401/403, `HttpError` for
    everything else (see its docstring for kinds), a transient one too when the client is shut
    down during the call or the interpreter exits; `RuntimeError` if called from the loop
    thread itself (a programming error), `TypeError` for `content` that is not bytes. Never
    blocks longer than the attempts' caps plus the longest waits between them.
    """
    call = _Call(
        method=method.upper(),
        service="",
        timeouts=timeouts or DEFAULT_TIMEOUTS,
        retry=retry or DEFAULT_RETRY,
        secrets=tuple(secret for secret in secrets if secret),
    )
    call.service = _one_line(service, call.secrets) or "the service"
    runtime = _runtime_for_this_process()
    if runtime is None:
        raise HttpError(
            ErrorKind.backend, f"{call.service} was not called: the interpreter is exiting", transient=True,
            service=call.service, attempts=0,
        )
    if threading.current_thread() is runtime.thread:
        raise RuntimeError("send() blocks: it cannot be called from the HTTP client's own event loop")
    request = _build_request(runtime.client, url, call, headers=headers, json=json, content=content, files=files, data=data)

    r = call.retry
    deadline = (
        r.max_attempts * call.timeouts.attempt_s
        + (r.max_attempts - 1) * max(r.max_delay_s, r.max_retry_after_s)
        + _DEADLINE_SLACK_S
    )
    what = "was not asked: the HTTP client was shut down (interpreter exit or shutdown())"
    timed_out = False
    _log_filter.add(call.secrets)
    try:
        coroutine = _send_with_retries(runtime.client, request, call)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, runtime.loop)
        except RuntimeError:  # the loop closed between the lookup and now (a concurrent shutdown)
            coroutine.close()
            future = None
        if future is not None:
            try:
                return future.result(timeout=deadline)
            except concurrent.futures.TimeoutError:
                future.cancel()
                what = f"sent no answer within the call's deadline of {deadline:.0f} s (the event loop may be stuck)"
                timed_out = True
            except concurrent.futures.CancelledError:
                what = "was not answered: the HTTP client was shut down (interpreter exit or shutdown()) during the call"
            except DocumentError:
                raise
            except BaseException:  # KeyboardInterrupt in the waiting thread: stop the request too
                future.cancel()
                raise
    finally:
        _log_filter.remove(call.secrets)
    # Raised here, outside the `except` blocks: nothing rides along as __context__.
    raise HttpError(
        ErrorKind.timeout if timed_out else ErrorKind.backend,
        _one_line(f"{call.service} {what}", call.secrets),
        transient=True, service=call.service, attempts=0,
    )


def _build_request(client: httpx.AsyncClient, url: str, call: _Call, **body: Any) -> httpx.Request:
    """The request, built in the calling thread: JSON and form encoding stay off the loop thread.

    Built once and sent on every attempt: bytes, JSON and form bodies replay as they are, and
    httpx seeks file objects of a multipart body back to 0.
    """
    content = body.pop("content")
    if content is not None and not isinstance(content, (bytes, bytearray, memoryview)):
        raise TypeError("content must be bytes: a stream could not be sent again on a retry")
    try:
        return client.build_request(
            call.method, url, content=bytes(content) if content is not None else None,
            timeout=call.timeouts.to_httpx(), **body,
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        failure = _exception_failure(exc, call)
    raise _final_error(failure, 0, 0.0, call)
