"""blocks.http_client against a real scripted server (tests/fault_server.py): no mocked httpx.

Every test talks HTTP over 127.0.0.1 through the process's one shared client, as extractors do.
Delays are kept small; the whole file runs in well under 30 s.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from blocks import http_client
from blocks.errors import DocumentError
from blocks.http_client import HttpAuthError, HttpError, RetryPolicy, Timeouts, redact, send
from blocks.models import ErrorKind
from tests.fault_server import Answer, FaultServer, fault_server  # noqa: F401 - fixture used by name

ROOT = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02)
SECRET = "sk-test-SECRET123"


def _gaps(server: FaultServer, path: str) -> list[float]:
    times = [seen.time for seen in server.requests(path)]
    return [b - a for a, b in zip(times, times[1:])]


# --------------------------------------------------------------------------- Retry-After


def test_429_with_retry_after_seconds_waits_that_long(fault_server: FaultServer) -> None:
    fault_server.script("/v1/x", Answer(429, headers={"Retry-After": "1"}, body="slow down"), Answer(200, body='{"a": 1}'))

    answer = send("POST", fault_server.url + "/v1/x", service="t", json={"q": 1})

    assert answer.status == 200 and answer.json() == {"a": 1}
    assert answer.attempts == 2
    assert 1.0 <= answer.waited_s < 2.5
    (gap,) = _gaps(fault_server, "/v1/x")
    assert 0.98 <= gap < 2.5  # the server really saw the second request a second later


def test_retry_after_as_http_date(fault_server: FaultServer) -> None:
    # HTTP dates have whole seconds: "3 s from the last whole second" is 2 to 3 s from now.
    when = datetime.fromtimestamp(int(time.time()) + 3, timezone.utc)
    fault_server.script("/d", Answer(503, headers={"Retry-After": format_datetime(when, usegmt=True)}), Answer(200))

    answer = send("GET", fault_server.url + "/d", service="t")

    assert answer.attempts == 2
    assert 1.8 <= answer.waited_s <= 3.05
    assert _gaps(fault_server, "/d")[0] >= 1.75


def test_retry_after_parsing() -> None:
    parse = http_client._retry_after_s
    assert parse("120") == 120.0
    assert parse(" 0 ") == 0.0
    assert parse(format_datetime(datetime.now(timezone.utc) - timedelta(hours=1), usegmt=True)) == 0.0
    future = parse(format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True))
    assert future is not None and 58 <= future <= 60
    assert parse("Sunday, 06-Nov-94 08:49:37 GMT") == 0.0  # RFC 850 form, long past
    assert parse(None) is None and parse("soon") is None and parse("-5") is None


def test_retry_after_over_the_cap_stops_at_once(fault_server: FaultServer) -> None:
    fault_server.script("/cap", Answer(429, headers={"Retry-After": "300"}, body="quota exhausted"))
    started = time.monotonic()

    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/cap", service="svc", retry=RetryPolicy(max_retry_after_s=120))

    error = caught.value
    assert time.monotonic() - started < 1.0
    assert error.transient and error.kind is ErrorKind.backend
    assert error.attempts == 1 and error.retry_after_s == 300 and error.status == 429
    assert "asked to wait 300 s" in error.message and "quota exhausted" in error.message
    assert len(fault_server.requests("/cap")) == 1


def test_waiting_does_not_block_other_requests(fault_server: FaultServer) -> None:
    """Back-off sleeps happen in the event loop: a request sent meanwhile is answered at once."""
    fault_server.script("/wait", Answer(429, headers={"Retry-After": "1"}), Answer(200))
    fault_server.script("/ok", Answer(200, body="ok"))
    results: list[http_client.Response] = []
    waiting = threading.Thread(target=lambda: results.append(send("GET", fault_server.url + "/wait", service="t")))
    waiting.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert send("GET", fault_server.url + "/ok", service="t").text == "ok"
    assert time.monotonic() - started < 0.5
    waiting.join(5)
    assert results and results[0].attempts == 2


# --------------------------------------------------------------------------- back-off, statuses


def test_5xx_then_success_backs_off_within_the_policy(fault_server: FaultServer) -> None:
    fault_server.script("/b", Answer(500), Answer(503), Answer(200, body="fine"))
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=0.08)

    answer = send("POST", fault_server.url + "/b", service="t", content=b"abc", retry=policy)

    assert answer.status == 200 and answer.text == "fine" and answer.attempts == 3
    assert 0.0 <= answer.waited_s <= 0.05 + 0.08
    assert all(gap < 0.13 + 0.3 for gap in _gaps(fault_server, "/b"))
    assert [seen.body for seen in fault_server.requests("/b")] == [b"abc"] * 3  # the body is resent whole


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=30)
    for retry, cap in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        samples = [policy.backoff_s(retry) for _ in range(2000)]
        assert all(0.0 <= s <= cap for s in samples)
        # Full jitter spreads over the whole window (equal jitter would never go below cap/2).
        assert min(samples) < 0.05 * cap and max(samples) > 0.95 * cap


def test_always_500_gives_a_transient_error_after_all_attempts(fault_server: FaultServer) -> None:
    fault_server.script("/e", Answer(500, body="internal error\nat line 3"))

    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/e", service="svc at http://x", retry=FAST)

    error = caught.value
    assert isinstance(error, DocumentError) and not isinstance(error, HttpAuthError)
    assert error.transient and error.kind is ErrorKind.backend and error.status == 500
    assert error.attempts == FAST.max_attempts == len(fault_server.requests("/e"))
    assert "HTTP 500" in error.message and "3 attempts" in error.message
    assert error.message.startswith("svc at http://x answered HTTP 500: internal error at line 3")
    assert "\n" not in error.message


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 507])
def test_transient_statuses_are_retried(fault_server: FaultServer, status: int) -> None:
    fault_server.script("/s", Answer(status))
    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/s", service="t", retry=RetryPolicy(max_attempts=2, base_delay_s=0.01))
    assert caught.value.transient and caught.value.attempts == 2
    assert len(fault_server.requests("/s")) == 2


@pytest.mark.parametrize("status", [400, 404, 405, 409, 410, 413, 415, 422])
def test_permanent_statuses_are_not_retried(fault_server: FaultServer, status: int) -> None:
    fault_server.script("/p", Answer(status, body=f"nope {status}"))
    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/p", service="t", retry=FAST)
    assert not caught.value.transient and caught.value.kind is ErrorKind.backend
    assert caught.value.attempts == 1 and len(fault_server.requests("/p")) == 1


def test_422_is_permanent_with_the_body_excerpt(fault_server: FaultServer) -> None:
    body = '{"detail": "field total is missing"}'
    fault_server.script("/v", Answer(422, body=body, headers={"Content-Type": "application/json"}))

    with pytest.raises(HttpError) as caught:
        send("POST", fault_server.url + "/v", service="svc", json={}, retry=FAST)

    error = caught.value
    assert not error.transient and error.kind is ErrorKind.backend and error.status == 422
    assert error.message == 'svc answered HTTP 422: {"detail": "field total is missing"} (1 attempt, not retried)'
    assert error.body_excerpt == '{"detail": "field total is missing"}'
    assert len(fault_server.requests("/v")) == 1


def test_long_error_bodies_are_cut_to_one_line(fault_server: FaultServer) -> None:
    fault_server.script("/long", Answer(400, body="word\n" * 2000))
    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/long", service="t")
    assert len(caught.value.body_excerpt) <= 501 and caught.value.body_excerpt.endswith("…")
    assert "\n" not in caught.value.message and len(caught.value.message) < 600


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_is_an_auth_error_never_retried(fault_server: FaultServer, status: int) -> None:
    fault_server.script("/a", Answer(status, body="invalid api key"))

    with pytest.raises(HttpAuthError) as caught:
        send("GET", fault_server.url + "/a", service="svc at http://h", retry=FAST)

    error = caught.value
    assert isinstance(error, HttpError) and not error.transient and error.kind is ErrorKind.backend
    assert error.message == f"the API key was rejected by svc at http://h (HTTP {status}): invalid api key"
    assert error.attempts == 1 and len(fault_server.requests("/a")) == 1


def test_redirects_are_not_followed(fault_server: FaultServer) -> None:
    fault_server.script("/old", Answer(302, headers={"Location": "/new"}))
    fault_server.script("/new", Answer(200))
    with pytest.raises(HttpError) as caught:
        send("POST", fault_server.url + "/old", service="t", json={})
    assert not caught.value.transient and "redirect to /new" in caught.value.message
    assert fault_server.requests("/new") == []


# --------------------------------------------------------------------------- timeouts, broken connections


def test_read_timeout_is_retried_then_a_timeout_error(fault_server: FaultServer) -> None:
    fault_server.script("/slow", Answer(200, delay_s=1.0))
    started = time.monotonic()

    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/slow", service="t", timeouts=Timeouts(read_s=0.3),
             retry=RetryPolicy(max_attempts=2, base_delay_s=0.01))

    error = caught.value
    assert time.monotonic() - started < 1.5
    assert error.kind is ErrorKind.timeout and error.transient and error.status is None
    assert error.attempts == 2 and len(fault_server.requests("/slow")) == 2
    assert "read timeout of 0.3 s" in error.message and "2 attempts" in error.message


def test_a_slow_answer_then_a_fast_one_succeeds(fault_server: FaultServer) -> None:
    fault_server.script("/once", Answer(200, delay_s=1.0), Answer(200, body="quick"))
    answer = send("GET", fault_server.url + "/once", service="t", timeouts=Timeouts(read_s=0.3), retry=FAST)
    assert answer.text == "quick" and answer.attempts == 2


def test_a_dripping_answer_is_cut_by_the_attempt_cap(fault_server: FaultServer) -> None:
    """Each byte comes within the read timeout, so only the attempt's wall-clock cap stops it."""
    fault_server.script("/drip", Answer(200, body=b"x" * 40, action="drip", drip_s=0.05))
    started = time.monotonic()

    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/drip", service="t", timeouts=Timeouts(read_s=1.0, total_s=0.5),
             retry=RetryPolicy(max_attempts=1))

    assert time.monotonic() - started < 1.2
    assert caught.value.kind is ErrorKind.timeout and caught.value.transient
    assert "within 0.5 s" in caught.value.message


