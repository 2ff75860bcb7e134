"""The hosted-extractor against a real job API (create → upload → poll → fetch) on 127.0.0.1.

The service (`tests/hosted_service.py`) is scripted per test: after how many polls a job ends,
how it ends, a throttled poll, a required create step, the auth header it wants. What the
block sent (multipart field names, form fields, paths, poll times) is asserted on what the
service recorded; a whole batch runs through the CLI with a saved block.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from blocks.errors import DocumentError
from blocks.http_client import HttpAuthError
from blocks.hosted_extractor import HostedExtractor
from blocks.models import ErrorKind
from tests.hosted_service import Script, hosted_service
from tests.test_cli import docbatch
from tests.test_openai_extractor import PO_SCHEMA

SECRET = "hk-test-0123456789SECRETKEY"

DOCUMENT = b"PURCHASE ORDER\npo_number: PO-7\nsupplier: Acme GmbH\namount: 1,250.50\n"


def _schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "po.schema.json"
    path.write_text(json.dumps(PO_SCHEMA))
    return path


def _v1(url: str, tmp_path: Path, **kw: object) -> HostedExtractor:
    """The block for the service's /v1 shape: multipart upload, poll, separate result."""
    options: dict = {
        "base_url": url, "upload_path": "/v1/jobs", "job_id_path": "job.id",
        "status_path": "/v1/jobs/{job_id}", "status_field": "job.state", "error_field": "job.error.message",
        "result_path": "/v1/jobs/{job_id}/result", "result_field": "result.fields",
        "usage_in_field": "usage.input_tokens", "usage_out_field": "usage.output_tokens",
        "target_schema": str(_schema_file(tmp_path)), "poll_interval_s": 0.05, "poll_backoff": 1.0,
        "max_poll_interval_s": 0.05, "timeout_s": 20, "max_attempts": 2,
    }
    options.update(kw)
    return HostedExtractor(**options)


def test_upload_poll_fetch_gives_validated_fields_with_the_settings_polling_and_form(tmp_path: Path) -> None:
    script = Script(polls_to_finish=4, file_field="document", required_headers={"X-Api-Key": SECRET})
    with hosted_service(script) as url:
        extractor = _v1(
            url, tmp_path, api_key=SECRET, auth_header="X-Api-Key", auth_scheme="",
            file_field="document", form_fields={"instructions": "{prompt}", "schema": "{schema}", "name": "doc {file_name}"},
            prompt="These are purchase orders.", poll_interval_s=0.2, poll_backoff=2.0, max_poll_interval_s=0.5,
        )
        extractor.check()
        out = extractor.extract("po.txt", DOCUMENT)
    assert out.fields == {"po_number": "PO-7", "supplier": "Acme GmbH", "amount": 1250.5, "lines": []}
    assert out.fields_source == f"hosted:{url.removeprefix('http://')}"
    assert (out.tokens_in, out.tokens_out) == (120, 45)
    assert out.text == "" and out.pages is None and out.media_type == "text/plain"
    upload = next(r for r in script.requests if r["kind"] == "upload")
    assert set(upload["fields"]) == {"document", "instructions", "schema", "name"}
    assert upload["fields"]["document"][0] == "po.txt"
    assert upload["fields"]["instructions"] == (None, "These are purchase orders.")
    assert upload["fields"]["name"] == (None, "doc po.txt")
    assert json.loads(upload["fields"]["schema"][1]) == PO_SCHEMA
    # polled exactly until the 4th poll said done, then one result request
    assert [r["kind"] for r in script.requests] == ["upload", "status", "status", "status", "status", "result"]
    times = [r["time"] for r in script.requests]
    gaps = [b - a for a, b in zip(times[:-2], times[1:-1])]
    # waits of 0.2, then x2 = 0.4, then 0.8 capped at 0.5, and 0.5 again
    for gap, planned in zip(gaps, (0.2, 0.4, 0.5, 0.5)):
        assert planned - 0.02 <= gap < planned + 0.15, (gaps, planned)
    assert all(r["headers"].get("X-Api-Key") == SECRET for r in script.requests)
    assert "Authorization" not in script.requests[0]["headers"]


