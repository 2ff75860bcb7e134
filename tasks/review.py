"""The review flag of a succeeded document: its checks, and whether a person should look at it.

Called by `tasks.extract.extract_one` on every succeeded result, whatever the extractor, so a
result's `checks`, `review` and `review_reasons` are final when it reaches the journal and the
exports. Failed and skipped documents keep `review` None. The rules are `blocks.validation`'s;
this module finds which schema the document's fields follow (the extraction's `schema_name`,
else the extractor's target schema, the routed extractor's for a routing extractor, else the
fields' shape) and applies the batch's confidence threshold.
"""

from __future__ import annotations

import logging
from typing import Any

from blocks.extractor import Extractor
from blocks.models import DocumentResult
from blocks.validation import review, required_fields, schema_kind, validate

log = logging.getLogger("docbatch.review")


def target_schema(extractor: Extractor, route: str | None) -> Any:
    """The `TargetSchema` the document was extracted into, when its extractor has one (model and
    hosted extractors, or the one a routing extractor's route sent it to); else None."""
    if route is not None and hasattr(extractor, "routes"):
        chosen = next((r for r in getattr(extractor, "routes") if r.name == route), None)
        resolve = getattr(extractor, "_extractor", None)  # the routing block's loaded-once route extractors
        if chosen is None or resolve is None:
            return None
        try:
            extractor = resolve(chosen)
        except Exception:  # noqa: BLE001 - a route that cannot load has no schema to read; it failed elsewhere
            return None
    target = getattr(extractor, "target", None)
    if not callable(target):
        return None
    try:
        return target()
    except ValueError:
        return None


def apply_review(result: DocumentResult, extractor: Extractor, min_confidence: float) -> DocumentResult:
    """Set `checks`, `review` and `review_reasons` on a succeeded result (in place; returned)."""
    if result.status != "succeeded":
        result.review, result.review_reasons, result.checks = None, [], []
        return result
    schema = target_schema(extractor, result.route)
    name = result.schema_name
    json_schema = None
    if schema is not None:
        if schema.name in ("invoice", "receipt"):
            name = name or schema.name
        else:
            name, json_schema = name or schema.json_schema.get("title") or schema.name, schema.json_schema
    kind = schema_kind(result.fields, name, result.fields_source)
    try:
        checks = validate(result.fields, kind)
    except Exception as exc:  # noqa: BLE001 - a check that raises is a bug; it must not fail the document
        log.warning("%s: validation raised %s: %s", result.ref.name, type(exc).__name__, exc)
        checks = []
    state, reasons = review(result.fields, checks, required_fields(kind, json_schema), result.provenance, min_confidence)
    result.checks, result.review, result.review_reasons = checks, state, reasons
    return result
