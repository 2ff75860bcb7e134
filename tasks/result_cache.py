"""Results a model back-end was already paid for, reused for the same bytes and configuration.

A re-run of a batch, a retry inside another batch, or the same file copied into another folder
asks a model the same question again: with a paid API that is the same bill twice. An extractor
that says its result depends only on the bytes and its own configuration (`Extractor.cache_key`,
the model extractors) gets its successful results kept here, one JSON file per (configuration,
content hash), and a later document with equal bytes and an equal configuration takes the stored
result: no request, no tokens (its result says so in a warning, and counts 0 tokens).

Where: `$DOCBATCH_CACHE_DIR`, else `$XDG_CACHE_HOME/docbatch/results`, else
`~/.cache/docbatch/results`, on the machine that extracts. Entries are written whole (temporary
file, then rename), so a crash never leaves a half entry; an unreadable entry is ignored and
replaced. The batch setting `cache` (`--no-cache`) turns it off; deleting the folder empties it.
Failed documents are never cached: a retry asks again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from blocks.models import Extraction

CACHE_ENV = "DOCBATCH_CACHE_DIR"
HIT_WARNING = "result from the cache (same bytes, same extractor configuration): no request sent, no tokens"


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "docbatch" / "results"


def _entry(key: str, sha256: str) -> Path:
    digest = hashlib.sha256(f"{key}\n{sha256}".encode()).hexdigest()
    return cache_dir() / digest[:2] / f"{digest}.json"


def cached_extract(extractor: Any, name: str, data: bytes, sha256: str, *, use_cache: bool) -> Extraction:
    """`extractor.extract(name, data)`, answered from the cache when it may be."""
    key = extractor.cache_key() if use_cache else None
    if key is None:
        return extractor.extract(name, data)
    entry = _entry(key, sha256)
    try:
        hit = Extraction.model_validate_json(entry.read_bytes())
    except (OSError, ValueError):
        hit = None
    if hit is not None:
        return hit.model_copy(update={"warnings": [*hit.warnings, HIT_WARNING], "tokens_in": 0, "tokens_out": 0})
    extraction = extractor.extract(name, data)
    _store(entry, extraction)
    return extraction


def _store(entry: Path, extraction: Extraction) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "wb") as handle:
            handle.write(extraction.model_dump_json().encode())
        os.replace(temporary, entry)
    except OSError:
        # A full or read-only cache must not fail the document it would have saved.
        _discard(locals().get("temporary"))


def _discard(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass
