"""A batch's token and cost budget: once spent, the documents not yet started are skipped, not sent."""

from __future__ import annotations

import threading

from blocks.models import DocumentResult


class Budget:
    """Tokens and cost spent by one share's documents, and the reason to stop starting more.

    Also stops on the first error that says no document can succeed (an API key the back-end
    rejects: `DocumentError.stops_batch`). With `workers > 0` each share has its own budget, a
    `1/K` part of the batch's (`flows.fanout`), so no worker needs to hear from another.
    """

    def __init__(self, max_tokens: int = 0, max_cost: float = 0.0) -> None:
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.tokens_used = 0
        self.cost_used = 0.0
        self.stopped: str | None = None
        self._lock = threading.Lock()

    def spend(self, result: DocumentResult) -> None:
        """Count a finished document's tokens and cost; past the budget, stop starting documents."""
        with self._lock:
            self.tokens_used += (result.tokens_in or 0) + (result.tokens_out or 0)
            self.cost_used += result.cost or 0.0
            tokens, cost = self.tokens_used, self.cost_used
        if self.max_tokens and tokens >= self.max_tokens:
            self.stop(f"the batch's token budget of {self.max_tokens:,} was reached ({tokens:,} tokens used)")
        elif self.max_cost and cost >= self.max_cost:
            self.stop(f"the batch's cost budget of {self.max_cost:g} was reached ({cost:.4f} spent)")

    def stop(self, reason: str) -> None:
        """Skip every document not yet started, with `reason` (the first reason is kept)."""
        with self._lock:
            if self.stopped is None:
                self.stopped = reason