@pytest.mark.parametrize("action", ["reset_mid_body", "close"])
def test_a_broken_connection_is_retried(fault_server: FaultServer, action: str) -> None:
    broken = Answer(200, body=b"y" * 5000, action=action)  # type: ignore[arg-type]
    fault_server.script("/r", broken, Answer(200, body=b'{"ok": true}'))

    answer = send("POST", fault_server.url + "/r", service="t", json={"n": 1}, retry=FAST)

    assert answer.json() == {"ok": True} and answer.attempts == 2
    assert len(fault_server.requests("/r")) == 2


def test_a_connection_that_keeps_breaking_is_a_transient_backend_error(fault_server: FaultServer) -> None:
    fault_server.script("/rr", Answer(200, body=b"z" * 5000, action="reset_mid_body"))
    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/rr", service="t", retry=FAST)
    assert caught.value.transient and caught.value.kind is ErrorKind.backend and caught.value.attempts == 3
    assert "dropped the connection" in caught.value.message


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(HttpError) as caught:
        send("GET", f"http://127.0.0.1:{port}/", service="down", retry=FAST)
    assert caught.value.transient and caught.value.kind is ErrorKind.backend and caught.value.attempts == 3
    assert caught.value.message.startswith("down could not be connected to")


def test_malformed_json_raises_a_permanent_backend_error(fault_server: FaultServer) -> None:
    fault_server.script("/j", Answer(200, body=b'{"total": 12.5,', headers={"Content-Type": "application/json"}))
    answer = send("GET", fault_server.url + "/j", service="svc")
    assert answer.status == 200 and answer.text == '{"total": 12.5,'
    assert answer.headers["content-type"] == "application/json" and answer.http_version == "HTTP/1.1"

    with pytest.raises(HttpError) as caught:
        answer.json()

    error = caught.value
    assert not error.transient and error.kind is ErrorKind.backend and error.status == 200
    assert "svc answered HTTP 200 with a body that is not valid JSON" in error.message
    assert '{"total": 12.5,' in error.message


