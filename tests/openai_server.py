"""A small OpenAI-protocol server on 127.0.0.1 whose behaviour a test scripts.

It answers `POST /v1/chat/completions` like a model that reads 'key: value' lines: for each
property of the JSON Schema in the request (sent in the system message, as the extractor
does), it looks for a line 'property: value' in the document and answers one JSON object.
What the test controls: which structured-output forms the server accepts (the others get the
HTTP 500 llama-cpp-python's server gives for `json_schema`), replies to give instead of the
model's (invalid JSON, schema-invalid JSON), the API key it wants, and a delay per request.
It records every request and the peak number in flight.

A real HTTP server over a real socket: the extractor's httpx client, retries and headers are
exercised as they are against vLLM or llama.cpp.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.local_http import serving

FORMS = ("json_schema", "json_object_schema", "json_object", "none")


def form_of(body: dict[str, Any]) -> str:
    rf = body.get("response_format")
    if not rf:
        return "none"
    if rf.get("type") == "json_schema":
        return "json_schema"
    return "json_object_schema" if "schema" in rf else "json_object"


@dataclass
class Script:
    accepted_forms: tuple[str, ...] = FORMS
    replies: list[str] = field(default_factory=list)  # consumed first, one per accepted request
    api_key: str | None = None
    delay_s: float = 0.0
    answer: Callable[[dict[str, Any]], str] | None = None  # replaces model_answer (after `replies`)
    list_lines: bool = False  # model_answer fills arrays from 'name: value' lines too
    context_chars: int | None = None  # longer messages get vLLM's HTTP 400 context_length_exceeded
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def forms_seen(self) -> list[str]:
        return [r["form"] for r in self.requests]


def _text(content: Any) -> str:
    """A message's text, also when it is a list of parts (text and image_url, as vision requests send)."""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")


def images_of(body: dict[str, Any]) -> list[str]:
    """The data URLs of the images a request's user messages carry."""
    return [
        part["image_url"]["url"] for m in body["messages"] if m["role"] == "user" and not isinstance(m["content"], str)
        for part in m["content"] if part.get("type") == "image_url"
    ]


def pages_seen(body: dict[str, Any]) -> list[int]:
    """The page numbers ('--- page N ---', continued pieces too) in a request's user messages."""
    document = "\n".join(_text(m["content"]) for m in body["messages"] if m["role"] == "user")
    return [int(n) for n in re.findall(r"^--- page (\d+)(?: \(continued\))? ---$", document, re.MULTILINE)]


def model_answer(body: dict[str, Any], lists: bool = False) -> str:
    """What the 'model' answers: schema properties found as 'name: value' lines in the document.

    `lists`: an array gets one item per 'name: value' line (a JSON object where the value is one,
    else the string); otherwise arrays are empty."""
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    schema = json.loads(system.rsplit("JSON Schema:\n", 1)[1])
    document = "\n".join(_text(m["content"]) for m in body["messages"] if m["role"] == "user")
    out: dict[str, Any] = {}
    for name, spec in schema["properties"].items():
        kinds = spec.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "array" in kinds:
            items = re.findall(rf"^{re.escape(name)}\s*:\s*(.+?)\s*$", document, re.MULTILINE | re.IGNORECASE) if lists else []
            out[name] = [json.loads(v) if v.startswith("{") else v for v in items]
            continue
        found = re.search(rf"^{re.escape(name)}\s*:\s*(.+?)\s*$", document, re.MULTILINE | re.IGNORECASE)
        if not found:
            out[name] = None
        elif "number" in kinds or "integer" in kinds:
            number = float(found.group(1).replace(",", ""))
            out[name] = int(number) if "integer" in kinds else number
        else:
            out[name] = found.group(1)
    return json.dumps(out)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
            form = form_of(body)
            with script.lock:
                script.in_flight += 1
                script.peak_in_flight = max(script.peak_in_flight, script.in_flight)
                script.requests.append({"form": form, "body": body, "headers": dict(self.headers), "time": time.monotonic()})
            try:
                if script.delay_s:
                    time.sleep(script.delay_s)
                if script.api_key is not None and self.headers.get("Authorization") != f"Bearer {script.api_key}":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                    return
                if form not in script.accepted_forms:
                    self._send(500, {"error": {"message": f"response_format of type {form} is not supported", "type": "server_error"}})
                    return
                chars = sum(len(m["content"]) for m in body["messages"])
                if script.context_chars is not None and chars > script.context_chars:
                    self._send(400, {"error": {
                        "message": f"This model's maximum context length is {script.context_chars} tokens. However, you requested "
                        f"{chars} tokens. Please reduce the length of the messages.",
                        "type": "invalid_request_error", "code": "context_length_exceeded"}})
                    return
                with script.lock:
                    content = script.replies.pop(0) if script.replies else None
                if content is None:
                    content = script.answer(body) if script.answer else model_answer(body, lists=script.list_lines)
                prompt_chars = sum(len(_text(m["content"])) for m in body["messages"])
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": len(content) // 4 + 1,
                              "total_tokens": prompt_chars // 4 + len(content) // 4 + 2},
                })
            finally:
                with script.lock:
                    script.in_flight -= 1

    return Handler


@contextmanager
def openai_server(script: Script) -> Iterator[str]:
    """Serve `script` on a free 127.0.0.1 port; yields the base URL ('http://127.0.0.1:PORT/v1')."""
    with serving(_handler(script), name="openai-test-server") as root:
        yield f"{root}/v1"
