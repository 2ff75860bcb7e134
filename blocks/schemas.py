"""The schema a batch extracts into, whatever form the user gave it in.

A batch names its target as one of:

- `invoice` or `receipt`: the built-in schemas (`blocks.invoice_schema`, `blocks.receipt_schema`);
- a JSON Schema: a file path (`--schema schema.json`) or the schema itself pasted as JSON (the
  UI form's text field);
- a saved `extraction-schema` block (`extraction-schema/purchase-orders`): fields with a name,
  type, description and required flag, nested one level (an object, or a list of objects such
  as line items), built by a person in the Prefect UI's block form.

Every form becomes one `TargetSchema`: a JSON Schema (draft 2020-12) that model back-ends send as
their structured-output format and that every answer is validated against, plus a digest of its
content that goes into the batch key (a changed file is a new configuration, though its path is
not). A schema that cannot be used is refused with a `ValueError` before any document is read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, field_validator

BUILT_IN = ("invoice", "receipt")
# Errors listed in a validation message (a model is asked to fix them; a person reads them).
MAX_ERRORS = 8
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ScalarType = Literal["string", "number", "integer", "boolean", "date"]


class SubField(BaseModel):
    """A field inside an object or inside each item of a list (one level of nesting)."""

    name: str = Field(description="Key in the output, e.g. 'quantity' (letters, digits, underscores).")
    type: Literal["string", "number", "integer", "boolean", "date", "list"] = Field(
        default="string", description="'date' is an ISO 8601 string (YYYY-MM-DD); 'list' is a list of strings."
    )
    description: str = Field(default="", description="What the value is: the model reads this.")
    required: bool = Field(default=False, description="The value must be present and not empty.")

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a field name: use letters, digits and underscores, not starting with a digit")
        return value


class SchemaField(SubField):
    """A top-level field; an `object` or a `list` of objects has its own fields."""

    type: Literal["string", "number", "integer", "boolean", "date", "object", "list"] = Field(  # type: ignore[assignment]
        default="string",
        description="'object': one group of sub-fields; 'list': many (line items) when it has sub-fields, "
        "else a list of strings; 'date': an ISO 8601 string.",
    )
    fields: list[SubField] = Field(default_factory=list, description="Sub-fields of an object, or of each list item.")


class ExtractionSchema(Block):
    """The fields a batch extracts, built in the Prefect UI's form and picked by name.

    Example:
        ```python
        from blocks.schemas import ExtractionSchema, SchemaField, SubField
        ExtractionSchema(title="Purchase order", fields=[
            SchemaField(name="po_number", required=True, description="The purchase order number"),
            SchemaField(name="lines", type="list", fields=[SubField(name="sku"), SubField(name="quantity", type="number")]),
        ]).save("purchase-orders")
        ```
    """

    _block_type_name: ClassVar[str] = "Extraction Schema"
    _block_type_slug: ClassVar[str] = "extraction-schema"
    _description: ClassVar[str] = (
        "The fields a batch extracts (name, type, description, required; objects and lists of objects), "
        "for model extractors. Pick it in a batch as 'extraction-schema/NAME'."
    )

    title: str = Field(default="", description="What these documents are, e.g. 'Purchase order'.")
    description: str = Field(default="", description="Anything the model should know about the documents.")
    fields: list[SchemaField] = Field(default_factory=list, description="The fields to extract, in output order.")

    def json_schema(self) -> dict[str, Any]:
        """The fields as a JSON Schema object."""
        if not self.fields:
            raise ValueError("the extraction schema has no fields")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"the extraction schema names a field twice: {sorted({n for n in names if names.count(n) > 1})}")
        schema = _object(self.fields)
        if self.title:
            schema["title"] = self.title
        if self.description:
            schema["description"] = self.description
        return schema


def _scalar(kind: str, description: str, required: bool) -> dict[str, Any]:
    json_type = {"string": "string", "date": "string", "number": "number", "integer": "integer", "boolean": "boolean"}[kind]
    out: dict[str, Any] = {"type": json_type if required else [json_type, "null"]}
    if kind == "date":
        out["format"] = "date"
        description = (description + " " if description else "") + "(ISO 8601 date, YYYY-MM-DD)"
    if description:
        out["description"] = description
    return out


def _field(spec: SubField) -> dict[str, Any]:
    if spec.type == "list":
        subfields = getattr(spec, "fields", [])
        items = _object(subfields) if subfields else {"type": "string"}
        out: dict[str, Any] = {"type": "array", "items": items}
        if spec.description:
            out["description"] = spec.description
        if spec.required:
            out["minItems"] = 1
        return out
    if spec.type == "object":
        out = _object(getattr(spec, "fields", []))
        if not spec.required:
            out["type"] = ["object", "null"]
        if spec.description:
            out["description"] = spec.description
        return out
    return _scalar(spec.type, spec.description, spec.required)


def _object(fields: list[Any]) -> dict[str, Any]:
    if not fields:
        raise ValueError("an object or list of objects needs at least one sub-field")
    return {
        "type": "object",
        "properties": {f.name: _field(f) for f in fields},
        "required": [f.name for f in fields if f.required],
    }


@dataclass(frozen=True)
class TargetSchema:
    """One batch's target: a JSON Schema, where it came from, and its content's digest."""

    name: str  # 'invoice', 'receipt', 'extraction-schema/NAME', the file path, or 'inline'
    json_schema: dict[str, Any]
    digest: str
    _validator: Any = field(default=None, compare=False, repr=False)

    def errors(self, data: Any) -> list[str]:
        """What in `data` breaks the schema, as 'path: message' lines (at most MAX_ERRORS)."""
        validator = self._validator or _validator(self.json_schema)
        found = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in found[:MAX_ERRORS]]
        if len(found) > MAX_ERRORS:
            lines.append(f"… and {len(found) - MAX_ERRORS} more")
        return lines

    def complete(self, data: dict[str, Any]) -> dict[str, Any]:
        """Valid output with every declared key present (None or [] where the answer left one out),
        so exports get the same columns from every document."""
        if self.name == "invoice":
            from blocks.invoice_schema import InvoiceFields

            return InvoiceFields(**data).model_dump()
        if self.name == "receipt":
            from blocks.receipt_schema import ReceiptFields

            return ReceiptFields(**data).model_dump()
        return _fill(self.json_schema, data)


def _fill(schema: dict[str, Any], value: Any) -> Any:
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    out = dict(value)
    for key, sub in schema["properties"].items():
        kinds = sub.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if key not in out:
            out[key] = [] if "array" in kinds else None
        elif "object" in kinds:
            out[key] = _fill(sub, out[key])
        elif "array" in kinds and isinstance(out[key], list) and isinstance(sub.get("items"), dict):
            out[key] = [_fill(sub["items"], item) for item in out[key]]
    return out


def _validator(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(schema, format_checker=FormatChecker())


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's `$defs`/`$ref` resolved in place: small model servers' grammar builders and
    some hosted APIs do not follow references."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                target = walk(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[1]]))
                rest = {k: walk(v) for k, v in node.items() if k != "$ref"}
                return {**target, **rest}
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _built_in(name: str) -> dict[str, Any]:
    if name == "invoice":
        from blocks.invoice_schema import InvoiceFields as model
    else:
        from blocks.receipt_schema import ReceiptFields as model  # type: ignore[assignment]
    return _inline_refs(model.model_json_schema())


def _looks_like_block(spec: str) -> bool:
    head, sep, tail = spec.partition("/")
    return head == ExtractionSchema.get_block_type_slug() and bool(sep and tail) and not Path(spec).exists()


def load_target_schema(spec: str) -> TargetSchema:
    """The batch's target schema from what the user gave (see the module docstring).

    Raises ValueError, naming the file or block and the reason, for a schema that cannot be used.
    """
    spec = (spec or "").strip() or "invoice"
    if spec in BUILT_IN:
        schema, name = _built_in(spec), spec
    elif spec.startswith("{"):
        schema, name = _parse(spec, "the pasted schema"), "inline"
    elif _looks_like_block(spec):
        try:
            block = ExtractionSchema.load(spec.partition("/")[2])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"no saved extraction schema named {spec!r} ({exc})") from None
        schema, name = block.json_schema(), spec
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(
                f"schema {spec!r} is neither 'invoice', 'receipt', a JSON Schema file that exists, "
                "pasted JSON, nor 'extraction-schema/NAME'"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"schema file {spec}: cannot be read ({exc})") from None
        schema, name = _parse(text, f"schema file {spec}"), spec
    _check(schema, name)
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    return TargetSchema(name=name, json_schema=schema, digest=digest, _validator=_validator(schema))


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(schema, dict):
        raise ValueError(f"{where} is not a JSON Schema: it is a JSON {type(schema).__name__}, not an object")
    return schema


def _check(schema: dict[str, Any], name: str) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        raise ValueError(f"{name}: the schema must describe a JSON object with properties (\"type\": \"object\", \"properties\": {{…}})")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ValueError(f"{name}: not a valid JSON Schema at {where}: {exc.message}") from None
    text = json.dumps(schema)
    if re.search(r'"\$ref":\s*"(?!#)', text):
        raise ValueError(f"{name}: references to other documents ($ref to a URL or file) are not followed: inline them")
