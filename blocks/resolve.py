"""One place that turns what a user typed (a path, a URI, a saved block's name) into blocks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from prefect.blocks.core import Block

from blocks.embedded import EmbeddedExtractor
from blocks.errors import BatchRefused, SourceUnavailable
from blocks.extractor import Extractor
from blocks.local import LocalDirectory, LocalFolder
from blocks.models import DocumentRef


@runtime_checkable
class Source(Protocol):
    """What a batch needs from wherever documents live."""

    def describe(self) -> str: ...

    def check(self) -> None: ...

    def iter_documents(self) -> Iterator[DocumentRef]: ...

    def read(self, ref: DocumentRef, max_bytes: int) -> tuple[bytes, list[str]]: ...


@runtime_checkable
class Destination(Protocol):
    """Where a batch's exports and checkpoint go: a local folder now, an S3 prefix next.

    Files are written locally under a temporary name (`open_atomic(...).path`) and published
    whole by `commit()`; the checkpoint journal is append-only lines.
    """

    def location(self, *parts: str) -> str: ...

    def open_atomic(self, *parts: str) -> Any: ...

    def atomic_path(self, *parts: str) -> contextlib.AbstractContextManager[Path]: ...

    def exists(self, *parts: str) -> bool: ...

    def batch_folders(self) -> list[str]: ...

    def open_journal(self, *parts: str) -> Any: ...

    def read_lines(self, *parts: str) -> Iterator[str] | None: ...

    def stream_lines(self, *parts: str) -> Iterator[str] | None: ...

    def list_journals(self, *parts: str) -> list[str]: ...

    def read_new_lines(self, *parts: str, cursor: int = 0) -> tuple[list[str], int]: ...

    def delete_folder(self, *parts: str) -> None: ...

    def read_text(self, *parts: str) -> str | None: ...

    def create_exclusive(self, *parts: str, body: str = "") -> bool: ...

    def delete(self, *parts: str) -> None: ...

    def remove_temporaries(self, *parts: str) -> None: ...

    def check(self) -> None: ...

    def link(self, *parts: str) -> str | None: ...


def looks_like_block_name(spec: str) -> bool:
    """'s3-source/inbox' names a saved block (type slug with a dash, one slash); a path that exists does not."""
    head, sep, tail = spec.partition("/")
    return bool(sep) and bool(tail) and "/" not in tail and "-" in head and not Path(spec).exists()


BLOCK_MODULES_ENV = "DOCBATCH_BLOCK_MODULES"


def import_block_modules() -> None:
    """Import the modules named in `DOCBATCH_BLOCK_MODULES` (comma-separated), so block classes
    of one's own (an extractor) are known where a block is loaded: on every worker of a fan-out,
    whose flow runs import only docbatch's own. A module that fails to import is a refusal."""
    import importlib

    for module in filter(None, (name.strip() for name in os.environ.get(BLOCK_MODULES_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SourceUnavailable(f"{BLOCK_MODULES_ENV} names {module!r}, which cannot be imported here: {exc}") from None


def load_block(spec: str, expected: type[Block] | tuple[type, ...], what: str) -> Block:
    """Load a saved block named ``<block-type-slug>/<name>`` and check it plays the expected role."""
    from prefect.blocks.core import UnknownBlockType

    import_block_modules()
    try:
        block = Block.load(spec)
    except (ValueError, KeyError) as exc:
        raise SourceUnavailable(f"no saved block named {spec!r} ({exc})") from None
    except UnknownBlockType:
        raise SourceUnavailable(
            f"saved block {spec!r} is of a type this docbatch does not know (a block class of your own must be "
            f"importable here: name its module in {BLOCK_MODULES_ENV})"
        ) from None
    if not isinstance(block, expected):
        raise SourceUnavailable(f"saved block {spec!r} is a {type(block).__name__}, not a {what}")
    return block


def _split_s3(spec: str) -> tuple[str, str]:
    bucket, _, prefix = spec.removeprefix("s3://").partition("/")
    if not bucket:
        raise SourceUnavailable(f"{spec!r} names no bucket: write s3://bucket/prefix")
    return bucket, prefix


def resolve_source(spec: str, *, include: list[str], exclude: list[str], recursive: bool) -> Source:
    """A local folder path, an ``s3://bucket/prefix`` URI, or a saved source block's name
    (``local-directory/invoices``, ``s3-source/inbox``).

    An `s3://` URI uses boto3's default credential chain (environment, profile, instance role;
    `AWS_ENDPOINT_URL` for S3-compatible stores); a saved `s3-source` block carries its own.
    Filters given with the batch replace the saved block's own.
    """
    from blocks.s3 import S3Source

    spec = spec.strip()
    if not spec:
        raise SourceUnavailable("no source given: pass a folder path, an s3:// URI or a saved source block")
    if spec.startswith("s3://"):
        bucket, prefix = _split_s3(spec)
        return S3Source(bucket=bucket, prefix=prefix, include=list(include), exclude=list(exclude), recursive=recursive)
    if "://" in spec and not spec.startswith("file://"):
        scheme = spec.split("://", 1)[0]
        raise SourceUnavailable(f"{scheme}:// sources are not supported: use a local folder, s3:// or a saved source block")
    if looks_like_block_name(spec):
        block = load_block(spec, (LocalDirectory, S3Source), "document source")
        assert isinstance(block, (LocalDirectory, S3Source))
        if include or exclude:
            block = block.model_copy(update={"include": include or block.include, "exclude": exclude or block.exclude})
        return block
    path = spec.removeprefix("file://")
    return LocalDirectory(path=path, include=list(include), exclude=list(exclude), recursive=recursive)


def resolve_extractor(spec: str, *, schema: str = "", prompt: str = "", **embedded_options: object) -> Extractor:
    """``embedded`` (with options), or a saved extractor block's name (``embedded-extractor/strict``,
    ``openai-compatible-extractor/local-llama``), with the batch's schema and prompt applied.

    The extractor's configuration is checked here, once, before any document is read: a broken
    one (a template that does not compile, a schema that is no JSON Schema) is a `BatchRefused`
    naming the file and the reason.
    """
    spec = spec.strip()
    if spec in ("", "embedded"):
        extractor: Extractor = EmbeddedExtractor(**embedded_options)  # type: ignore[arg-type]
    else:
        import blocks.openai_compatible  # noqa: F401 - Block.load finds a block class only once it is imported
        import blocks.routing  # noqa: F401
        import blocks.hosted_extractor  # noqa: F401

        block = load_block(spec, Extractor, "extractor")
        assert isinstance(block, Extractor)
        extractor = block
    try:
        extractor = extractor.with_batch_settings(schema=schema, prompt=prompt)
        extractor.check()
    except ValueError as exc:
        raise BatchRefused(f"the extractor's configuration cannot be used: {exc}") from None
    return extractor


def resolve_destination(spec: str) -> Destination:
    """A local folder, an ``s3://bucket/prefix`` URI, or a saved destination block's name
    (``local-folder/exports``, ``s3-destination/results``)."""
    from blocks.s3 import S3Destination

    spec = spec.strip() or "output"
    if spec.startswith("s3://"):
        bucket, prefix = _split_s3(spec)
        return S3Destination(bucket=bucket, prefix=prefix)
    if "://" in spec and not spec.startswith("file://"):
        raise SourceUnavailable(f"{spec.split('://', 1)[0]}:// destinations are not supported: use a local folder, s3:// or a saved destination block")
    if looks_like_block_name(spec):
        block = load_block(spec, (LocalFolder, S3Destination), "export destination")
        return block  # type: ignore[return-value]
    return LocalFolder(path=spec.removeprefix("file://"))
