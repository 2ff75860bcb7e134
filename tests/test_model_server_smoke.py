"""The offline model server (tests/model_server.py) answers an OpenAI chat completion with JSON
constrained by a schema, and reports token usage."""

from __future__ import annotations

import json

import httpx

from tests.model_server import running_model_server

SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": "string"}},
    "required": ["invoice_number"],
}


def test_chat_completion_with_json_schema_and_usage() -> None:
    with running_model_server() as server:
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={
                "model": server.model,
                "messages": [
                    {"role": "system", "content": "Extract the invoice number. Answer in JSON."},
                    {"role": "user", "content": "Invoice INV-2024-0042, dated 3 March 2024, total 118.00 EUR."},
                ],
                # llama-cpp-python's form of a schema; the OpenAI form {"type": "json_schema", ...} is refused
                "response_format": {"type": "json_object", "schema": SCHEMA},
                "temperature": 0,
                "max_tokens": 64,
            },
            timeout=120,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    content = json.loads(body["choices"][0]["message"]["content"])
    assert isinstance(content, dict) and isinstance(content["invoice_number"], str), content
    usage = body["usage"]
    for key in ("prompt_tokens", "completion_tokens"):
        assert isinstance(usage[key], int) and usage[key] > 0, usage
