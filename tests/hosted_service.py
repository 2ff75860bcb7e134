"""A small hosted extraction job API on 127.0.0.1 (create → upload → poll → fetch) a test scripts.

Two API shapes, the way hosted batch APIs come:

- ``/v1``: ``POST /v1/jobs`` takes a multipart form (the file under `Script.file_field`, any
  other fields are options) and answers ``{"job": {"id", "state": "queued"}}``;
  ``GET /v1/jobs/{id}`` answers ``{"job": {"id", "state", "error": {"message"}}}``;
  ``GET /v1/jobs/{id}/result`` answers ``{"result": {"fields": {…}}, "usage": {"input_tokens", "output_tokens"}}``.
- ``/v2`` needs a job created first: ``POST /v2/jobs`` (JSON body) answers ``{"id", "upload": {"token"}}``;
  ``PUT /v2/jobs/{id}/document?token=…`` takes the raw bytes and answers 204;
  ``GET /v2/jobs/{id}`` answers ``{"id", "status": "RUNNING" | "SUCCEEDED" | "FAILED", "output": {…}}``
  with the fields inside the final status answer.

A job's fields are the uploaded document's 'key: value' lines (numbers for values that read as
one). What the test controls: after how many polls a job finishes, whether it succeeds, fails
with a message, or never finishes, a result to give instead, a poll answered 429 with
Retry-After, and the headers every request must carry (401 otherwise). Every request is
recorded: method, path, headers, multipart field names and values, time.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from tests.local_http import serving


@dataclass
class Job:
    id: str
    fields: dict[str, Any]
    token: str = ""
    uploaded: bool = False
    polls: int = 0
    throttled: bool = False


@dataclass
class Script:
    outcome: Literal["succeed", "fail", "never"] = "succeed"
    polls_to_finish: int = 2  # the job is finished when polled for the K-th time
    error_message: str = "the document could not be processed"
    result: dict[str, Any] | None = None  # given instead of the fields read from the document
    throttle_poll: int | None = None  # this poll of each job (1-based) is answered 429 once
    retry_after: str = "1"
    required_headers: dict[str, str] = field(default_factory=dict)
    file_field: str = "file"
    requests: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def polls(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The status requests (429s included), in order."""
        return [r for r in self.requests if r["kind"] == "status" and (job_id is None or r["job"] == job_id)]

    def new_job(self, fields: dict[str, Any]) -> Job:
        with self.lock:
            job = Job(id=f"job-{next(self._ids):04d}", fields=fields, token=f"tok-{len(self.jobs)}")
            self.jobs[job.id] = job
        return job


def fields_of(document: bytes) -> dict[str, Any]:
    """'key: value' lines of a document as fields; values that read as a number become one."""
    out: dict[str, Any] = {}
    for line in document.decode("utf-8", "replace").splitlines():
        found = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.+?)\s*$", line)
        if not found:
            continue
        key, value = found.groups()
        try:
            out[key] = float(value.replace(",", ""))
        except ValueError:
            out[key] = value
    return out


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Multipart form fields: name -> (file name or None, bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return out


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, kind: str, **extra: Any) -> dict[str, Any]:
            entry = {"kind": kind, "method": self.command, "path": self.path, "headers": dict(self.headers),
                     "time": time.monotonic(), "job": None, **extra}
            with script.lock:
                script.requests.append(entry)
            return entry

        def _authorised(self) -> bool:
            for key, value in script.required_headers.items():
                if self.headers.get(key) != value:
                    self._send(401, {"error": {"message": "invalid API key"}})
                    return False
            return True

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _finished(self, job: Job) -> bool:
            return script.outcome != "never" and job.polls >= script.polls_to_finish

        def _fields(self, job: Job) -> dict[str, Any]:
            return script.result if script.result is not None else job.fields

        # ------------------------------------------------------------ requests

        def do_POST(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            body = self._body()
            if path == "/v1/jobs":
                form = parse_multipart(self.headers.get("Content-Type", ""), body)
                entry = self._record("upload", fields={k: (v[0], v[1].decode("utf-8", "replace")) for k, v in form.items()})
                if not self._authorised():
                    return
                if script.file_field not in form:
                    self._send(400, {"error": {"message": f"no file in field {script.file_field!r}"}})
                    return
                job = script.new_job(fields_of(form[script.file_field][1]))
                job.uploaded = True
                entry["job"] = job.id
                self._send(201, {"job": {"id": job.id, "state": "queued"}})
            elif path == "/v2/jobs":
                entry = self._record("create", json=json.loads(body or b"null"))
                if not self._authorised():
                    return
                job = script.new_job({})
                entry["job"] = job.id
                self._send(201, {"id": job.id, "upload": {"token": job.token}})
            else:
                self._record("unknown")
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_PUT(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            body = self._body()
            found = re.fullmatch(r"/v2/jobs/([^/]+)/document", parts.path)
            entry = self._record("upload", content_type=self.headers.get("Content-Type"), size=len(body),
                                 query=parse_qs(parts.query))
            if not self._authorised():
                return
            job = script.jobs.get(found.group(1)) if found else None
            if job is None or parse_qs(parts.query).get("token") != [job.token]:
                self._send(404, {"error": {"message": "no such job or wrong upload token"}})
                return
            entry["job"] = job.id
            job.fields = fields_of(body)
            job.uploaded = True
            self._send(204)

        def do_GET(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            status = re.fullmatch(r"/(v1|v2)/jobs/([^/]+)", path)
            result = re.fullmatch(r"/v1/jobs/([^/]+)/result", path)
            entry = self._record("status" if status else "result" if result else "unknown")
            if not self._authorised():
                return
            job = script.jobs.get((status or result).group(2 if status else 1)) if (status or result) else None
            if job is None or not job.uploaded:
                self._send(404, {"error": {"message": f"no job at {self.path}"}})
                return
            entry["job"] = job.id
            if result:
                if not self._finished(job) or script.outcome != "succeed":
                    self._send(409, {"error": {"message": "the job has no result"}})
                    return
                self._send(200, {"result": {"fields": self._fields(job)}, "usage": {"input_tokens": 120, "output_tokens": 45}})
                return
            job.polls += 1
            if script.throttle_poll == job.polls and not job.throttled:
                job.throttled = True
                job.polls -= 1  # a refused poll does not count
                entry["throttled"] = True
                self._send(429, {"error": {"message": "slow down"}}, headers={"Retry-After": script.retry_after})
                return
            if status.group(1) == "v1":
                state = "running" if not self._finished(job) else ("succeeded" if script.outcome == "succeed" else "failed")
                payload: dict[str, Any] = {"job": {"id": job.id, "state": state}}
                if state == "failed":
                    payload["job"]["error"] = {"code": "E_PARSE", "message": script.error_message}
            else:
                state = "RUNNING" if not self._finished(job) else ("SUCCEEDED" if script.outcome == "succeed" else "FAILED")
                payload = {"id": job.id, "status": state}
                if state == "SUCCEEDED":
                    payload["output"] = self._fields(job)
                    payload["billing"] = {"pages": 1}
                elif state == "FAILED":
                    payload["failure_reason"] = script.error_message
            self._send(200, payload)

    return Handler


@contextmanager
def hosted_service(script: Script) -> Iterator[str]:
    """Serve `script` on a free 127.0.0.1 port; yields the base URL ('http://127.0.0.1:PORT')."""
    with serving(_handler(script), name="hosted-test-service") as root:
        yield root
