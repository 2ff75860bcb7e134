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

Long documents: when the instructions, the document's text and room for the answer
(`max_tokens`) would exceed the model's context (`context_tokens`, text estimated at
`CONTEXT_CHARS_PER_TOKEN` characters a token), the pages are packed in order into parts that fit (a
page longer than a part is split by characters, with a warning), each part is asked on its own
against the schema with nothing required and everything nullable (a part need not hold every
field), with the same validation round, and the answers are merged (`merge_answers`): lists
concatenated, dropping items equal to one an earlier part gave; objects merged key by key;
other values the first non-empty one, with a warning naming the field when parts disagree. The
merged fields are validated against the batch's schema once more. Tokens are summed over all
requests. A server that still refuses a request as longer than its context gets the document
split again at a lower characters-per-token figure (`OVERFLOW_FACTOR`), which the block then
keeps for that endpoint and model. Every result's fields get their provenance from the
document's text, split or not, with the box of their words where the text reading had positioned
words (PDF pages, OCR'd pages and images): `blocks.source_provenance`, kind 'model'.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from blocks.errors import DocumentError
from blocks.schema_extractor import SchemaExtractor
from blocks.models import ErrorKind, Extraction

FORMS = ("json_schema", "json_object_schema", "json_object", "none")
# Characters per token for estimates (dry run, tokens-per-minute limits): about 4 for English and
# other Latin-script text with the common BPE tokenizers; the server's own count is what is billed.
CHARS_PER_TOKEN = 4
# What one page image counts as in estimates: vision models bill a page-sized image at roughly
# 750-1,100 tokens, about a page of text.
IMAGE_CHARS = 3000
RAW_OUTPUT_CHARS = 2000
# A refusal that names the structured-output request (OpenAI, vLLM, llama.cpp, Ollama phrasing).
_FORMAT_REFUSAL = re.compile(r"response_format|json_schema|json_object|\bschema\b|grammar", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
# Characters per token when sizing requests to the context (`context_tokens`): lower than
# CHARS_PER_TOKEN, as German, numbers and JSON run nearer 3 than 4, and a request over the
# context fails where one a little under it only costs an extra part.
CONTEXT_CHARS_PER_TOKEN = 3.0
# Tokens a chat template adds around the messages (role markers, begin/end of turn).
FRAMING_TOKENS = 32
# A part must carry at least this many characters of the document, else the settings are refused.
MIN_PART_CHARS = 200
# A server that refuses a request as longer than its context (the tokenizer packs fewer
# characters a token than the estimate) gets the document split again with the estimate times
# this factor, at most OVERFLOW_RETRIES times; the lower figure is kept per endpoint and model.
OVERFLOW_FACTOR = 0.7
OVERFLOW_RETRIES = 2
_CONTEXT_OVERFLOW = re.compile(
    r"context_length_exceeded|maximum context length|context (?:length|size|window)|exceeds? the (?:available )?context"
    r"|too many tokens|prompt is too long|input is too long",
    re.IGNORECASE,
)
PART_NOTE = "This request holds only this part of the document: answer from it alone, null or [] for the rest."

# The form each endpoint+model accepted, shared by every instance in this process (a batch's
# threads and later batches alike), so only the first documents pay for a refused form.
_accepted_forms: dict[str, str] = {}
# Characters per token each endpoint+model showed itself to hold at most (see OVERFLOW_FACTOR).
_chars_per_token: dict[str, float] = {}
_forms_lock = threading.Lock()

SYSTEM_PROMPT = (
    "You extract structured data from documents. Answer with exactly one JSON object that is valid "
    "against the JSON Schema below, and nothing else. Use null (or an empty list) for anything the "
    "document does not state; never invent values. Write dates as YYYY-MM-DD and amounts as plain "
    "numbers without currency signs or thousands separators. The document's pages are marked "
    "'--- page N ---'."
)


class OpenAICompatibleExtractor(SchemaExtractor):
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
    context_tokens: int = Field(
        default=8192, ge=256, le=10_000_000,
        description="The model's context window in tokens (instructions, document and answer together). A longer "
        "document is split by pages into requests that fit, and their answers merged.",
    )
    passwords: list[SecretStr] = Field(default_factory=list, description="Candidate passwords for encrypted PDFs.")
    page_images: bool = Field(
        default=False,
        description="Also send the pages as images (vision models): PDF pages rendered at image_dpi, image documents "
        "as they are. A scan or photo without a text layer is then read from its images alone.",
    )
    image_dpi: int = Field(default=110, ge=36, le=300, description="Resolution of rendered pages (longer side at most 2,000 px).")
    max_image_pages: int = Field(default=8, ge=1, le=100, description="Pages sent as images at most (the first ones).")
    max_concurrent_requests: int | None = Field(
        default=None, ge=1,
        description="Requests in flight at once for EVERY batch using this block (a Prefect global concurrency limit "
        "named after the block, created on first use). Empty: only each batch's own concurrency.",
    )
    requests_per_minute: int | None = Field(default=None, ge=1, description="Shared by every batch using this block (a Prefect rate limit).")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Shared by every batch using this block; each request counts its estimate (prompt characters / 4 + max_tokens)."
    )
    price_per_million_tokens_in: float | None = Field(default=None, ge=0, description="Price of 1,000,000 prompt tokens, for costs and budgets.")
    price_per_million_tokens_out: float | None = Field(default=None, ge=0, description="Price of 1,000,000 completion tokens.")


    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value

    # ------------------------------------------------------------------ the batch's configuration

    def check(self) -> None:
        if not self.model.strip():
            raise ValueError("the model name is empty")
        self._part_room("x" * 40, _partial_target(self.target()))

    def cost(self, tokens_in: int | None, tokens_out: int | None) -> float | None:
        if self.price_per_million_tokens_in is None and self.price_per_million_tokens_out is None:
            return None
        if tokens_in is None and tokens_out is None:
            return None
        return round(
            ((tokens_in or 0) * (self.price_per_million_tokens_in or 0) + (tokens_out or 0) * (self.price_per_million_tokens_out or 0)) / 1e6,
            8,
        )

    # Settings that change how a request is sent, never what the model answers.
    NOT_IN_CACHE_KEY: ClassVar[set[str]] = {
        "api_key", "extra_headers", "timeout_s", "max_attempts", "max_concurrent_requests", "requests_per_minute",
        "tokens_per_minute", "price_per_million_tokens_in", "price_per_million_tokens_out", "passwords",
    }

    def limits(self) -> Any:
        from blocks.rate_limits import BackendLimits

        return BackendLimits(
            max_concurrent_requests=self.max_concurrent_requests, requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
        )

    def limit_prefix(self) -> str:
        from blocks.rate_limits import limit_prefix

        return limit_prefix(self.label, getattr(self, "_block_document_name", None), f"{self.base_url}|{self.model}")

    def estimate(self, name: str, data: bytes) -> Any:
        """The requests `extract` would send for this document (one per part of a long one),
        estimated (for `--dry-run`); sends nothing."""
        from blocks.models import TokenEstimate

        read = self._read_text(name, data)
        plan = self._plan(name, read, self.target(), self._chars_per_token())
        prompt_chars = sum(len(plan.instructions) + len(document) for _, document in plan.requests)
        requests = len(plan.requests)
        tokens_in = prompt_chars // CHARS_PER_TOKEN + requests
        tokens_out_max = self.max_tokens * requests
        return TokenEstimate(
            pages=read.pages, text_chars=plan.text_chars, requests=requests, tokens_in=tokens_in,
            tokens_out_max=tokens_out_max, cost_max=self.cost(tokens_in, tokens_out_max),
        )

    @property
    def service(self) -> str:
        return f"{self.label} ({self.model} at {self.base_url})"

    # ------------------------------------------------------------------ extraction

    def extract(self, name: str, data: bytes) -> Extraction:
        from blocks.http_client import HttpError

        images = self._page_images(name, data) if self.page_images else []
        try:
            read = self._read_text(name, data)
        except DocumentError as exc:
            if not (images and exc.kind is ErrorKind.no_text):
                raise
            read = Extraction(text="", pages=len(images), media_type=images[0][0] if len(images) == 1 else "application/pdf",
                              warnings=["no text layer: the model read the page images only"])
        warnings = list(read.warnings)
        target = self.target()
        usage = _Usage()
        for retry in range(OVERFLOW_RETRIES + 1):
            ratio = self._chars_per_token()
            plan = self._plan(name, read, target, ratio)
            notes = list(plan.notes)
            try:
                if images and len(plan.requests) > 1:
                    notes.append("page images are sent only with a document that fits one request: this one was split, text only")
                answers = [
                    self._ask(document, plan.instructions, plan.target, usage, notes, part=label,
                              images=images if len(plan.requests) == 1 else [])
                    for label, document in plan.requests
                ]
                break
            except HttpError as exc:
                if retry == OVERFLOW_RETRIES or exc.status not in (400, 413, 422) or not _CONTEXT_OVERFLOW.search(exc.body_excerpt or ""):
                    raise
                lower = round(ratio * OVERFLOW_FACTOR, 2)
                key = f"{self.base_url}|{self.model}"
                with _forms_lock:
                    _chars_per_token[key] = min(lower, _chars_per_token.get(key, CONTEXT_CHARS_PER_TOKEN))
                warnings.append(
                    f"the server refused a request as longer than the model's context ({self.context_tokens:,} tokens): "
                    f"the document was split again, counting {lower} characters a token"
                )
        warnings.extend(notes)
        fields = answers[0] if len(answers) == 1 else self._merge(answers, plan, target, usage, warnings)
        fields = target.complete(fields)
        return Extraction(
            fields=fields, text=read.text, pages=read.pages, media_type=read.media_type,
            warnings=warnings, fields_source=f"model:{self.model}", reader=read.reader or "text",
            tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
            provenance=self._provenance(fields, read),
        )

    def _chars_per_token(self) -> float:
        with _forms_lock:
            return _chars_per_token.get(f"{self.base_url}|{self.model}", CONTEXT_CHARS_PER_TOKEN)

    def _plan(self, name: str, read: Extraction, target: Any, ratio: float = CONTEXT_CHARS_PER_TOKEN) -> _Plan:
        """The requests for one document: the whole text in one if it fits the context, else one per part."""
        notes: list[str] = []
        paged = "\f" in read.text or bool(read.pages)
        pages = read.text.split("\f") if paged else [read.text]
        text = _numbered_pages(read.text, read.pages)
        if len(text) > self.max_text_chars:
            notes.append(f"the text was cut to {self.max_text_chars:,} of {len(text):,} characters before sending")
            text = text[: self.max_text_chars]
        instructions = self._instructions(target)
        if len(text) <= self._room(instructions, f"Document: {name}\n\n", ratio):
            return _Plan(instructions, target, [("", f"Document: {name}\n\n{text}")], [], pages, paged, notes, len(text))
        partial = _partial_target(target)
        try:
            instructions, room = self._part_room(name, partial, ratio)
        except ValueError as exc:
            raise DocumentError(ErrorKind.too_large, f"the document is longer than the model's context, and {exc}") from None
        parts, split_notes = split_pages(pages, room, paged=paged, limit=self.max_text_chars)
        notes.extend(split_notes)
        notes.append(
            f"the document is longer than the model's context ({self.context_tokens:,} tokens): sent in {len(parts)} "
            f"parts of at most {room:,} characters ({', '.join(p.label for p in parts)})"
        )
        requests = []
        for number, part in enumerate(parts, start=1):
            label = f"part {number} of {len(parts)} ({part.label})"
            requests.append((label, f"Document: {name}, {label}. {PART_NOTE}\n\n{part.text}"))
        return _Plan(
            instructions, partial, requests, [p.label for p in parts], pages, paged, notes, sum(len(p.text) for p in parts),
        )

    def _ask(
        self, document: str, instructions: str, target: Any, usage: _Usage, warnings: list[str], part: str = "",
        images: list[tuple[str, bytes]] | None = None,
    ) -> dict[str, Any]:
        """One document (or part) asked, validated, and asked once more with the errors if invalid."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}, {"role": "user", "content": _user_content(document, images or [])}]
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
                    f"{part + ': ' if part else ''}the model's answer did not validate against the schema "
                    f"'{target.name}' after 2 tries: " + "; ".join(problems[:3]),
                    raw_output=content[:RAW_OUTPUT_CHARS],
                    tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
                )
            warnings.append(f"{part + ': ' if part else ''}the model's first answer did not validate; the second did")
        return fields

    def _merge(self, answers: list[dict[str, Any]], plan: _Plan, target: Any, usage: _Usage, warnings: list[str]) -> dict[str, Any]:
        """The parts' answers merged (`merge_answers`) and validated against the batch's schema."""
        merged, notes = merge_answers(answers, plan.labels)
        warnings.extend(notes)
        problems = target.errors(merged)
        if problems:
            raise DocumentError(
                ErrorKind.invalid_output,
                f"the answers for the document's {len(answers)} parts, merged, do not validate against the schema "
                f"'{target.name}': " + "; ".join(problems[:3]),
                raw_output=json.dumps(merged, ensure_ascii=False)[:RAW_OUTPUT_CHARS],
                tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
            )
        return merged

    def _room(self, instructions: str, header: str, ratio: float = CONTEXT_CHARS_PER_TOKEN) -> int:
        """Characters of document text one request may carry besides `instructions` and `header`,
        at `ratio` characters a token."""
        used = math.ceil((len(instructions) + len(header)) / ratio)
        return int((self.context_tokens - self.max_tokens - FRAMING_TOKENS - used) * ratio)

    def _part_room(self, name: str, partial: Any, ratio: float = CONTEXT_CHARS_PER_TOKEN) -> tuple[str, int]:
        """The instructions for parts and the characters of text each part may carry; refuses
        settings that leave fewer than MIN_PART_CHARS."""
        instructions = self._instructions(partial)
        longest = f"Document: {name}, part 9999 of 9999 (pages 99999–99999). {PART_NOTE}\n\n"
        room = self._room(instructions, longest, ratio)
        if room < MIN_PART_CHARS:
            raise ValueError(
                f"context_tokens ({self.context_tokens:,}) leaves no room for the document: the instructions and schema take "
                f"about {math.ceil(len(instructions) / ratio):,} tokens and the answer max_tokens "
                f"({self.max_tokens:,}); raise context_tokens to the model's context or lower max_tokens"
            )
        return instructions, room

    def _page_images(self, name: str, data: bytes) -> list[tuple[str, bytes]]:
        """The pages as images (`blocks.page_images`), rendered in the isolated parse workers."""
        from blocks.isolation import get_pool
        from blocks.page_images import page_images

        return get_pool(timeout_s=60.0, max_memory_mb=256, recycle_after=200).run(
            page_images, name, data, max_pages=self.max_image_pages, dpi=self.image_dpi, max_side=2000,
            passwords=[p.get_secret_value() for p in self.passwords],
        )

    def _read_text(self, name: str, data: bytes) -> Extraction:
        """The document's text as the embedded extractor reads it (its isolated workers and limits)."""
        from blocks.embedded import EmbeddedExtractor

        # scans and images are read by OCR, unless the model is sent the page images: it reads them itself
        reader = EmbeddedExtractor(
            max_pages=self.max_pages, extract_fields=False, embedded_xml=False, passwords=self.passwords,
            ocr=not self.page_images,
        )
        reader._keep_words = True  # the answers are boxed with them (_provenance)
        return reader.extract(name, data)

    def _provenance(self, fields: dict[str, Any], read: Extraction) -> dict[str, Any] | None:
        """Where each answered value stands in the document's text, with the box of its words
        (`blocks.source_provenance`, kind 'model'): page, text, offsets, box and confidence."""
        from blocks.document import PageSize, ReadDocument, Word
        from blocks.field_paths import FieldsOutcome
        from blocks.source_provenance import provenance_of

        document = ReadDocument(
            text=read.text, pages=read.pages, media_type=read.media_type,
            words=[Word(*word) for word in read.words or []],
            page_sizes=[PageSize(*size) for size in read.page_sizes or []],
        )
        return provenance_of(document, FieldsOutcome(fields, f"model:{self.model}"))

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
        from blocks.rate_limits import request_slot

        estimate = sum(_chars(m["content"]) for m in messages) // CHARS_PER_TOKEN + self.max_tokens
        with request_slot(self.limit_prefix(), self.limits(), tokens=estimate, timeout_s=self.timeout_s):
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


@dataclass
class _Plan:
    """What `extract` sends for one document (and `estimate` counts)."""

    instructions: str
    target: Any  # the batch's TargetSchema, or for parts its relaxed form
    requests: list[tuple[str, str]]  # (part label, '' for a whole document; the user message)
    labels: list[str]  # the parts' page labels ('pages 1–2'), empty for a whole document
    pages: list[str]  # the page texts, for provenance
    paged: bool
    notes: list[str]  # warnings for the result
    text_chars: int  # characters of document text sent


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


# ---------------------------------------------------------------------------- long documents


@dataclass
class Part:
    """Consecutive pages (or pieces of one page) sent in one request."""

    text: str
    first_page: int | None  # None: a document without pages
    last_page: int | None
    label: str  # 'pages 3–4', 'page 5', 'page 6 (continued)', 'characters 1–12,000'


def split_pages(pages: list[str], room: int, *, paged: bool = True, limit: int | None = None) -> tuple[list[Part], list[str]]:
    """Pages packed in order into parts of at most `room` characters, and warnings.

    Each page is sent as '--- page N ---' and its stripped text (as in an unsplit request), pages
    joined by blank lines. A page longer than `room` is split by characters, at a line break or
    space where one is near, into pieces headed '--- page N (continued) ---' after the first;
    unpaged text (`paged=False`) is split the same way without headers. `limit` caps the
    characters sent over all parts (the block's max_text_chars).
    """
    pieces: list[tuple[int | None, str, bool]] = []  # (page, rendered text, a continuation)
    notes: list[str] = []
    for number, page in enumerate(pages, start=1):
        body = page.strip()
        header = f"--- page {number} ---\n" if paged else ""
        if len(header) + len(body) <= room:
            pieces.append((number if paged else None, header + body, False))
            continue
        more = f"--- page {number} (continued) ---\n" if paged else ""
        size = room - len(more)
        chunks = _split_text(body, size)
        notes.append(
            (f"page {number} alone is longer than one request can carry" if paged else
             "the document has no pages and is longer than one request can carry")
            + f" ({len(body):,} of at most {size:,} characters): split by characters into {len(chunks)} pieces"
        )
        for k, chunk in enumerate(chunks):
            pieces.append((number if paged else None, (more if k else header) + chunk, k > 0))
    budget = limit if limit is not None else math.inf
    parts: list[Part] = []
    current: list[tuple[int | None, str, bool]] = []

    def close() -> None:
        if current:
            parts.append(_part(current, paged))
            current.clear()

    for page, text, continued in pieces:
        if current and sum(len(t) + 2 for _, t, _ in current) + len(text) > room:
            close()
        joint = 2 if current else 0
        if len(text) + joint > budget:  # max_text_chars reached: this piece cut, the rest not sent
            text = text[: max(0, int(budget) - joint)]
        if not text:
            break
        budget -= len(text) + joint
        current.append((page, text, continued))
    close()
    return parts, notes


def _split_text(text: str, size: int) -> list[str]:
    """`text` in pieces of at most `size` characters, cut at a line break or space in the last half."""
    pieces = []
    while len(text) > size:
        cut = text.rfind("\n", size // 2, size)
        if cut <= 0:
            cut = text.rfind(" ", size // 2, size)
        if cut <= 0:
            cut = size
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    pieces.append(text)
    return [p for p in pieces if p]


def _part(pieces: list[tuple[int | None, str, bool]], paged: bool) -> Part:
    text = "\n\n".join(t for _, t, _ in pieces)
    first, last = pieces[0][0], pieces[-1][0]
    if not paged:
        return Part(text=text, first_page=None, last_page=None, label=f"text part of {len(text):,} characters")
    label = f"page {first}" if first == last else f"pages {first}–{last}"
    if pieces[0][2]:
        label += " (continued)"
    return Part(text=text, first_page=first, last_page=last, label=label)


def merge_answers(answers: list[dict[str, Any]], labels: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The parts' answers as one, and a warning per field the parts disagree on.

    Objects are merged key by key; lists concatenated in part order, an item equal (by its JSON)
    to one an earlier part gave left out (repeats within one part are kept: two equal line items
    on one page are two line items); any other value is the first non-empty one (not null, not an
    empty or blank string), and a later non-empty value that differs (strings ignoring case and
    whitespace) is named in a warning.
    """
    disagreements: dict[str, list[str]] = {}
    merged = _merge([(answer, label) for answer, label in zip(answers, labels)], "", disagreements)
    notes = [f"the parts disagree on '{path}': {'; '.join(values)}" for path, values in disagreements.items()]
    return (merged if isinstance(merged, dict) else {}), notes


def _merge(values: list[tuple[Any, str]], path: str, disagreements: dict[str, list[str]]) -> Any:
    present = [(v, label) for v, label in values if not _empty(v)]
    if not present:
        return next((v for v, _ in values if v is not None), None)
    if all(isinstance(v, dict) for v, _ in present):
        keys = list(dict.fromkeys(k for v, _ in present for k in v))
        return {k: _merge([(v.get(k), label) for v, label in present], f"{path}.{k}" if path else k, disagreements) for k in keys}
    if all(isinstance(v, list) for v, _ in present):
        out: list[Any] = []
        earlier: set[str] = set()
        for items, _ in present:
            keys = [json.dumps(item, sort_keys=True, default=str) for item in items]
            out.extend(item for item, key in zip(items, keys) if key not in earlier)
            earlier.update(keys)
        return out
    first, label = present[0]
    differing = [(v, other) for v, other in present[1:] if not _same(v, first)]
    if differing:
        disagreements[path or "(top level)"] = [f"kept {_show(first)} ({label})"] + [
            f"not {_show(v)} ({other})" for v, other in differing
        ]
    return first


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, (list, dict)) and not value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "…"


def _partial_target(target: Any) -> Any:
    """The target as one part of a document is asked for: no field required, every field but a
    list nullable, no list with a minimum length (list items keep their schema: an item is in
    one part whole)."""
    from blocks.schemas import TargetSchema

    return TargetSchema(name=target.name, json_schema=_relaxed(target.json_schema, nullable=False), digest=target.digest)


def _relaxed(node: Any, nullable: bool = True) -> Any:
    """`node` with nothing required below it and, where `nullable`, itself allowing null."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    out.pop("required", None)
    out.pop("minItems", None)
    if isinstance(node.get("properties"), dict):
        out["properties"] = {k: _relaxed(v) for k, v in node["properties"].items()}
    for key in ("$defs", "definitions"):
        if isinstance(node.get(key), dict):
            out[key] = {k: _relaxed(v, nullable=False) for k, v in node[key].items()}
    # List items stay as they are: an item (a line item) is in one part whole, or not at all.
    if isinstance(node.get("allOf"), list):
        out["allOf"] = [_relaxed(v, nullable=False) for v in node["allOf"]]
    alternatives_null = False
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            alternatives = [_relaxed(v, nullable=False) for v in node[key]]
            if nullable and not any(_nullable(v) for v in alternatives):
                alternatives.append({"type": "null"})
            out[key] = alternatives
            alternatives_null = True
    kind = node.get("type")
    if not nullable or kind == "array" or (isinstance(kind, list) and "array" in kind):
        return out  # a list stays a list: a part without items answers []
    if isinstance(kind, str) and kind != "null":
        out["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        out["type"] = [*kind, "null"]
    if isinstance(node.get("enum"), list) and None not in node["enum"]:
        out["enum"] = [*node["enum"], None]
    if ("$ref" in node or "allOf" in node or "const" in node) and not alternatives_null:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _nullable(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def _user_content(document: str, images: list[tuple[str, bytes]]) -> Any:
    """The user message: the text alone, or (vision) the text followed by the page images as data URLs."""
    if not images:
        return document
    import base64

    return [
        {"type": "text", "text": document},
        *({"type": "image_url", "image_url": {"url": f"data:{media};base64,{base64.b64encode(raw).decode()}"}} for media, raw in images),
    ]


def _chars(content: Any) -> int:
    """Characters of a message's content for estimates; an image counts as a page of text (~3,000)."""
    if isinstance(content, str):
        return len(content)
    return sum(len(part.get("text", "")) if part.get("type") == "text" else IMAGE_CHARS for part in content)
