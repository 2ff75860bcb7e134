"""Exceptions that carry a classification, so callers never parse messages."""

from __future__ import annotations

from blocks.models import ErrorKind


class DocumentError(Exception):
    """One document cannot be read or extracted; the batch goes on.

    ``transient`` says whether trying again later might work (network, rate limits, 5xx).
    Everything about the bytes themselves (corrupt, encrypted, empty) is permanent.
    """

    def __init__(
        self, kind: ErrorKind, message: str, *, transient: bool = False, raw_output: str | None = None,
        tokens_in: int | None = None, tokens_out: int | None = None, skip: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.transient = transient
        # A model's reply that could not be used, and the tokens the failed document still cost:
        # both are kept on the document's result (a person reads the reply; the budget counts the tokens).
        self.raw_output = raw_output
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        # Not a failure: the document was left out on purpose (no route took it); reported `skipped`.
        self.skip = skip

    # True when no other document can succeed either (a rejected API key): the batch stops
    # sending documents instead of failing each one the same way.
    stops_batch: bool = False


class NeedsOcr(Exception):
    """A PDF has pages without a usable text layer (`pages`, 1-based) that OCR could read.

    Raised by a plain parse worker, which cannot hold the OCR engine; the embedded extractor then
    reads the document again in an OCR worker (`blocks.embedded`). Not a `DocumentError`: it is
    a routing signal, and it crosses the worker pipe pickled as itself.
    """

    def __init__(self, pages: list[int], reason: str) -> None:
        super().__init__(reason)
        self.pages = pages
        self.reason = reason

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return type(self), (self.pages, self.reason)


class SourceUnavailable(Exception):
    """The whole source cannot be listed (missing folder, bad credentials): no batch can start.

    ``reason`` (optional, for callers that map causes to exit codes) is set by the S3 source:
    ``bucket_missing``, ``access_denied``, ``bad_credentials``, ``unreachable`` (endpoint down,
    or S3 throttling/5xx past retries), ``wrong_region`` or ``unavailable`` (anything else).
    """

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keeps `reason` through pickling (Prefect stores a refused flow's exception).
        return type(self), (str(self),), self.__dict__


class BatchRefused(ValueError):
    """The batch parameters are valid one by one but the batch must not run (too many documents)."""