# --------------------------------------------------------------------------- secrets


def test_secrets_never_leak_into_errors_or_logs(fault_server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: httpx, httpcore, asyncio, ours
    auth = {"Authorization": f"Bearer {SECRET}"}

    def echo(seen):  # type: ignore[no-untyped-def]
        return {"X-Echo": seen.headers["authorization"]}

    fault_server.script("/echo400", Answer(400, headers=echo, body=lambda s: f"bad request from {s.headers['authorization']}"))
    fault_server.script("/echo500", Answer(500, headers=echo, body=lambda s: f"crash on {s.path} by {s.headers['authorization']}"))
    fault_server.script("/echo401", Answer(401, body=lambda s: f"key {s.headers['authorization']} is unknown"))
    url = f"{fault_server.url}/PATH?key={SECRET}"  # a key in the query string too (httpx logs URLs)

    errors: list[HttpError] = []
    for path in ("/echo400", "/echo500", "/echo401"):
        with pytest.raises(HttpError) as caught:
            send("POST", url.replace("/PATH", path), service=f"svc at {url}", headers=auth, json={"k": SECRET},
                 retry=FAST, secrets=[SECRET])
        errors.append(caught.value)

    assert all(SECRET in seen.headers["authorization"] for seen in fault_server.requests())  # it was sent
    for error in errors:
        texts = [str(error), repr(error), error.message, error.body_excerpt, error.service, repr(error.args),
                 repr(pickle.loads(pickle.dumps(error)).__dict__)]
        assert all(SECRET not in text for text in texts), texts
        assert error.__cause__ is None and error.__context__ is None  # no httpx exception chained
    assert "***" in errors[0].body_excerpt and "***" in errors[1].message
    records = [record.getMessage() for record in caplog.records]
    assert not [message for message in records if SECRET in message]
    assert SECRET not in caplog.text
    # The filter was needed: httpx logged the URL and httpcore the echoed header, both redacted.
    assert any(r.name == "httpx" and "key=***" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("httpcore") and "Bearer ***" in r.getMessage() for r in caplog.records)


def test_redact_covers_encoded_forms() -> None:
    secret = "a/b+c d=="
    text = f"raw {secret} path a%2Fb%2Bc%20d%3D%3D form a%2Fb%2Bc+d%3D%3D slash a/b%2Bc%20d%3D%3D json {'a/b+c d=='}"
    assert redact(text, [secret, ""]) == "raw *** path *** form *** slash *** json ***"
    assert redact("nothing here", []) == "nothing here"


def test_secret_in_an_httpx_exception_is_redacted() -> None:
    with pytest.raises(HttpError) as caught:
        send("GET", f"ftp://{SECRET}@example.invalid/x", service="t", secrets=[SECRET])
    assert SECRET not in str(caught.value) and not caught.value.transient
    assert caught.value.__context__ is None


# --------------------------------------------------------------------------- sharing, fork, exit


def test_32_threads_share_connections(fault_server: FaultServer) -> None:
    fault_server.script("/c", Answer(200, body=lambda s: s.body, delay_s=0.02))
    threads, per_thread = 32, 4
    barrier = threading.Barrier(threads)
    answers: list[http_client.Response] = []
    failures: list[BaseException] = []

    def work(n: int) -> None:
        barrier.wait()
        try:
            for i in range(per_thread):
                body = f"{n}-{i}".encode()
                answer = send("POST", fault_server.url + "/c", service="t", content=body)
                assert answer.content == body
                answers.append(answer)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)

    assert not failures
    assert len(answers) == threads * per_thread and all(a.attempts == 1 for a in answers)
    assert len(fault_server.requests("/c")) == threads * per_thread
    assert fault_server.peak_in_flight >= 8  # really concurrent
    assert fault_server.connections <= threads + 4  # ~1 per thread at most, reused for its later requests
    assert fault_server.connections < threads * per_thread / 2


