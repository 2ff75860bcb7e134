"""A whole batch against a real model: llama-cpp-python's server with SmolLM2-135M on 127.0.0.1.

The model is small, so this asserts the protocol and the bookkeeping, not accuracy: the server
refuses OpenAI's `json_schema` form (HTTP 500) and the extractor settles on llama.cpp's
`json_object` + schema; every document either succeeds with schema-valid fields or fails as
`invalid_output` with the reply kept; token counts are the server's and add up; the block's
shared request limit exists on the Prefect server with the block's value.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from blocks.openai_compatible import OpenAICompatibleExtractor, _accepted_forms
from blocks.schemas import load_target_schema
from flows.params import ExportSettings, ExtractionSettings
from tests.model_server import running_model_server

SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": ["string", "null"]}, "total": {"type": ["number", "null"]}},
    "required": ["invoice_number", "total"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def model_server():  # type: ignore[no-untyped-def]
    with running_model_server() as server:
        yield server


def test_a_batch_against_the_real_model_server(model_server, prefect_api: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prefect import get_client

    from flows.batch import extract_batch

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        (folder / f"inv-{k}.txt").write_text(f"INVOICE\nInvoice number: A-{100 + k}\nTotal: {10 + k}.50 EUR\n")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    name = f"smollm-{uuid.uuid4().hex[:8]}"
    OpenAICompatibleExtractor(
        base_url=model_server.base_url, model=model_server.model, max_tokens=64, max_concurrent_requests=1, timeout_s=120,
    ).save(name)
    _accepted_forms.clear()

    report = extract_batch(
        source=str(folder), max_concurrency=2,
        extraction=ExtractionSettings(extractor=f"openai-compatible-extractor/{name}", target_schema=str(schema), retry_backoff_s=0),
        export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["json"]),
    )

    assert len(report.results) == 3
    target = load_target_schema(str(schema))
    for result in report.results:
        assert result.tokens_in and result.tokens_in > 50, result  # the instructions and schema alone are more
        assert result.tokens_out and result.tokens_out > 0, result
        if result.status == "succeeded":
            assert target.errors(result.fields) == []
            assert result.fields_source == f"model:{model_server.model}"
        else:
            assert result.error_kind is not None and result.error_kind.value == "invalid_output", result.error
            assert result.raw_output
    assert report.totals.tokens_in == sum(r.tokens_in or 0 for r in report.results)
    assert report.totals.tokens_out == sum(r.tokens_out or 0 for r in report.results)
    # json_schema was refused with a 500 naming the response format; llama.cpp's form was kept
    assert _accepted_forms[f"{model_server.base_url}|{model_server.model}"] == "json_object_schema"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(f"docbatch-openai-compatible-extractor-{name}-concurrent")
    assert limit.limit == 1
