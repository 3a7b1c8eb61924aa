"""A token bucket, the way an API rate-limits requests: for the stand-ins (stdlib only).

`TokenBucket(burst=3, interval=2.0)` admits 3 requests at once, then one every 2 s (it holds at
most `burst` tokens). `take()` answers 0.0 for an admitted request, else the seconds until the
next token, which a stand-in sends back as `retry-after` with a 429 (or 529); `headers()` are
the rate headers the real API sends on every answer. It counts what it admitted and rejected,
for tests and benchmarks.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, burst: int, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(burst)
        self.interval = interval
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()
        self.admitted = 0
        self.rejected = 0
        self.lock = threading.Lock()

    def take(self) -> float:
        """0.0 when a request is admitted (a token spent), else seconds until one is."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) / self.interval)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                self.admitted += 1
                return 0.0
            self.rejected += 1
            return (1 - self.tokens) * self.interval

    def headers(self) -> dict[str, str]:
        """What the real API says of its limits on every answer, refusals too: requests per
        minute and requests left now (`anthropic-ratelimit-requests-*`)."""
        with self.lock:
            now = self.clock()
            left = min(self.capacity, self.tokens + (now - self.stamp) / self.interval)
        return {"anthropic-ratelimit-requests-limit": str(round(60 / self.interval)),
                "anthropic-ratelimit-requests-remaining": str(max(math.floor(left), 0))}

    @staticmethod
    def retry_after(wait: float) -> str:
        """The `retry-after` header for a wait: whole seconds, rounded up, as APIs send it."""
        return str(max(math.ceil(wait), 1))
