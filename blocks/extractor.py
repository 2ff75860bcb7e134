"""The extractor contract: one base block every extractor (embedded, template, OCR, HTTP) fills in.

Flows and tasks only ever call `extract(name, data)` and `classify(exc)`, so a new extractor
plugs in by subclassing this block; nothing in `tasks/` or `flows/` changes.
"""

from __future__ import annotations

import functools
import socket
from abc import ABC, abstractmethod

from prefect.blocks.core import Block

from blocks.errors import DocumentError
from blocks.models import ErrorKind, Extraction


@functools.cache
def _slug(cls: type[Block]) -> str:
    # Prefect slugifies the name on every call (python-slugify, unidecode): measured at several
    # milliseconds per document under load, so each class computes it once.
    return cls.get_block_type_slug()


class Extractor(Block, ABC):
    """Base block for extractors: bytes and a file name in, fields, text and page count out.

    Subclasses raise `DocumentError` for anything they understand (a corrupt file, an HTTP
    429); `classify` turns anything else into one, so a stray exception never escapes a batch.
    """

    @abstractmethod
    def extract(self, name: str, data: bytes) -> Extraction:
        """Extract one document. Must not keep `data` beyond the call."""

    @property
    def output_fields(self) -> list[str]:
        """Field names this extractor returns, in column order, when it knows them up front.

        Exports lay their columns out from it while the batch runs (see `tasks/exports.py`);
        an extractor that cannot say returns nothing and the columns follow the documents.
        """
        return []

    def check(self) -> None:
        """Refuse a configuration that cannot work, before any document is read (raise ValueError).

        Called once per batch; the default has nothing to check.
        """

    def with_batch_settings(self, *, schema: str, prompt: str) -> Extractor:
        """This extractor with a batch's target schema and prompt applied (model extractors).

        One that fills a fixed schema refuses any other, and a prompt, rather than ignore them.
        """
        if schema.strip() not in ("", "invoice"):
            raise ValueError(
                f"the {self.label} fills the invoice or receipt schema (or its templates' fields), not {schema.strip()!r}: "
                "pick a model extractor (openai-compatible-extractor) for other schemas"
            )
        if prompt.strip():
            raise ValueError(f"the {self.label} takes no prompt: pick a model extractor (openai-compatible-extractor)")
        return self

    def cost(self, tokens_in: int | None, tokens_out: int | None) -> float | None:
        """What these tokens cost at the block's prices; None when it has none (or no tokens)."""
        return None

    def cache_key(self) -> str | None:
        """A key for results that depend only on the bytes and this configuration (a model's
        answer at temperature 0), so the result cache may answer for it; None: never cached."""
        return None

    def fingerprint(self) -> str:
        """State the block's settings do not show but results depend on (a templates folder's
        content); part of the batch key, so resume and ingestion notice a change."""
        return ""

    @property
    def label(self) -> str:
        """Short name recorded in each result, e.g. ``embedded-extractor``."""
        return _slug(type(self))

    def classify(self, exc: BaseException) -> DocumentError:
        """Map an unexpected exception to a per-document error; transient ones get retried."""
        if isinstance(exc, DocumentError):
            return exc
        if isinstance(exc, MemoryError):
            return DocumentError(ErrorKind.too_large, "ran out of memory while extracting this document")
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return DocumentError(ErrorKind.timeout, f"timed out: {exc}" if str(exc) else "timed out", transient=True)
        if isinstance(exc, (ConnectionError,)):
            return DocumentError(ErrorKind.backend, f"connection failed: {exc}", transient=True)
        detail = str(exc).strip() or "no message"
        return DocumentError(ErrorKind.internal, f"{type(exc).__name__}: {detail}")
