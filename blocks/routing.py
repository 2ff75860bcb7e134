"""Mixed folders: each document goes to the extractor, schema and prompt its route names.

A `routing-extractor` block holds routes evaluated in order; the first whose every given
condition holds takes the document:

- `paths`: globs on the document's path in the batch (`invoices/*`, `*.xlsx`; a folder name
  with a trailing slash matches everything under it);
- `media_types`: the type read from the content (`application/pdf`, `text/*`);
- `keywords`: words of which at least one is in the first page's text (case-insensitive);
- `document_type`: the type a model gave the document, when the block has a `classifier`
  (a saved `openai-compatible-extractor`): the model picks one of the routes' document types,
  each described by its route's `description`, or "other".

A route names an extractor (`embedded` or a saved block), and for model extractors a schema and
a prompt. A document no route takes goes to the route named `default_route`, or is skipped with
the reason. The chosen route is recorded on the result (`route`, a column in the exports), and
the tokens of a classification are counted with the document's. A route's `embedded` is the
embedded extractor with its defaults; a route that needs templates names a saved
`embedded-extractor` block. Routed documents are not served from the result cache.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from typing import Any, ClassVar

from pydantic import BaseModel, Field, PrivateAttr, field_validator

from blocks.errors import DocumentError
from blocks.extractor import Extractor
from blocks.models import ErrorKind, Extraction

OTHER = "other"


class Route(BaseModel):
    """One rule and where it sends the documents it takes."""

    name: str = Field(description="The route's name, recorded on each result it takes (e.g. 'invoices').")
    paths: list[str] = Field(default_factory=list, description="Globs on the path in the batch, e.g. 'invoices/*', '*.xlsx'.")
    media_types: list[str] = Field(default_factory=list, description="Content types, e.g. 'application/pdf', 'text/*'.")
    keywords: list[str] = Field(default_factory=list, description="At least one must be in the first page's text (any case).")
    document_type: str = Field(default="", description="A type the classifier model may give (e.g. 'purchase_order'); empty: not used.")
    description: str = Field(default="", description="What documents of this type look like: the classifier model reads it.")
    extractor: str = Field(default="embedded", description="'embedded' or a saved extractor block 'BLOCK-TYPE/NAME'.")
    target_schema: str = Field(default="", title="Schema", description="For a model extractor: its schema (as in a batch's settings).")
    prompt: str = Field(default="", description="For a model extractor: its prompt.")

    @field_validator("name")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a route needs a name")
        return value.strip()


class RoutingExtractor(Extractor):
    """Send each document of a mixed folder to the extractor, schema and prompt of its route.

    Example:
        ```python
        from blocks.routing import Route, RoutingExtractor
        RoutingExtractor(routes=[
            Route(name="e-invoices", media_types=["application/xml"]),
            Route(name="orders", paths=["orders/*"], extractor="openai-compatible-extractor/vllm", target_schema="po.json"),
            Route(name="invoices", keywords=["invoice", "rechnung", "facture"]),
        ], default_route="invoices").save("inbox")
        ```
    """

    _block_type_name: ClassVar[str] = "Routing Extractor"
    _block_type_slug: ClassVar[str] = "routing-extractor"
    _description: ClassVar[str] = (
        "Mixed folders: rules in order (path globs, content type, first-page keywords, a model's classification) "
        "send each document to its own extractor, schema and prompt."
    )

    routes: list[Route] = Field(default_factory=list, description="Evaluated in order; the first that matches takes the document.")
    default_route: str = Field(default="", description="Route for documents no rule takes; empty: they are skipped with the reason.")
    classifier: str = Field(
        default="", description="A saved 'openai-compatible-extractor/NAME' that classifies documents for routes with a document_type."
    )

    _resolved: dict[str, Extractor] = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    # ------------------------------------------------------------------ configuration

    def check(self) -> None:
        if not self.routes:
            raise ValueError("the routing extractor has no routes")
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names must differ: {sorted({n for n in names if names.count(n) > 1})}")
        if self.default_route and self.default_route not in names:
            raise ValueError(f"default_route {self.default_route!r} is not one of the routes {names}")
        typed = [r for r in self.routes if r.document_type]
        if typed and not self.classifier:
            raise ValueError(f"routes {[r.name for r in typed]} route by document_type, which needs a classifier block")
        for route in self.routes:
            if not (route.paths or route.media_types or route.keywords or route.document_type) and route.name != self.default_route:
                raise ValueError(f"route {route.name!r} has no condition: give paths, media_types, keywords or document_type")
            try:
                self._extractor(route)
            except ValueError as exc:
                raise ValueError(f"route {route.name!r}: {exc}") from None
        if self.classifier:
            self._classifier()

    def fingerprint(self) -> str:
        parts = [f"{r.name}={self._extractor(r).fingerprint()}" for r in self.routes]
        if self.classifier:
            parts.append(f"classifier={self._classifier().fingerprint()}")
        return ";".join(parts)

    def _extractor(self, route: Route) -> Extractor:
        """The route's extractor, loaded and checked once (a saved block is one API call)."""
        with self._lock:
            if route.name not in self._resolved:
                from blocks.resolve import resolve_extractor

                try:
                    self._resolved[route.name] = resolve_extractor(route.extractor, schema=route.target_schema, prompt=route.prompt)
                except Exception as exc:  # BatchRefused, SourceUnavailable: a route that cannot work
                    raise ValueError(str(exc)) from None
            return self._resolved[route.name]

    def _classifier(self) -> Any:
        with self._lock:
            if "\0classifier" not in self._resolved:
                from blocks.openai_compatible import OpenAICompatibleExtractor
                from blocks.resolve import load_block

                try:
                    block = load_block(self.classifier, OpenAICompatibleExtractor, "model extractor")
                except Exception as exc:  # noqa: BLE001
                    raise ValueError(f"classifier: {exc}") from None
                types = {r.document_type: r.description for r in self.routes if r.document_type}
                schema = {
                    "type": "object",
                    "properties": {"document_type": {"type": "string", "enum": [*types, OTHER]}},
                    "required": ["document_type"],
                }
                prompt = "Classify the document. Answer its document_type, one of:\n" + "\n".join(
                    f"- {name}: {description or name}" for name, description in types.items()
                ) + f"\n- {OTHER}: none of these"
                self._resolved["\0classifier"] = block.with_batch_settings(schema=json.dumps(schema), prompt=prompt)  # type: ignore[assignment]
            return self._resolved["\0classifier"]

    # ------------------------------------------------------------------ extraction

    def extract(self, name: str, data: bytes) -> Extraction:
        facts = _Facts(name, data, self)
        route = next((r for r in self.routes if facts.matches(r)), None)
        warnings: list[str] = []
        if route is None:
            if not self.default_route:
                raise DocumentError(
                    ErrorKind.refused, f"no route took it ({facts.why_not()}) and there is no default route", skip=True
                )
            route = next(r for r in self.routes if r.name == self.default_route)
            warnings.append(f"no route matched ({facts.why_not()}): default route {route.name!r}")
        extraction = self._extractor(route).extract(name, data)
        extraction.route = route.name
        extraction.warnings = [*warnings, *extraction.warnings]
        if facts.tokens_in or facts.tokens_out:
            extraction.tokens_in = (extraction.tokens_in or 0) + facts.tokens_in
            extraction.tokens_out = (extraction.tokens_out or 0) + facts.tokens_out
        return extraction


