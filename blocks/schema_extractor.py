"""What the extractors that fill a batch's schema (a model, a hosted service) share.

Each has a `target_schema` and a `prompt` (their own fields, described for their UI form); a
batch's settings replace them (`with_batch_settings`); the schema's content is part of the batch
key (`fingerprint`); exports lay out the schema's columns (`output_fields`); and because the
answer depends only on the bytes and the configuration, results may come from the result cache
(`cache_key`), leaving out the settings named in `NOT_IN_CACHE_KEY` (how the service is reached,
never what it answers).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from pydantic import PrivateAttr

from blocks.extractor import Extractor


class SchemaExtractor(Extractor):
    """Base of the extractors whose output is the batch's target schema (`blocks.schemas`)."""

    # Subclasses declare `target_schema: str` and `prompt: str` as fields of their own (described for
    # their form, in their form's order); declared here, pydantic would list them first in every form.

    NOT_IN_CACHE_KEY: ClassVar[set[str]] = set()
    _schema: Any = PrivateAttr(default=None)

    def with_batch_settings(self, *, schema: str, prompt: str) -> SchemaExtractor:
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

            self._schema = load_target_schema(self.target_schema)  # type: ignore[attr-defined]
        return self._schema

    def fingerprint(self) -> str:
        return f"schema:{self.target().digest}"

    def cache_key(self) -> str | None:
        settings = self.model_dump(mode="json", exclude=self.NOT_IN_CACHE_KEY)
        text = json.dumps({"label": self.label, "settings": settings, "fingerprint": self.fingerprint()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

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
