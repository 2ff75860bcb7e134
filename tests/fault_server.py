"""A scripted HTTP/1.1 server on 127.0.0.1 for tests of HTTP clients: real sockets, real faults.

    from tests.fault_server import Answer, fault_server  # noqa: F401 - a fixture, used by name

    def test_something(fault_server: FaultServer) -> None:
        fault_server.script("/v1/x", Answer(429, headers={"Retry-After": "1"}), Answer(200, body=b"{}"))
        send("POST", fault_server.url + "/v1/x", ...)
        assert len(fault_server.requests("/v1/x")) == 2

Each path plays its queue of `Answer`s in order, one per request, and repeats the last one
forever (so a single `Answer(500)` means "always 500"); an unscripted path answers 404. Besides
ordinary answers it can delay, drip a body slowly, reset the connection in the middle of a body
(RST after a partial body) or close the connection without answering. It records every request
(arrival time, method, path, headers, body, connection number), the number of TCP connections
accepted and the peak number of requests in flight. Keep-alive is on (HTTP/1.1), so connection
reuse by the client is visible in `connections`.

The stdlib `ThreadingHTTPServer` suffices: HTTP/2 needs TLS and ALPN, which the code under test
gets from httpx and h2, not from anything a test could check better here.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

import pytest


@dataclass(frozen=True)
class Seen:
    """One request as the server received it. `time` is `time.monotonic()` at arrival."""

    time: float
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names lower-cased
    body: bytes
    connection: int  # 1 for the first TCP connection accepted, 2 for the next, ...


Body = bytes | str | Callable[[Seen], bytes | str]
Headers = Mapping[str, str] | Callable[[Seen], Mapping[str, str]]


@dataclass(frozen=True)
class Answer:
    """What to do with one request.

    - ``answer``: wait `delay_s`, then send `status`, `headers` and `body`.
    - ``drip``: like ``answer`` but the body goes out one byte every `drip_s` seconds.
    - ``reset_mid_body``: send the status line, headers (Content-Length of the whole body) and
      half the body, then reset the connection (RST, SO_LINGER 0).
    - ``close``: read the request, then close the connection without a byte of answer.

    `body` and `headers` may be callables of the `Seen` request (to echo what came in).
    """

    status: int = 200
    body: Body = b""
    headers: Headers = field(default_factory=dict)
    delay_s: float = 0.0
    action: Literal["answer", "drip", "reset_mid_body", "close"] = "answer"
    drip_s: float = 0.0


_NOT_SCRIPTED = Answer(404, body=b"no script for this path")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # `FaultServer.stop` joins the handler threads itself
    request_queue_size = 128  # 32+ clients connect at once; the default backlog of 5 drops SYNs
    fault: FaultServer

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        # A client that gave up (timeout) makes writes fail: expected here, not worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 10  # an idle keep-alive connection ends by itself
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection_number = self.server.fault._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fault._closed(self.connection)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(
            time=time.monotonic(), method=self.command, path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body, connection=self.connection_number,
        )
        answer = self.server.fault._arrived(seen)
        try:
            self._play(answer, seen)
        except OSError:  # the client went away (its timeout): nothing to answer to
            self.close_connection = True
        finally:
            self.server.fault._answered()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve  # noqa: N815 - stdlib's naming

    def _play(self, answer: Answer, seen: Seen) -> None:
        if answer.delay_s:
            self.server.fault._stopping.wait(answer.delay_s)  # cut short by `stop`
        if answer.action == "close":
            self.close_connection = True
            return
        body = answer.body(seen) if callable(answer.body) else answer.body
        body = body.encode() if isinstance(body, str) else body
        headers = answer.headers(seen) if callable(answer.headers) else answer.headers
        self.send_response(answer.status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if answer.action == "reset_mid_body":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(0.05)  # let the partial body reach the client before the reset
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST: the client sees a connection reset mid-body
            self.close_connection = True
        elif answer.action == "drip":
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                if self.server.fault._stopping.wait(answer.drip_s):
                    break
        else:
            self.wfile.write(body)


class FaultServer:
    """The server and what it saw; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Answer]] = {}
        self._seen: list[Seen] = []
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._stopping = threading.Event()
        self.connections = 0
        self.peak_in_flight = 0
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fault = self
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-server", daemon=True)

    def script(self, path: str, *answers: Answer) -> None:
        """Answers for `path` (without query string), in order; the last one repeats."""
        if not answers:
            raise ValueError("script at least one answer")
        with self._lock:
            self._scripts[path] = list(answers)

    def requests(self, path: str | None = None) -> list[Seen]:
        """Requests received so far, for one path (query string ignored) or all."""
        with self._lock:
            return [s for s in self._seen if path is None or urlsplit(s.path).path == path]

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection, and wait for the handler threads."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked reading a keep-alive connection
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout=10)
        self._thread.join(timeout=10)

    # Called from handler threads.
    def _opened(self, sock: socket.socket) -> int:
        with self._lock:
            self.connections += 1
            self._sockets.add(sock)
            self._threads.append(threading.current_thread())
            return self.connections

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _arrived(self, seen: Seen) -> Answer:
        with self._lock:
            self._seen.append(seen)
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            queue = self._scripts.get(urlsplit(seen.path).path)
            if not queue:
                return _NOT_SCRIPTED
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _answered(self) -> None:
        with self._lock:
            self._in_flight -= 1


@pytest.fixture()
def fault_server() -> Iterator[FaultServer]:
    """A fresh `FaultServer` per test, stopped (and its threads joined) afterwards."""
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()
