"""A hosted document-extraction "batch API" used by saving a block: create → upload → poll → fetch.

Hosted extraction services mostly follow one pattern: (optionally) create a job, upload the
file (multipart or raw bytes), poll the job's status until it is done or failed, then fetch the
JSON result. Everything that differs between them (paths, the multipart field name, where in
each JSON answer the job id, the state, the error message and the fields are) is a setting of
this block, so a new service needs a saved block, not code.

The steps of one document:

1. `create_path` (optional): ``POST`` with `create_fields` as a JSON object; every value of its
   JSON answer becomes a placeholder for the later paths and form fields (``{id}``, ``{data.id}``).
2. `upload_path`: ``POST``/``PUT`` of the file, as a multipart form (`file_field` plus
   `form_fields`) or as the raw bytes (`form_fields` then go into the query string).
3. The job id is read at `job_id_path` from the upload answer, else from the create answer.
   An upload answer already in a done state skips polling (synchronous services).
4. `status_path` is polled (``GET``): first after `poll_interval_s`, then each wait
   `poll_backoff` times longer, up to `max_poll_interval_s`, until the value at `status_field`
   is one of `done_states` or `failed_states` (compared case-insensitively; a non-string value
   as its JSON text, e.g. ``true``). ANY OTHER VALUE MEANS "STILL RUNNING": the block keeps
   polling until `timeout_s`, so a service's own words for it ("queued", "processing",
   "PENDING") need no setting.
5. `result_path` (``GET``; empty: the final status answer) holds the fields at `result_field`
   (a JSON object, or a string holding one), validated against the batch's schema.

Placeholders, ``{name}`` (``{{``/``}}`` for literal braces): paths take ``{file_name}``, the
status and result paths ``{job_id}``, and with a create step every path after it takes the
create answer's values (URL-quoted). `form_fields` and `create_fields` values take
``{schema}`` (the batch's JSON Schema as JSON text), ``{prompt}`` and ``{file_name}``, and
`form_fields` the create answer's values too. A `create_fields` value that is exactly
``{schema}`` is sent as the schema object itself.

Each request goes through `blocks.http_client.send`: its retries, back-off and Retry-After
apply per request (a 429 on a poll waits and polls again), and the API key and header values
never appear in a message. A rejected key (401/403) stops the batch.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import Field, SecretStr, field_validator

from blocks.errors import DocumentError
from blocks.schema_extractor import SchemaExtractor
from blocks.models import ErrorKind, Extraction

RAW_OUTPUT_CHARS = 2000
EXCERPT_CHARS = 300
ERROR_MESSAGE_CHARS = 1000
BATCH_PLACEHOLDERS = frozenset({"schema", "prompt", "file_name"})
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")
_MISSING = object()


class HostedExtractor(SchemaExtractor):
    """A hosted extraction service's job API (create, upload, poll, fetch), configured by a saved block.

    Example, for a service that takes the file and the schema in one multipart POST, answers
    ``{"job": {"id": "…", "status": "queued"}}``, reports ``GET /v1/jobs/{id}`` as
    ``{"job": {"status": "succeeded" | "failed", "error": {"message": "…"}}}`` and serves
    ``GET /v1/jobs/{id}/result`` as ``{"data": {…fields…}, "usage": {"input_tokens": …}}``:

        ```python
        from blocks import HostedExtractor
        HostedExtractor(
            base_url="https://api.extract.example.com",
            api_key="sk-…",                                   # sent as 'Authorization: Bearer sk-…'
            upload_path="/v1/jobs",
            file_field="file",
            form_fields={"schema": "{schema}", "instructions": "{prompt}"},
            job_id_path="job.id",
            status_path="/v1/jobs/{job_id}",
            status_field="job.status",
            done_states=["succeeded"],
            failed_states=["failed", "cancelled"],
            error_field="job.error.message",
            poll_interval_s=2, poll_backoff=1.5, max_poll_interval_s=15, timeout_s=600,
            result_path="/v1/jobs/{job_id}/result",
            result_field="data",
            usage_in_field="usage.input_tokens", usage_out_field="usage.output_tokens",
            target_schema="invoice",
        ).save("acme-extract")
        ```

    then ``docbatch run ./inbox --extractor hosted-extractor/acme-extract`` (``--schema`` and
    ``--prompt`` replace the block's own). A service with an ``X-Api-Key: <key>`` header:
    ``auth_header="X-Api-Key", auth_scheme=""``. One that wants a job created first
    (``POST /jobs`` → ``{"id": …}``) and the bytes ``PUT`` to it:
    ``create_path="/jobs", upload_path="/jobs/{id}/file", upload_method="PUT", upload_mode="raw",
    job_id_path="id"``.
    """

    _block_type_name: ClassVar[str] = "Hosted Extractor"
    _block_type_slug: ClassVar[str] = "hosted-extractor"
    _description: ClassVar[str] = (
        "Use a hosted document-extraction job API (create, upload, poll status, fetch the JSON result) by "
        "describing its paths and JSON fields: no code. The result is validated against the batch's schema."
    )

    # -- the service and its credentials
    base_url: str = Field(description="The service's base URL, e.g. https://api.extract.example.com; every path below is relative to it.")
    api_key: SecretStr | None = Field(default=None, description="The API key, sent in the auth header with every request; empty: none.")
    auth_header: str = Field(default="Authorization", description="Header that carries the API key, e.g. 'Authorization' or 'X-Api-Key'.")
    auth_scheme: str = Field(default="Bearer", description="Written before the key ('Bearer' gives 'Bearer <key>'); empty: the key alone.")
    extra_headers: dict[str, SecretStr] = Field(default_factory=dict, description="Headers sent with every request (values are kept secret).")

    # -- create (optional) and upload
    create_path: str = Field(
        default="",
        description="Optional: path POSTed (JSON body: create fields) to create a job before the upload; the values of its "
        "JSON answer become placeholders for the later paths, e.g. upload path '/v1/jobs/{id}/file'. Empty: no create step.",
    )
    create_fields: dict[str, str] = Field(
        default_factory=dict,
        description="JSON body of the create request; values may use {schema}, {prompt}, {file_name} "
        "(a value of exactly '{schema}' is sent as the schema object).",
    )
    upload_path: str = Field(description="Path the document is sent to, e.g. '/v1/jobs'; may use {file_name} and the create answer's values.")
    upload_method: Literal["POST", "PUT"] = Field(default="POST", description="HTTP method of the upload.")
    upload_mode: Literal["multipart", "raw"] = Field(
        default="multipart",
        description="'multipart': a form with the file and the form fields; 'raw': the bytes as the body with their "
        "Content-Type (form fields then go into the query string).",
    )
    file_field: str = Field(default="file", description="Multipart field name of the file.")
    form_fields: dict[str, str] = Field(
        default_factory=dict,
        description="Extra upload fields; values may use {schema} (the batch's JSON Schema as JSON text), {prompt}, "
        "{file_name} and the create answer's values.",
    )
    job_id_path: str = Field(
        default="id",
        description="JSON path of the job id in the upload answer (else the create answer): dotted, list items by "
        "number, e.g. 'data.job.id' or 'items.0.id'.",
    )

    # -- polling
    status_path: str = Field(description="Path polled with GET for the job's state, e.g. '/v1/jobs/{job_id}'.")
    status_field: str = Field(default="status", description="JSON path of the job's state in the status answer, e.g. 'status' or 'job.state'.")
    done_states: list[str] = Field(
        default_factory=lambda: ["succeeded", "completed", "done"],
        description="States that mean the result is ready (case-insensitive). Any state neither done nor failed keeps polling.",
    )
    failed_states: list[str] = Field(
        default_factory=lambda: ["failed", "error", "cancelled"],
        description="States that mean the job failed: the document fails with the service's error message.",
    )
    error_field: str = Field(default="error", description="JSON path of the service's error message in a failed job's status answer.")
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600, description="Seconds before the first poll.")
    poll_backoff: float = Field(default=1.5, ge=1, le=10, description="Each wait between polls is this many times the previous one.")
    max_poll_interval_s: float = Field(default=15.0, gt=0, le=3600, description="Longest wait between two polls.")
    timeout_s: float = Field(
        default=600.0, gt=0, le=86_400,
        description="Seconds one document may take, upload to result; a job still running then fails as a (retryable) timeout.",
    )

    # -- the result
    result_path: str = Field(
        default="", description="Path fetched with GET for the result, e.g. '/v1/jobs/{job_id}/result'; empty: the result is in the final status answer."
    )
    result_field: str = Field(default="", description="JSON path of the fields object in the result, e.g. 'data.fields'; empty: the whole body.")
    usage_in_field: str = Field(default="", description="Optional JSON path (in the result, else the final status answer) of input tokens billed.")
    usage_out_field: str = Field(default="", description="Optional JSON path (in the result, else the final status answer) of output tokens billed.")
    target_schema: str = Field(
        default="invoice", title="Schema",
        description="'invoice', 'receipt', a JSON Schema file path, a pasted JSON Schema, or 'extraction-schema/NAME'. "
        "A batch's own schema setting replaces it.",
    )
    prompt: str = Field(default="", description="Instructions for the service ({prompt} placeholder). A batch's prompt replaces it.")
    validate_output: bool = Field(default=True, description="Validate the fields against the schema; invalid ones fail the document as invalid_output.")
    request_timeout_s: float = Field(default=120.0, gt=0, le=3600, description="Seconds one request may take to answer.")
    max_attempts: int = Field(default=4, ge=1, le=10, description="Attempts per request on 429, 5xx and network errors (the first included).")

    @field_validator("base_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip().rstrip("/")

    # ------------------------------------------------------------------ the batch's configuration

    def check(self) -> None:
        if not self.base_url.startswith(("http://", "https://")) or not urlsplit(self.base_url).hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {self.base_url!r}")
        for name in ("upload_path", "status_path", "job_id_path", "status_field"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} is empty: the block cannot follow a job without it")
        for name in ("create_path", "upload_path", "status_path", "result_path"):
            if getattr(self, name).strip().lower().startswith(("http://", "https://")):
                raise ValueError(f"{name} must be a path under base_url (e.g. '/v1/jobs'), not a URL")
        for name in ("job_id_path", "status_field", "error_field", "result_field", "usage_in_field", "usage_out_field"):
            value = getattr(self, name).strip()
            if value and any(not part for part in value.split(".")):
                raise ValueError(f"{name} {value!r} is no JSON path: write dotted keys like 'data.job.id'")
        done = {_state(s) for s in self.done_states if s.strip()}
        if not done:
            raise ValueError("done_states is empty: the block could never tell that a job finished")
        both = done & {_state(s) for s in self.failed_states}
        if both:
            raise ValueError(f"states listed as both done and failed: {sorted(both)}")
        if self.api_key is not None and self.api_key.get_secret_value() and not self.auth_header.strip():
            raise ValueError("auth_header is empty but an API key is set: name the header that carries it")
        created = bool(self.create_path.strip())
        allowed = {
            "create_path": ({"file_name"}, False),
            "upload_path": ({"file_name"}, created),
            "status_path": ({"file_name", "job_id"}, created),
            "result_path": ({"file_name", "job_id"}, created),
        }
        for name, (names, from_create) in allowed.items():
            for found in _placeholders(getattr(self, name)):
                if found not in names and not from_create:
                    raise ValueError(_unprovided(name, found, names, created))
        for name, names, from_create in (("form_fields", BATCH_PLACEHOLDERS, created), ("create_fields", BATCH_PLACEHOLDERS, False)):
            for value in getattr(self, name).values():
                for found in _placeholders(value):
                    if found not in names and not from_create:
                        raise ValueError(_unprovided(name, found, names, created))
        self.target()

    # Settings that change how the service is reached and waited for, never what it answers.
    NOT_IN_CACHE_KEY: ClassVar[set[str]] = {
        "api_key", "extra_headers", "poll_interval_s", "poll_backoff", "max_poll_interval_s", "timeout_s",
        "request_timeout_s", "max_attempts",
    }

    @property
    def service(self) -> str:
        return f"{self.label} ({_public(self.base_url)})"

    # ------------------------------------------------------------------ extraction

    def extract(self, name: str, data: bytes) -> Extraction:
        run = _Run(self, time.monotonic() + self.timeout_s)
        try:
            return self._extract(run, name, data)
        except DocumentError as exc:
            # Excerpts of answers are shown in messages: a service echoing a header must not leak it.
            from blocks.http_client import redact

            exc.message = redact(exc.message, run.secrets)
            exc.args = (exc.message,)
            if exc.raw_output:
                exc.raw_output = redact(exc.raw_output, run.secrets)
            raise

    def _extract(self, run: _Run, name: str, data: bytes) -> Extraction:
        from blocks import sniff

        target = self.target()
        schema_text = json.dumps(target.json_schema, separators=(",", ":"))
        values = {"file_name": name, "prompt": self.prompt.strip(), "schema": schema_text}
        media_type = sniff.sniff_binary(data) or mimetypes.guess_type(name)[0] or sniff.BINARY

        created: Any = None
        if self.create_path.strip():
            body = {k: (target.json_schema if v.strip() == "{schema}" else _fill(v, values, None, f"create field '{k}'", self.service))
                    for k, v in self.create_fields.items()}
            answer = run.send("create", "POST", self._path(self.create_path, values, None), json=body)
            created = _json_or_none(answer)
            if not isinstance(created, dict):
                raise DocumentError(
                    ErrorKind.backend, f"{self.service} answered the create request with no JSON object: {_excerpt(answer.text)}",
                )

        upload_url = self._path(self.upload_path, values, created)
        fields = {k: _fill(v, values, created, f"form field '{k}'", self.service) for k, v in self.form_fields.items()}
        if self.upload_mode == "multipart":
            answer = run.send(
                "upload", self.upload_method, upload_url,
                files={self.file_field: (name.rsplit("/", 1)[-1], data, media_type)}, data=fields,
            )
        else:
            if fields:
                upload_url += ("&" if "?" in upload_url else "?") + urlencode(fields)
            answer = run.send("upload", self.upload_method, upload_url, content=data, headers={"Content-Type": media_type})
        uploaded = _json_or_none(answer)

        job_id = self._job_id(uploaded, created, answer.text)
        path_values = {**values, "job_id": job_id}
        status_url = self._path(self.status_path, path_values, created)
        final, state = self._poll(run, job_id, status_url, uploaded)

        if self.result_path.strip():
            answer = run.send("result", "GET", self._path(self.result_path, path_values, created))
            result = answer.json()
        else:
            result = final
        fields_value = _lookup(result, self.result_field)
        if fields_value is _MISSING:
            where = "result answer" if self.result_path.strip() else f"final status answer (state {state!r})"
            raise DocumentError(
                ErrorKind.backend,
                f"{self.service}: the {where} of job {job_id} has nothing at result_field '{self.result_field}': {_excerpt(_dump(result))}",
            )
        tokens_in = _tokens(self.usage_in_field, result, final)
        tokens_out = _tokens(self.usage_out_field, result, final)
        out = self._fields(fields_value, target, job_id, tokens_in, tokens_out)
        return Extraction(
            fields=out, text="", pages=None, media_type=media_type, fields_source=f"hosted:{_host(self.base_url)}",
            warnings=run.warnings(), tokens_in=tokens_in, tokens_out=tokens_out,
        )

    # ------------------------------------------------------------------ the steps

    def _path(self, path: str, values: dict[str, str], created: Any) -> str:
        filled = _PLACEHOLDER.sub(lambda m: _path_value(m, values, created, path, self.service), path.strip())
        return f"{self.base_url}/{filled.lstrip('/')}"

    def _job_id(self, uploaded: Any, created: Any, upload_text: str) -> str:
        for answer in (uploaded, created):
            value = _lookup(answer, self.job_id_path)
            if value is _MISSING or value is None or value == "":
                continue
            if isinstance(value, (dict, list)):
                raise DocumentError(
                    ErrorKind.backend,
                    f"{self.service}: job_id_path '{self.job_id_path}' points at a JSON {type(value).__name__}, not a job id: {_excerpt(_dump(value))}",
                )
            return str(value)
        where = "upload answer" + (" or the create answer" if created is not None else "")
        shown = _dump(uploaded) if uploaded is not None else upload_text or "(empty body)"
        raise DocumentError(
            ErrorKind.backend, f"{self.service}: no job id at job_id_path '{self.job_id_path}' in the {where}: {_excerpt(shown)}",
        )

    def _poll(self, run: _Run, job_id: str, url: str, uploaded: Any) -> tuple[Any, str]:
        """The final status answer of a done job and its state; raises for a failed or late one."""
        done = {_state(s) for s in self.done_states}
        failed = {_state(s) for s in self.failed_states}
        state = _state_of(uploaded, self.status_field)
        if state in done:
            return uploaded, state  # a synchronous service: done in the upload answer
        if state in failed:
            raise self._failed(job_id, state, uploaded)
        interval = self.poll_interval_s
        polls = 0
        last = state or "(no state yet)"
        while True:
            left = run.deadline - time.monotonic()
            if left <= 0:
                raise DocumentError(
                    ErrorKind.timeout,
                    f"{self.service}: job {job_id} was still {last!r} after the timeout of {self.timeout_s:g} s "
                    f"({polls} poll{'s' if polls != 1 else ''}); raise timeout_s on the block or retry the document later",
                    transient=True,
                )
            time.sleep(min(interval, left))
            answer = run.send("status", "GET", url)
            polls += 1
            body = answer.json()
            value = _lookup(body, self.status_field)
            if value is _MISSING:
                raise DocumentError(
                    ErrorKind.backend,
                    f"{self.service}: the status answer of job {job_id} has no status_field '{self.status_field}': {_excerpt(_dump(body))}",
                )
            last = _state(value)
            if last in done:
                return body, last
            if last in failed:
                raise self._failed(job_id, last, body)
            interval = min(interval * self.poll_backoff, self.max_poll_interval_s)  # unknown states: still running

    def _failed(self, job_id: str, state: str, body: Any) -> DocumentError:
        value = _lookup(body, self.error_field) if self.error_field.strip() else _MISSING
        if value is _MISSING or value is None or value == "":
            detail = f"(no error message at error_field '{self.error_field}': {_excerpt(_dump(body))})"
        else:
            detail = value if isinstance(value, str) else _dump(value)
            detail = " ".join(detail.split())[:ERROR_MESSAGE_CHARS]
        return DocumentError(ErrorKind.backend, f"{self.service} reports job {job_id} {state!r}: {detail}")

    def _fields(self, value: Any, target: Any, job_id: str, tokens_in: int | None, tokens_out: int | None) -> dict[str, Any]:
        if isinstance(value, str):  # some services return the fields as JSON text
            try:
                value = json.loads(value)
            except ValueError:
                pass
        raw = _dump(value)[:RAW_OUTPUT_CHARS]
        if not isinstance(value, dict):
            raise DocumentError(
                ErrorKind.invalid_output,
                f"{self.service}: the result of job {job_id} at result_field '{self.result_field or '(whole body)'}' is a "
                f"JSON {_json_type(value)}, not an object of fields",
                raw_output=raw, tokens_in=tokens_in, tokens_out=tokens_out,
            )
        if not self.validate_output:
            return value
        problems = target.errors(value)
        if problems:
            raise DocumentError(
                ErrorKind.invalid_output,
                f"the result of job {job_id} from {self.service} does not validate against the schema '{target.name}': "
                + "; ".join(problems[:3]),
                raw_output=raw, tokens_in=tokens_in, tokens_out=tokens_out,
            )
        return target.complete(value)

    def _headers(self) -> tuple[dict[str, str], list[str]]:
        headers = {k: v.get_secret_value() for k, v in self.extra_headers.items()}
        secrets = [v for v in headers.values() if v]
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if key:
            scheme = self.auth_scheme.strip()
            headers[self.auth_header.strip()] = f"{scheme} {key}" if scheme else key
            secrets.append(key)
        return headers, secrets


class _Run:
    """One document's requests: shared headers and secrets, and what retries cost (for warnings)."""

    def __init__(self, block: HostedExtractor, deadline: float) -> None:
        self.block = block
        self.deadline = deadline  # time.monotonic() by which the document must be done
        self.headers, self.secrets = block._headers()
        self.retried: dict[str, float] = {}

    def send(self, step: str, method: str, url: str, *, headers: dict[str, str] | None = None, **body: Any) -> Any:
        from blocks.http_client import HttpError, RetryPolicy, Timeouts, redact, send

        # The block's timeouts, but no request (or Retry-After wait) reaching far past the document's deadline.
        left = self.deadline - time.monotonic()
        try:
            answer = send(
                method, url, service=self.block.service, headers={**self.headers, **(headers or {})},
                timeouts=Timeouts(read_s=max(1.0, min(self.block.request_timeout_s, left))),
                retry=RetryPolicy(max_attempts=self.block.max_attempts, max_retry_after_s=max(0.0, min(120.0, left))),
                secrets=self.secrets, **body,
            )
        except HttpError as exc:
            # Same class (an HttpAuthError still stops the batch), with the step that failed.
            exc.message = redact(f"{exc.message} [{step}: {method} {urlsplit(url).path}]", self.secrets)
            exc.args = (exc.message,)
            raise
        if answer.attempts > 1:
            self.retried[step] = self.retried.get(step, 0.0) + answer.waited_s
        return answer

    def warnings(self) -> list[str]:
        return [f"the service asked to wait or failed transiently during {step}; retried after {waited:.1f} s"
                for step, waited in self.retried.items()]


# ---------------------------------------------------------------------- JSON paths and placeholders


def _lookup(data: Any, path: str) -> Any:
    """The value at a dotted JSON path ('data.items.0.id'); the whole of `data` for an empty path."""
    path = path.strip()
    if data is None:
        return _MISSING
    if not path:
        return data
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _state(value: Any) -> str:
    return (value if isinstance(value, str) else json.dumps(value)).strip().casefold()


def _state_of(body: Any, path: str) -> str | None:
    value = _lookup(body, path) if isinstance(body, (dict, list)) else _MISSING
    return None if value is _MISSING or value is None else _state(value)


def _placeholders(text: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1)]


def _unprovided(field: str, name: str, names: set[str] | frozenset[str], created: bool) -> str:
    offered = ", ".join(f"{{{n}}}" for n in sorted(names))
    extra = "" if created else " (values of a create answer need create_path)"
    return f"{field} uses {{{name}}}, which no step provides: it can use {offered}{extra}"


def _value(name: str, values: dict[str, str], created: Any, where: str, service: str) -> str:
    if name in values:
        return values[name]
    found = _lookup(created, name)
    if found is _MISSING or isinstance(found, (dict, list)):
        shown = _excerpt(_dump(created)) if created is not None else "(no create step)"
        raise DocumentError(ErrorKind.backend, f"{service}: {where} needs {{{name}}}, which the create answer does not hold: {shown}")
    return "" if found is None else str(found)


def _fill(text: str, values: dict[str, str], created: Any, where: str, service: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)[0]  # '{{' or '}}'
        return _value(match.group(1), values, created, where, service)

    return _PLACEHOLDER.sub(one, text)


def _path_value(match: re.Match[str], values: dict[str, str], created: Any, where: str, service: str) -> str:
    if match.group(1) is None:
        return match.group(0)[0]
    return quote(_value(match.group(1), values, created, where, service), safe="")


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _public(url: str) -> str:
    """The URL without user:password@ (never shown in a message)."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl() if "@" in parts.netloc else url


def _json_or_none(answer: Any) -> Any:
    """An answer's JSON, None for an empty body (a 204 to an upload); a body that is not JSON raises."""
    return answer.json() if answer.content.strip() else None


def _tokens(path: str, *answers: Any) -> int | None:
    if not path.strip():
        return None
    for answer in answers:
        value = _lookup(answer, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
    return None


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"