def test_a_service_that_needs_a_job_created_first_gets_the_raw_bytes_at_the_created_jobs_path(tmp_path: Path) -> None:
    script = Script(polls_to_finish=2)
    with hosted_service(script) as url:
        extractor = HostedExtractor(
            base_url=url, create_path="/v2/jobs", create_fields={"schema": "{schema}", "note": "for {file_name}"},
            upload_path="/v2/jobs/{id}/document", upload_method="PUT", upload_mode="raw",
            form_fields={"token": "{upload.token}"}, job_id_path="id",
            status_path="/v2/jobs/{job_id}", status_field="status", error_field="failure_reason", result_field="output",
            target_schema=str(_schema_file(tmp_path)), poll_interval_s=0.05, poll_backoff=1.0, timeout_s=20,
        )
        extractor.check()
        out = extractor.extract("po.txt", DOCUMENT)
    assert out.fields["po_number"] == "PO-7" and out.fields["amount"] == 1250.5
    create, upload = script.requests[0], script.requests[1]
    assert create["kind"] == "create" and create["json"] == {"schema": PO_SCHEMA, "note": "for po.txt"}
    job = create["job"]
    assert upload["method"] == "PUT" and upload["path"].startswith(f"/v2/jobs/{job}/document?")
    assert upload["query"] == {"token": [script.jobs[job].token]}
    assert upload["content_type"] == "text/plain" and upload["size"] == len(DOCUMENT)
    # 'SUCCEEDED' matched 'succeeded' case-insensitively; the result was in the status answer
    assert [r["kind"] for r in script.requests] == ["create", "upload", "status", "status"]
    assert all(r["job"] == job for r in script.requests)


def test_a_failed_job_fails_the_document_as_backend_with_the_services_own_message(tmp_path: Path) -> None:
    script = Script(outcome="fail", polls_to_finish=2, error_message="page 2 is a scanned image we cannot read (E4711)")
    with hosted_service(script) as url, pytest.raises(DocumentError) as caught:
        _v1(url, tmp_path).extract("po.txt", DOCUMENT)
    error = caught.value
    assert error.kind is ErrorKind.backend and error.transient is False
    assert "page 2 is a scanned image we cannot read (E4711)" in error.message
    assert "job-0001" in error.message and "'failed'" in error.message
    assert [r["kind"] for r in script.requests] == ["upload", "status", "status"]  # no result fetched


def test_a_job_that_never_finishes_is_a_transient_timeout_within_timeout_s(tmp_path: Path) -> None:
    script = Script(outcome="never")
    with hosted_service(script) as url, pytest.raises(DocumentError) as caught:
        started = time.monotonic()
        _v1(url, tmp_path, timeout_s=1.0, poll_interval_s=0.1, poll_backoff=1.5, max_poll_interval_s=0.3).extract("po.txt", DOCUMENT)
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.kind is ErrorKind.timeout and error.transient is True
    assert "job-0001" in error.message and "'running'" in error.message and "1 s" in error.message
    assert 1.0 <= elapsed < 2.0, elapsed
    assert len(script.polls()) >= 4  # 'running' is no state the block knows: it kept polling


def test_a_poll_answered_429_with_retry_after_waits_and_goes_on(tmp_path: Path) -> None:
    script = Script(polls_to_finish=2, throttle_poll=1, retry_after="1")
    with hosted_service(script) as url:
        started = time.monotonic()
        out = _v1(url, tmp_path).extract("po.txt", DOCUMENT)
        elapsed = time.monotonic() - started
    assert out.fields["po_number"] == "PO-7"
    polls = script.polls()
    assert [p.get("throttled", False) for p in polls] == [True, False, False]
    assert polls[1]["time"] - polls[0]["time"] >= 0.95  # Retry-After honoured
    assert elapsed >= 1.0
    assert any("status" in w and "retried" in w for w in out.warnings), out.warnings


def test_a_result_that_breaks_the_schema_is_invalid_output_keeping_the_result(tmp_path: Path) -> None:
    script = Script(polls_to_finish=1, result={"po_number": 12, "supplier": "Acme"})
    with hosted_service(script) as url, pytest.raises(DocumentError) as caught:
        _v1(url, tmp_path).extract("po.txt", DOCUMENT)
    error = caught.value
    assert error.kind is ErrorKind.invalid_output and error.transient is False
    assert json.loads(error.raw_output) == {"po_number": 12, "supplier": "Acme"}
    assert "po_number" in error.message and "job-0001" in error.message
    assert (error.tokens_in, error.tokens_out) == (120, 45)
    # with validation off, the same result is taken as it is
    with hosted_service(Script(polls_to_finish=1, result={"po_number": 12})) as url:
        assert _v1(url, tmp_path, validate_output=False).extract("po.txt", DOCUMENT).fields == {"po_number": 12}


