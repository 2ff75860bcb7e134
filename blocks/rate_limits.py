"""Limits on a model back-end that every batch using it shares: Prefect global concurrency limits.

`max_concurrency` bounds one batch. A paid API's limits are per key, and two batches (a
schedule and a person's run) on the same saved block must not add up past them. So each HTTP
extractor block with limits set gets up to three of Prefect's global concurrency limits,
named after the block and created (or updated to the block's values) on first use:

- `docbatch-<block-type>-<block-name>-concurrent`: requests in flight at once (a slot held
  for the length of each request);
- `docbatch-<block-type>-<block-name>-rpm`: requests per minute (a rate limit whose slots
  decay at limit/60 per second);
- `docbatch-<block-type>-<block-name>-tpm`: tokens per minute, each request occupying its
  estimate (prompt characters / 4 plus `max_tokens`), capped at the limit.

They live on the Prefect server, so they hold across processes and machines, and show (and can
be changed) under Concurrency in the UI; a block not saved under a name gets limits named after
its endpoint and model. Acquiring costs one or two API calls per request, small beside a model
call.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Iterator

from pydantic import BaseModel, Field

UPSERT_ATTEMPTS = 4
# Limits already created or updated in this process, by name and value.
_ensured: set[tuple[str, int, float | None]] = set()
_lock = threading.Lock()


class BackendLimits(BaseModel):
    """A back-end's limits as a block sets them; None: no limit of that kind."""

    max_concurrent_requests: int | None = Field(default=None, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)

    def any(self) -> bool:
        return any(v is not None for v in (self.max_concurrent_requests, self.requests_per_minute, self.tokens_per_minute))


def limit_prefix(block_type: str, block_name: str | None, endpoint: str) -> str:
    """`docbatch-<block-type>-<name>`, or the endpoint's hash for a block not saved by name."""
    name = block_name or "endpoint-" + hashlib.sha256(endpoint.encode()).hexdigest()[:12]
    return re.sub(r"[^a-z0-9-]+", "-", f"docbatch-{block_type}-{name}".lower()).strip("-")


def _ensure(name: str, limit: int, decay: float | None) -> None:
    """Create the limit, or set it to the block's value, once per process.

    Two batches starting together both find it missing and both create it: the second create
    fails on the server's unique name, and the upsert tried again finds it and updates it.
    """
    from prefect import get_client

    with _lock:  # the batch's threads wait for the first one's answer instead of racing it
        if (name, limit, decay) in _ensured:
            return
        with get_client(sync_client=True) as client:
            for attempt in range(1, UPSERT_ATTEMPTS + 1):
                try:
                    client.upsert_global_concurrency_limit_by_name(name, limit, slot_decay_per_second=decay)
                    break
                except Exception:  # noqa: BLE001 - ObjectAlreadyExists, or the server's 409/500 on the race
                    if attempt == UPSERT_ATTEMPTS:
                        raise
                    time.sleep(0.2 * attempt)
        _ensured.add((name, limit, decay))


@contextlib.contextmanager
def request_slot(prefix: str, limits: BackendLimits, *, tokens: int, timeout_s: float) -> Iterator[None]:
    """Hold what one request needs of the shared limits (waiting for them) while it runs."""
    if not limits.any():
        yield
        return
    from prefect.concurrency.sync import concurrency, rate_limit

    if limits.requests_per_minute:
        name = f"{prefix}-rpm"
        _ensure(name, limits.requests_per_minute, limits.requests_per_minute / 60)
        rate_limit(name, occupy=1, strict=True)
    if limits.tokens_per_minute:
        name = f"{prefix}-tpm"
        _ensure(name, limits.tokens_per_minute, limits.tokens_per_minute / 60)
        rate_limit(name, occupy=max(1, min(tokens, limits.tokens_per_minute)), strict=True)
    if limits.max_concurrent_requests:
        name = f"{prefix}-concurrent"
        _ensure(name, limits.max_concurrent_requests, None)
        # The lease outlives the longest request, so a slow answer never loses its slot.
        with concurrency(
            name, occupy=1, strict=True, lease_duration=max(300.0, timeout_s * 2), raise_on_lease_renewal_failure=False
        ):
            yield
    else:
        yield
