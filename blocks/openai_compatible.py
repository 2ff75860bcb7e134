"""Any model behind the OpenAI chat-completions protocol fills the batch's schema.

One block talks to vLLM, llama.cpp's server, Ollama, LM Studio and the hosted APIs alike: the
document's text (read here by the embedded extractor's isolated parser, pages numbered) and
the target schema go out, one JSON object comes back, is validated against the schema, and
becomes the document's fields.

Structured output differs between servers, so the block tries the forms in this order and
keeps, per endpoint and model, the first one the server accepts:

1. `json_schema`: OpenAI's `{"type": "json_schema", "json_schema": {"name", "schema"}}`
   (OpenAI, vLLM, recent llama.cpp, LM Studio);
2. `json_object_schema`: llama.cpp's `{"type": "json_object", "schema": …}`
   (llama-cpp-python's server answers form 1 with an HTTP 500);
3. `json_object`: JSON mode without a schema, the schema only in the instructions;
4. `none`: no `response_format` at all, validation alone.

A server that refuses a form with HTTP 400, 422 or 500 whose body names the response format
moves the block to the next form, once per form; anything else is an ordinary error. Output
that does not validate is sent back once with the validation errors; a second invalid answer
fails the document as `invalid_output`, keeping the reply (truncated) on its result.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator

from blocks.errors import DocumentError
from blocks.extractor import Extractor
from blocks.models import ErrorKind, Extraction

FORMS = ("json_schema", "json_object_schema", "json_object", "none")
RAW_OUTPUT_CHARS = 2000
# A refusal that names the structured-output request (OpenAI, vLLM, llama.cpp, Ollama phrasing).
_FORMAT_REFUSAL = re.compile(r"response_format|json_schema|json_object|\bschema\b|grammar", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)

# The form each endpoint+model accepted, shared by every instance in this process (a batch's
# threads and later batches alike), so only the first documents pay for a refused form.
_accepted_forms: dict[str, str] = {}
_forms_lock = threading.Lock()

SYSTEM_PROMPT = (
    "You extract structured data from documents. Answer with exactly one JSON object that is valid "
    "against the JSON Schema below, and nothing else. Use null (or an empty list) for anything the "
    "document does not state; never invent values. Write dates as YYYY-MM-DD and amounts as plain "
    "numbers without currency signs or thousands separators. The document's pages are marked "
    "'--- page N ---'."
)


class OpenAICompatibleExtractor(Extractor):
    """A model served over the OpenAI chat-completions protocol extracts the batch's schema.

    Example:
        ```python
        from blocks import OpenAICompatibleExtractor
        OpenAICompatibleExtractor(base_url="http://127.0.0.1:8080/v1", model="local").save("local-llama")
        OpenAICompatibleExtractor(base_url="https://api.openai.com/v1", model="gpt-4o-mini", api_key="sk-…").save("openai")
        ```
    """

    _block_type_name: ClassVar[str] = "OpenAI-compatible Extractor"
    _block_type_slug: ClassVar[str] = "openai-compatible-extractor"
    _description: ClassVar[str] = (
        "Extract any schema with a model behind the OpenAI chat-completions protocol: vLLM, llama.cpp's server, "
        "Ollama, LM Studio or a hosted API. Output is validated against the schema."
    )

    base_url: str = Field(
        description="The API's base URL, ending before /chat/completions: http://127.0.0.1:8080/v1 (llama.cpp), "
        "http://127.0.0.1:8000/v1 (vLLM), http://127.0.0.1:11434/v1 (Ollama), https://api.openai.com/v1."
    )
    model: str = Field(description="Model name as the server knows it.")
    api_key: SecretStr | None = Field(default=None, description="Sent as 'Authorization: Bearer …'; empty for local servers.")
    target_schema: str = Field(
        default="invoice", title="Schema",
        description="'invoice', 'receipt', a JSON Schema file path, a pasted JSON Schema, or 'extraction-schema/NAME'. "
        "A batch's own schema setting replaces it.",
    )
    prompt: str = Field(default="", description="Instructions added to every request, e.g. what the documents are. A batch's prompt replaces it.")
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=1024, ge=16, le=200_000, description="Most tokens one answer may have.")
    timeout_s: float = Field(default=120.0, gt=0, le=3600, description="Seconds one request may take to answer.")
    max_attempts: int = Field(default=4, ge=1, le=10, description="Attempts per request on 429, 5xx and network errors (the first included).")
    extra_headers: dict[str, SecretStr] = Field(default_factory=dict, description="Headers sent with every request (values are kept secret).")
    response_format: Literal["auto", "json_schema", "json_object_schema", "json_object", "none"] = Field(
        default="auto",
        description="Structured output: 'auto' tries json_schema, then llama.cpp's json_object with a schema, then "
        "JSON mode, then none, keeping the first form the server accepts.",
    )
    max_text_chars: int = Field(
        default=100_000, ge=1000, description="Document text beyond this many characters is cut (with a warning) before sending."
    )
    max_pages: int = Field(default=2000, ge=1, description="A PDF with more pages fails as too_large before it is sent.")
    passwords: list[SecretStr] = Field(default_factory=list, description="Candidate passwords for encrypted PDFs.")

    _schema: Any = PrivateAttr(default=None)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value

    # ------------------------------------------------------------------ the batch's configuration

    def with_batch_settings(self, *, schema: str, prompt: str) -> OpenAICompatibleExtractor:
        """This block with the batch's schema and prompt, where the batch sets them."""
        update: dict[str, Any] = {}
        if schema.strip():
            update["target_schema"] = schema.strip()
        if prompt.strip():
            update["prompt"] = prompt.strip()
        return self.model_copy(update=update) if update else self

    def target(self) -> Any:
        """The loaded `TargetSchema`, once per block instance."""
        if self._schema is None:
            from blocks.schemas import load_target_schema

            self._schema = load_target_schema(self.target_schema)
        return self._schema

    def check(self) -> None:
        if not self.model.strip():
            raise ValueError("the model name is empty")
        self.target()

    def fingerprint(self) -> str:
        return f"schema:{self.target().digest}"

    @property
    def output_fields(self) -> list[str]:
        try:
            target = self.target()
        except ValueError:
            return []
        if target.name == "invoice":
            from blocks.invoice_schema import invoice_columns

            return ["fields_source", *invoice_columns()]
        return ["fields_source", *target.json_schema["properties"]]

    @property
    def service(self) -> str:
        return f"{self.label} ({self.model} at {self.base_url})"

    # ------------------------------------------------------------------ extraction

    def extract(self, name: str, data: bytes) -> Extraction:
        read = self._read_text(name, data)
        warnings = list(read.warnings)
        text = _numbered_pages(read.text, read.pages)
        if len(text) > self.max_text_chars:
            warnings.append(f"the text was cut to {self.max_text_chars:,} of {len(text):,} characters before sending")
            text = text[: self.max_text_chars]
        target = self.target()
        messages = [
            {"role": "system", "content": self._instructions(target)},
            {"role": "user", "content": f"Document: {name}\n\n{text}"},
        ]
        usage = _Usage()
        content = self._complete(messages, target, usage)
        fields, problems = _parse(content, target)
        if problems:
            messages += [
                {"role": "assistant", "content": content},
                {"role": "user", "content": "That answer is not valid against the schema:\n- " + "\n- ".join(problems)
                 + "\nReply with the corrected JSON object only."},
            ]
            content = self._complete(messages, target, usage)
            fields, problems = _parse(content, target)
            if problems:
                if usage.cut:
                    problems.insert(0, f"the answer stopped at max_tokens ({self.max_tokens}): raise it on the block")
                raise DocumentError(
                    ErrorKind.invalid_output,
                    f"the model's answer did not validate against the schema '{target.name}' after 2 tries: "
                    + "; ".join(problems[:3]),
                    raw_output=content[:RAW_OUTPUT_CHARS],
                    tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
                )
            warnings.append("the model's first answer did not validate; the second did")
        return Extraction(
            fields=target.complete(fields), text=read.text, pages=read.pages, media_type=read.media_type,
            warnings=warnings, fields_source=f"model:{self.model}", reader=read.reader or "text",
            tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
        )

    def _read_text(self, name: str, data: bytes) -> Extraction:
        """The document's text from the embedded extractor's parser, in its isolated workers."""
        from blocks.isolation import get_pool
        from blocks.parsing import ParseSettings, parse_document

        settings: ParseSettings = {
            "max_pages": self.max_pages, "extract_fields": False, "embedded_xml": False,
            "passwords": [p.get_secret_value() for p in self.passwords],
        }
        return get_pool(timeout_s=60.0, max_memory_mb=256, recycle_after=200).run(parse_document, name, data, settings)

    def _instructions(self, target: Any) -> str:
        parts = [SYSTEM_PROMPT]
        if self.prompt.strip():
            parts.append(self.prompt.strip())
        parts.append("JSON Schema:\n" + json.dumps(target.json_schema, separators=(",", ":")))
        return "\n\n".join(parts)

    # ------------------------------------------------------------------ the protocol

    def _complete(self, messages: list[dict[str, str]], target: Any, usage: _Usage) -> str:
        """One chat completion's message content, walking down the structured-output forms on refusal."""
        from blocks.http_client import HttpAuthError, HttpError

        key = f"{self.base_url}|{self.model}"
        forms = FORMS if self.response_format == "auto" else (self.response_format,)
        with _forms_lock:
            known = _accepted_forms.get(key)
        if known in forms:
            forms = forms[forms.index(known):]
        for n, form in enumerate(forms):
            last = n == len(forms) - 1
            try:
                # While a form is unproven, a refusal must come back at once, not after retries.
                answer = self._post(messages, target, form, attempts=self.max_attempts if (last or form == known) else 1)
            except HttpAuthError:
                raise  # stops the batch (HttpAuthError.stops_batch): no other form or document can do better
            except HttpError as exc:
                if not last and exc.status in (400, 422, 500) and _FORMAT_REFUSAL.search(exc.body_excerpt or ""):
                    continue
                raise
            with _forms_lock:
                _accepted_forms[key] = form
            return self._content(answer, usage)
        raise AssertionError("unreachable: the last form raises or returns")

    def _post(self, messages: list[dict[str, str]], target: Any, form: str, *, attempts: int) -> Any:
        from blocks.http_client import RetryPolicy, Timeouts, send

        body: dict[str, Any] = {
            "model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens,
        }
        if form == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "extraction", "schema": target.json_schema}}
        elif form == "json_object_schema":
            body["response_format"] = {"type": "json_object", "schema": target.json_schema}
        elif form == "json_object":
            body["response_format"] = {"type": "json_object"}
        headers = {k: v.get_secret_value() for k, v in self.extra_headers.items()}
        secrets = [v for v in headers.values() if v]
        if self.api_key is not None and self.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
            secrets.append(self.api_key.get_secret_value())
        return send(
            "POST", f"{self.base_url}/chat/completions", service=self.service, headers=headers, json=body,
            timeouts=Timeouts(read_s=self.timeout_s), retry=RetryPolicy(max_attempts=attempts), secrets=secrets,
        )

    def _content(self, answer: Any, usage: _Usage) -> str:
        try:
            reply = answer.json()
            usage.add(reply.get("usage") or {})
            choice = reply["choices"][0]
            content = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise DocumentError(
                ErrorKind.backend, f"{self.service} answered HTTP {answer.status} with a body that is no chat completion: "
                f"{answer.text[:200]!r}", transient=True,
            ) from None
        if not isinstance(content, str) or not content.strip():
            refusal = choice["message"].get("refusal") if isinstance(choice.get("message"), dict) else None
            raise DocumentError(
                ErrorKind.invalid_output, f"the model gave no answer{f' (refusal: {refusal})' if refusal else ''}",
                raw_output=json.dumps(choice)[:RAW_OUTPUT_CHARS], tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
            )
        usage.cut = choice.get("finish_reason") == "length"
        return content


class _Usage:
    """Tokens billed over a document's requests (retries and the validation round included)."""

    def __init__(self) -> None:
        self.tokens_in = 0
        self.tokens_out = 0
        self.cut = False  # the last answer stopped at max_tokens

    def add(self, usage: dict[str, Any]) -> None:
        self.tokens_in += int(usage.get("prompt_tokens") or 0)
        self.tokens_out += int(usage.get("completion_tokens") or 0)


def _numbered_pages(text: str, pages: int | None) -> str:
    parts = text.split("\f") if "\f" in text else [text]
    if len(parts) == 1 and not pages:
        return text
    return "\n\n".join(f"--- page {n} ---\n{part.strip()}" for n, part in enumerate(parts, start=1))


def _parse(content: str, target: Any) -> tuple[dict[str, Any], list[str]]:
    """The reply as a JSON object, and what breaks the schema in it (empty when valid)."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, [f"the answer is not JSON ({exc.msg} at character {exc.pos}); it must be one JSON object"]
    if not isinstance(data, dict):
        return {}, [f"the answer is a JSON {type(data).__name__}; it must be one JSON object"]
    return data, target.errors(data)