def test_answers_without_a_job_id_or_state_and_a_rejected_key_are_clear_errors(tmp_path: Path) -> None:
    with hosted_service(Script()) as url:
        with pytest.raises(DocumentError) as caught:
            _v1(url, tmp_path, job_id_path="job.uuid").extract("po.txt", DOCUMENT)
        assert caught.value.kind is ErrorKind.backend
        assert "job.uuid" in caught.value.message and '"state": "queued"' in caught.value.message
        with pytest.raises(DocumentError) as caught:
            _v1(url, tmp_path, status_field="job.status").extract("po.txt", DOCUMENT)
        assert caught.value.kind is ErrorKind.backend
        assert "job.status" in caught.value.message and "running" in caught.value.message
    script = Script(required_headers={"Authorization": "Bearer the-right-key"})
    with hosted_service(script) as url, pytest.raises(HttpAuthError) as caught:
        _v1(url, tmp_path, api_key=SECRET).extract("po.txt", DOCUMENT)
    assert caught.value.stops_batch and "401" in caught.value.message and "[upload: POST /v1/jobs]" in caught.value.message
    assert SECRET not in caught.value.message
    assert script.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_a_batch_through_the_cli_with_a_saved_block_and_an_api_key(
    cli_env: dict[str, str], prefect_api: str, tmp_path: Path
) -> None:
    script = Script(polls_to_finish=2, required_headers={"Authorization": f"Bearer {SECRET}"})
    folder = tmp_path / "in"
    folder.mkdir()
    names = []
    for k in range(3):
        names.append(f"po-{k}.txt")
        (folder / names[-1]).write_text(f"PURCHASE ORDER\npo_number: PO-{1000 + k}\nsupplier: Acme {k} GmbH\namount: 1,25{k}.50\n")
    with hosted_service(script) as url:
        block = f"svc-{uuid.uuid4().hex[:8]}"
        _v1(url, tmp_path, api_key=SECRET, target_schema="invoice", form_fields={"instructions": "{prompt}"}).save(block)
        done = docbatch(
            cli_env, "run", str(folder), "-o", str(tmp_path / "out"), "--json", "-c", "2",
            "--extractor", f"hosted-extractor/{block}", "--schema", str(_schema_file(tmp_path)),
            "--prompt", "Purchase orders.", "-f", "csv", "-f", "jsonl",
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed", report["message"]
    by_name = {r["ref"]["name"]: r for r in report["results"]}
    for k, name in enumerate(names):
        result = by_name[name]
        assert result["fields"] == {"po_number": f"PO-{1000 + k}", "supplier": f"Acme {k} GmbH", "amount": float(f"125{k}.50"), "lines": []}
        assert result["fields_source"].startswith("hosted:127.0.0.1:")
        assert result["extractor"] == "hosted-extractor"
    assert report["totals"]["tokens_in"] == 3 * 120
    uploads = [r for r in script.requests if r["kind"] == "upload"]
    assert len(uploads) == 3 and all(u["fields"]["instructions"] == (None, "Purchase orders.") for u in uploads)
    assert len(script.polls()) == 6
    # the key travelled to the service, and nowhere else
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in script.requests)
    assert SECRET not in done.stdout + done.stderr
    out = Path(report["output_dir"])
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert SECRET not in path.read_text(errors="replace"), path
    assert "po_number" in (out / "documents.csv").read_text()


GOOD = {"base_url": "http://127.0.0.1:9", "upload_path": "/v1/jobs", "status_path": "/v1/jobs/{job_id}"}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"base_url": "ftp://example.com"}, "base_url must be an http"),
        ({"base_url": "example.com/api"}, "base_url must be an http"),
        ({"job_id_path": " "}, "job_id_path is empty"),
        ({"status_field": ""}, "status_field is empty"),
        ({"done_states": []}, "done_states is empty"),
        ({"done_states": ["done"], "failed_states": ["DONE"]}, "both done and failed"),
        ({"status_path": "/v1/jobs/{jobid}"}, "status_path uses {jobid}, which no step provides"),
        ({"upload_path": "/v1/jobs/{job_id}/file"}, "upload_path uses {job_id}"),
        ({"upload_path": "/v1/uploads/{id}"}, "need create_path"),
        ({"form_fields": {"options": "{options}"}}, "form_fields uses {options}"),
        ({"result_field": "data..fields"}, "no JSON path"),
        ({"result_path": "https://other.example.com/result"}, "not a URL"),
        ({"target_schema": "/no/such/schema.json"}, "schema"),
    ],
)
def test_check_refuses_a_configuration_that_cannot_work(change: dict, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        HostedExtractor(**{**GOOD, **change}).check()
    assert complaint in str(caught.value), str(caught.value)


def test_check_accepts_create_answer_placeholders_and_json_braces_in_form_fields(tmp_path: Path) -> None:
    HostedExtractor(**{**GOOD, "create_path": "/v2/jobs", "upload_path": "/v2/jobs/{id}/file", "status_path": "/v2/jobs/{data.job}",
                       "form_fields": {"options": '{"language": "de"}', "token": "{upload.token}"}}).check()
    HostedExtractor(**GOOD).check()
