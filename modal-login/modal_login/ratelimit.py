"""In-process token buckets: sign-in attempts per client IP, trainer writes per org."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """`rate` tokens per second refill up to `burst`; `take()` returns 0 or the seconds to wait."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000):
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._state[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._state) > self.max_keys:
                # Full buckets carry no information: drop them so a flood of IPs cannot grow memory.
                for k in [k for k, (t, ts) in self._state.items() if t + (now - ts) * self.rate >= self.burst]:
                    del self._state[k]
            return wait