class _Facts:
    """What the rules ask of one document, each found once and only when a rule asks."""

    def __init__(self, name: str, data: bytes, block: RoutingExtractor) -> None:
        self.name, self.data, self.block = name, data, block
        self._media_type: str | None = None
        self._read_cache: Extraction | None = None
        self._first_page: str | None = None
        self._type: str | None = None
        self.tokens_in = self.tokens_out = 0

    def media_type(self) -> str:
        if self._media_type is None:
            from blocks import sniff

            found = sniff.sniff_binary(self.data)
            self._media_type = found or self._read().media_type
        return self._media_type

    def _read(self) -> Extraction:
        """The document's text as the embedded extractor reads it, once (keywords and media type ask it)."""
        if self._read_cache is None:
            from blocks.embedded import EmbeddedExtractor

            self._read_cache = EmbeddedExtractor(extract_fields=False, embedded_xml=False).extract(self.name, self.data)
        return self._read_cache

    def first_page(self) -> str:
        if self._first_page is None:
            self._first_page = self._read().text.split("\f", 1)[0].lower()
        return self._first_page

    def document_type(self) -> str:
        if self._type is None:
            answer = self.block._classifier().extract(self.name, self.data)
            self.tokens_in += answer.tokens_in or 0
            self.tokens_out += answer.tokens_out or 0
            self._type = answer.fields.get("document_type") or OTHER
        return self._type

    def matches(self, route: Route) -> bool:
        if route.paths and not any(_glob(self.name, p) for p in route.paths):
            return False
        if route.media_types and not any(fnmatch.fnmatchcase(self.media_type(), m) for m in route.media_types):
            return False
        if route.keywords and not any(k.lower() in self.first_page() for k in route.keywords):
            return False
        if route.document_type and self.document_type() != route.document_type:
            return False
        return bool(route.paths or route.media_types or route.keywords or route.document_type)

    def why_not(self) -> str:
        known = []
        if self._media_type:
            known.append(f"type {self._media_type}")
        if self._type:
            known.append(f"classified as {self._type}")
        return ", ".join(known) or "no rule matched its path"


def _glob(name: str, pattern: str) -> bool:
    if pattern.endswith("/"):
        return name.startswith(pattern)
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], pattern)