def _send_in_child(url: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        answer = send("GET", url, service="child")
        runtime = http_client._runtime
        results.put(("ok", answer.status, os.getpid(), runtime.pid if runtime else None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", repr(exc), os.getpid(), None))
    # Leave without the interpreter's teardown: a fork of the test process inherits pytest's and
    # Prefect's threads and finalizers, whose cleanup in a child is not this module's to judge
    # (in the full suite it made the child exit 1 after a successful send).
    results.close()
    results.join_thread()
    os._exit(0)


def test_a_forked_child_gets_its_own_loop(fault_server: FaultServer) -> None:
    fault_server.script("/f", Answer(200))
    assert send("GET", fault_server.url + "/f", service="parent").status == 200
    parent_runtime = http_client._runtime
    assert parent_runtime is not None

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_send_in_child, args=(fault_server.url + "/f", results))
    child.start()
    outcome = results.get(timeout=20)
    child.join(20)

    assert outcome[0] == "ok" and outcome[1] == 200, outcome
    assert outcome[3] == outcome[2] != os.getpid()  # the child's client belongs to the child
    assert child.exitcode == 0
    # The parent's client is untouched and still reuses its own connection.
    assert send("GET", fault_server.url + "/f", service="parent").status == 200
    assert http_client._runtime is parent_runtime
    first, in_child, again = fault_server.requests("/f")
    assert again.connection == first.connection != in_child.connection


_EXIT_SCRIPT = """
import atexit, sys, threading, time
sys.path.insert(0, sys.argv[2])
outcome = []
# Registered before the module's own handler, so it runs after it (atexit is last in, first out):
# by then the shutdown must have ended the request in flight with a transient HttpError.
atexit.register(lambda: print("slow:", slow_thread.join(2) or outcome or "still waiting", flush=True))
from blocks.http_client import HttpError, send
url = sys.argv[1]
assert send("GET", url + "/ok", service="t").status == 200
def slow():
    try:
        send("GET", url + "/slow", service="t")
    except HttpError as error:
        outcome.append(f"{error.kind.value} transient={error.transient}")
slow_thread = threading.Thread(target=slow, daemon=True)
slow_thread.start()
time.sleep(0.3)
print("done", flush=True)
"""


def test_interpreter_exit_is_clean_even_with_a_request_in_flight(fault_server: FaultServer) -> None:
    fault_server.script("/ok", Answer(200))
    fault_server.script("/slow", Answer(200, delay_s=10))
    started = time.monotonic()

    run = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", _EXIT_SCRIPT, fault_server.url, str(ROOT)],
        capture_output=True, text=True, timeout=30,
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["done", "slow: ['backend transient=True']"]
    assert run.stderr == ""  # no traceback, no "Event loop is closed", no "Task was destroyed"
    assert time.monotonic() - started < 4  # the slow request did not hold the exit up
    assert len(fault_server.requests("/slow")) == 1


def test_an_oversized_answer_is_refused(fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_client, "MAX_RESPONSE_BYTES", 1000)
    fault_server.script("/big", Answer(200, body=b"b" * 5000))
    with pytest.raises(HttpError) as caught:
        send("GET", fault_server.url + "/big", service="t", retry=FAST)
    assert not caught.value.transient and "more than" in caught.value.message
    assert len(fault_server.requests("/big")) == 1


def test_shutdown_then_send_starts_a_new_client(fault_server: FaultServer) -> None:
    fault_server.script("/n", Answer(200, body="x" * 100))
    first = send("GET", fault_server.url + "/n", service="t")
    before = http_client._runtime
    http_client.shutdown()
    assert before is not None and not before.thread.is_alive() and before.loop.is_closed()
    assert send("GET", fault_server.url + "/n", service="t").status == 200
    assert http_client._runtime is not before
    assert "x" * 100 not in repr(first)  # the body stays out of reprs (and logs that print them)


def test_http_errors_pickle_with_their_attributes() -> None:
    error = HttpAuthError(ErrorKind.backend, "m", transient=False, service="s", status=401, attempts=1,
                          waited_s=0.0, retry_after_s=None, body_excerpt="e")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is HttpAuthError and copy.__dict__ == error.__dict__ and str(copy) == "m"
