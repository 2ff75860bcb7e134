"""The openai-compatible-extractor against a real OpenAI-protocol server on 127.0.0.1.

The server (`tests/openai_server.py`) is scripted: which structured-output forms it accepts,
replies that break the schema, the API key it wants. The extractor's schema handling, form
fallback, validation retry, token counts, batch stop on a rejected key and secret hygiene are
asserted on what the server saw and on the batch's report and exports.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from blocks.errors import DocumentError
from blocks.models import ErrorKind
from blocks.openai_compatible import OpenAICompatibleExtractor, _accepted_forms
from tests.openai_server import Script, openai_server
from tests.test_cli import docbatch

SECRET = "sk-test-0123456789SECRETKEY"

PO_SCHEMA = {
    "type": "object",
    "properties": {
        "po_number": {"type": "string"},
        "supplier": {"type": ["string", "null"]},
        "amount": {"type": ["number", "null"]},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}},
    },
    "required": ["po_number"],
}


@pytest.fixture(autouse=True)
def _fresh_forms() -> None:
    _accepted_forms.clear()  # each test's server is a new endpoint, but ports can be reused


def _documents(folder: Path, n: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        name = f"po-{k}.txt"
        (folder / name).write_text(f"PURCHASE ORDER\npo_number: PO-{1000 + k}\nsupplier: Acme {k} GmbH\namount: 1,25{k}.50\n")
        names.append(name)
    return names


def _schema_file(tmp_path: Path, schema: dict = PO_SCHEMA) -> Path:
    path = tmp_path / "po.schema.json"
    path.write_text(json.dumps(schema))
    return path


def _extractor(url: str, tmp_path: Path, **kw: object) -> OpenAICompatibleExtractor:
    options: dict = {"base_url": url, "model": "fake-model", "target_schema": str(_schema_file(tmp_path)), "max_attempts": 2}
    options.update(kw)
    return OpenAICompatibleExtractor(**options)


def test_fields_come_from_the_model_validated_and_completed(tmp_path: Path) -> None:
    script = Script()
    with openai_server(script) as url:
        extractor = _extractor(url, tmp_path, prompt="These are purchase orders.")
        extractor.check()
        out = extractor.extract("po.txt", b"PURCHASE ORDER\npo_number: PO-7\namount: 99.5\n")
    assert out.fields == {"po_number": "PO-7", "supplier": None, "amount": 99.5, "lines": []}
    assert out.fields_source == "model:fake-model"
    assert out.tokens_in and out.tokens_out
    body = script.requests[0]["body"]
    assert script.forms_seen() == ["json_schema"]
    assert body["response_format"]["json_schema"]["schema"] == PO_SCHEMA
    assert "These are purchase orders." in body["messages"][0]["content"]
    assert "--- page" not in body["messages"][1]["content"]  # a text file has no pages to number


def test_a_server_refusing_json_schema_gets_llama_cpps_form_and_keeps_it(tmp_path: Path) -> None:
    script = Script(accepted_forms=("json_object_schema",))
    with openai_server(script) as url:
        extractor = _extractor(url, tmp_path)
        first = extractor.extract("a.txt", b"po_number: A\n")
        second = extractor.extract("b.txt", b"po_number: B\n")
    assert (first.fields["po_number"], second.fields["po_number"]) == ("A", "B")
    # one refused json_schema (no retries while the form is unproven), then the accepted form only
    assert script.forms_seen() == ["json_schema", "json_object_schema", "json_object_schema"]


def test_a_server_with_no_structured_output_is_used_with_validation_alone(tmp_path: Path) -> None:
    script = Script(accepted_forms=("none",))
    with openai_server(script) as url:
        out = _extractor(url, tmp_path).extract("a.txt", b"po_number: N-1\n")
    assert out.fields["po_number"] == "N-1"
    assert script.forms_seen() == ["json_schema", "json_object_schema", "json_object", "none"]


def test_an_invalid_answer_is_sent_back_once_with_the_errors(tmp_path: Path) -> None:
    script = Script(replies=['{"supplier": 5}'])  # po_number missing, supplier not a string
    with openai_server(script) as url:
        out = _extractor(url, tmp_path).extract("a.txt", b"po_number: P-2\n")
    assert out.fields["po_number"] == "P-2"
    assert any("first answer did not validate" in w for w in out.warnings)
    second = script.requests[1]["body"]["messages"]
    assert second[-2] == {"role": "assistant", "content": '{"supplier": 5}'}
    assert "po_number" in second[-1]["content"] and "required" in second[-1]["content"]


def test_two_invalid_answers_fail_the_document_as_invalid_output_keeping_the_reply(tmp_path: Path) -> None:
    script = Script(replies=["Sure! Here is the JSON you asked for", '{"po_number": 12}'])
    with openai_server(script) as url, pytest.raises(DocumentError) as caught:
        _extractor(url, tmp_path).extract("a.txt", b"po_number: P-3\n")
    error = caught.value
    assert error.kind is ErrorKind.invalid_output
    assert error.raw_output == '{"po_number": 12}'
    assert "po_number" in error.message and "after 2 tries" in error.message
    assert error.tokens_in and error.tokens_out  # both requests were paid for


def test_a_broken_schema_is_refused_before_any_request(tmp_path: Path) -> None:
    script = Script()
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "object", "properties": {"a": {"type": "strng"}}}')
    with openai_server(script) as url:
        extractor = _extractor(url, tmp_path, target_schema=str(broken))
        with pytest.raises(ValueError, match="not a valid JSON Schema"):
            extractor.check()
    assert script.requests == []


def test_a_batch_through_the_cli_with_a_saved_block_schema_file_and_prompt(
    cli_env: dict[str, str], prefect_api: str, tmp_path: Path
) -> None:
    script = Script(api_key=SECRET)
    names = _documents(tmp_path / "in")
    with openai_server(script) as url:
        block = f"fake-{uuid.uuid4().hex[:8]}"
        OpenAICompatibleExtractor(base_url=url, model="fake-model", api_key=SECRET).save(block)
        done = docbatch(
            cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "-c", "2",
            "--extractor", f"openai-compatible-extractor/{block}", "--schema", str(_schema_file(tmp_path)),
            "--prompt", "Purchase orders from our suppliers.", "-f", "csv", "-f", "jsonl",
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed", report["message"]
    by_name = {r["ref"]["name"]: r for r in report["results"]}
    for k, name in enumerate(names):
        result = by_name[name]
        assert result["fields"]["po_number"] == f"PO-{1000 + k}"
        assert result["fields"]["amount"] == float(f"125{k}.50")
        assert result["fields_source"] == "model:fake-model"
    assert report["totals"]["tokens_in"] == sum(r["tokens_in"] for r in report["results"]) > 0
    assert report["totals"]["tokens_out"] == sum(r["tokens_out"] for r in report["results"]) > 0
    assert all("Purchase orders from our suppliers." in r["body"]["messages"][0]["content"] for r in script.requests)
    assert len(script.requests) == len(names)
    # the key travelled to the server, and nowhere else
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in script.requests)
    out = Path(report["output_dir"])
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in done.stdout + done.stderr
    from tests.test_batch_flow import read_all_artifacts

    artifacts = read_all_artifacts(report["flow_run_id"])
    assert {a.key for a in artifacts} >= {"docbatch-summary", "docbatch-documents"}
    assert all(SECRET not in json.dumps(a.data, default=str) for a in artifacts)
    summary = next(a for a in artifacts if a.key == "docbatch-summary").data
    assert f"Model tokens: {report['totals']['tokens_in']:,} in, {report['totals']['tokens_out']:,} out" in summary
    csv = (out / "documents.csv").read_text()
    assert "po_number" in csv and "tokens_in" in csv


def test_a_rejected_api_key_stops_the_batch_instead_of_failing_every_document(
    cli_env: dict[str, str], prefect_api: str, tmp_path: Path
) -> None:
    script = Script(api_key="the-right-key")
    names = _documents(tmp_path / "in", n=6)
    with openai_server(script) as url:
        block = f"wrong-key-{uuid.uuid4().hex[:8]}"
        OpenAICompatibleExtractor(base_url=url, model="fake-model", api_key=SECRET, target_schema="receipt").save(block)
        done = docbatch(
            cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "-c", "1",
            "--extractor", f"openai-compatible-extractor/{block}", "-f", "json",
        )
    assert done.returncode == 1, done.stderr  # nothing succeeded
    report = json.loads(done.stdout)
    statuses = [r["status"] for r in report["results"]]
    assert statuses[0] == "failed" and statuses[1:] == ["skipped"] * (len(names) - 1)
    first = report["results"][0]
    assert "API key was rejected" in first["error"] and "401" in first["error"]
    assert all("the batch stopped after po-0.txt" in r["error"] for r in report["results"][1:])
    assert len(script.requests) == 1  # one request, not one per document
    assert SECRET not in done.stdout + done.stderr


def test_the_embedded_extractor_refuses_a_schema_and_a_prompt_it_cannot_honour(cli_env: dict[str, str], tmp_path: Path) -> None:
    _documents(tmp_path / "in", n=1)
    for flags in (["--prompt", "read carefully"], ["--schema", str(_schema_file(tmp_path))]):  # it fills receipts itself
        done = docbatch(cli_env, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *flags)
        assert done.returncode == 2, (flags, done.stderr)
        assert "model extractor" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_changed_schema_or_prompt_is_a_new_batch_key(tmp_path: Path) -> None:
    from blocks.local import LocalDirectory
    from tasks.journal import settings_key
    from flows.params import ExtractionSettings

    source = LocalDirectory(path=str(tmp_path))
    schema = _schema_file(tmp_path)

    def key(prompt: str) -> str:
        extractor = OpenAICompatibleExtractor(base_url="http://127.0.0.1:9/v1", model="m").with_batch_settings(
            schema=str(schema), prompt=prompt
        )
        return settings_key(source, [], [], True, extractor, ExtractionSettings())

    first = key("a")
    assert key("a") == first
    assert key("b") != first
    schema.write_text(json.dumps({**PO_SCHEMA, "required": ["po_number", "supplier"]}))  # same path, new content
    assert key("a") != first


def test_page_images_go_to_vision_models_and_a_scan_is_read_from_them(tmp_path: Path) -> None:
    import base64

    from tests.conftest import corpus
    from tests.openai_server import images_of

    scan = corpus("nasty-inputs", "scanned-image-only", "ocrmypdf_skew.pdf").read_bytes()
    # a vision model reads the image; this one answers what such a model would; a text model is
    # sent the scan's OCR text instead
    def answer(body: dict) -> str:
        if images_of(body):
            return json.dumps({"po_number": "SCAN-1"})
        return json.dumps({"po_number": "OCR-1"}) if "32 Track MIDI" in body["messages"][1]["content"] else "{}"

    script = Script(answer=answer)
    with openai_server(script) as url:
        extractor = _extractor(url, tmp_path, page_images=True, image_dpi=72, max_image_pages=2)
        out = extractor.extract("scan.pdf", scan)  # no text layer, and no OCR when the model reads the images
        text_only = _extractor(url, tmp_path)
        read = text_only.extract("scan.pdf", scan)
    assert read.fields["po_number"] == "OCR-1" and read.reader == "ocr"
    assert read.provenance["po_number"] is None  # 'OCR-1' is not in the scan's text: not located
    assert out.fields["po_number"] == "SCAN-1"
    assert any("page images only" in w for w in out.warnings)
    urls = images_of(script.requests[0]["body"])
    assert 1 <= len(urls) <= 2
    for url_ in urls:
        assert url_.startswith("data:image/png;base64,")
        assert base64.b64decode(url_.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(script.requests) == 2  # one with the images, one with the OCR text
