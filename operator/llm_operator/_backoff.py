"""Per-object retry delays after failed passes, as controller-runtime's rate-limited work queue computes them.

client-go's ``ItemExponentialFailureRateLimiter`` (``util/workqueue/default_rate_limiters.go``) delays the n-th
consecutive failure of an item by ``base * 2**(n-1)``, capped; a success forgets the item. Here the delay also
carries a jitter of +-20% (so objects failing together, after an API server restart say, do not retry in
lock-step), and a server's ``Retry-After`` (HTTP 429 or 503) is a floor.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Hashable


class Backoff:
    """Consecutive-failure counts per key and the delay before the next try (seconds).

    >>> b = Backoff(base=1.0, cap=8.0, jitter=0.0)
    >>> [b.failure("a") for _ in range(5)]
    [1.0, 2.0, 4.0, 8.0, 8.0]
    >>> b.failure("b", retry_after=30.0)
    30.0
    >>> b.success("a"); b.failure("a")
    1.0
    """

    def __init__(self, base: float = 1.0, cap: float = 300.0, jitter: float = 0.2, rand: Callable[[], float] = random.random):
        if base <= 0 or cap < base or not 0 <= jitter < 1:
            raise ValueError(f"need 0 < base <= cap and 0 <= jitter < 1 (base {base}, cap {cap}, jitter {jitter})")
        self.base, self.cap, self.jitter, self._rand = base, cap, jitter, rand
        self._failures: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def failure(self, key: Hashable, retry_after: float | None = None) -> float:
        """Count a failure of ``key``; the delay before its next try: ``min(cap, base * 2**(n-1))`` times a factor in
        ``[1 - jitter, 1 + jitter]``, at least ``retry_after``."""
        with self._lock:
            n = self._failures.get(key, 0) + 1
            self._failures[key] = n
        delay = min(self.cap, self.base * 2 ** min(n - 1, 62))
        delay *= 1 + self.jitter * (2 * self._rand() - 1)
        return max(delay, retry_after or 0.0)

    def success(self, key: Hashable) -> None:
        """Forget ``key``'s failures (the next failure starts at ``base`` again)."""
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        """Consecutive failures of ``key`` so far."""
        with self._lock:
            return self._failures.get(key, 0)
