"""`docbatch run --dry-run`: what a batch would send to a model, and what it would cost, sending nothing.

The documents are listed and read as the batch would (same source, filters and limits), each
one's text is read by the embedded parser, and the extractor estimates the request it would make:
prompt tokens from the characters it would send (about 4 characters a token for Latin text; the
server's tokenizer decides the real count), the most tokens an answer may take (`max_tokens`),
and the cost at the block's prices. No flow run is created and no request leaves the machine.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from blocks.errors import DocumentError
from blocks.models import TokenEstimate
from flows.params import ExtractionSettings


class DryRunItem(BaseModel):
    index: int
    file: str
    size: int
    estimate: TokenEstimate | None = None
    error: str | None = Field(default=None, description="Why this document would fail before any request.")


class DryRun(BaseModel):
    """Every document a batch would extract, with its estimate, and the sums."""

    source: str
    extractor: str
    documents: list[DryRunItem]
    tokens_in: int = 0
    tokens_out_max: int = 0
    cost_max: float | None = None
    requests: int = 0


def dry_run(
    source: str, *, include: list[str], exclude: list[str], recursive: bool, extraction: ExtractionSettings, max_documents: int
) -> DryRun:
    """List and read the batch's documents and estimate each request. Raises what a batch would refuse with."""
    from blocks.resolve import resolve_extractor, resolve_source

    src = resolve_source(source, include=include, exclude=exclude, recursive=recursive)
    src.check()
    extractor = resolve_extractor(extraction.extractor, **extraction.extractor_options())
    estimate = getattr(extractor, "estimate", None)
    max_bytes = int(extraction.max_file_size_mb * 1024 * 1024)
    items: list[DryRunItem] = []
    for ref in src.iter_documents():
        if max_documents and len(items) >= max_documents:
            break
        item = DryRunItem(index=ref.index, file=ref.name, size=ref.size)
        if ref.refused:
            item.error = ref.refused
        elif estimate is None:
            item.error = f"{extractor.label} sends nothing to a model"
        else:
            try:
                data, _ = src.read(ref, max_bytes)
                item.estimate = estimate(ref.name, data)
            except DocumentError as exc:
                item.error = f"{exc.kind.value}: {exc.message}"
            except Exception as exc:  # noqa: BLE001 - a dry run reports, it does not crash
                item.error = f"{type(exc).__name__}: {exc}"
        items.append(item)
    estimates = [i.estimate for i in items if i.estimate is not None]
    costs = [e.cost_max for e in estimates if e.cost_max is not None]
    return DryRun(
        source=src.describe(), extractor=extractor.label, documents=items,
        tokens_in=sum(e.tokens_in for e in estimates), tokens_out_max=sum(e.tokens_out_max for e in estimates),
        requests=sum(e.requests for e in estimates), cost_max=round(sum(costs), 6) if costs else None,
    )
