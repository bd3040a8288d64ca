"""Per-credential rate limits (GCRA) and the IETF ``RateLimit-Policy`` / ``RateLimit`` headers.

Each credential gets ``limit`` requests per ``window`` seconds, usable as a burst
and replenished continuously (the generic cell rate algorithm: one timestamp per
key, no timers). The headers follow draft-ietf-httpapi-ratelimit-headers:
``RateLimit-Policy: "api";q=600;w=60`` and ``RateLimit: "api";r=599;t=1`` (``r``
requests left, ``t`` seconds until the quota is whole again).

The limit holds per gateway replica; N replicas allow up to N times the quota.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int
    reset_seconds: int  # until the whole quota is available again
    retry_after_seconds: int  # 0 when allowed
    headers: list[tuple[bytes, bytes]]


class RateLimiter:
    def __init__(self, window_seconds: float = 60.0, max_tracked: int = 100_000) -> None:
        self.window = window_seconds
        self.max_tracked = max_tracked
        self._tat: dict[str, float] = {}  # theoretical arrival time of the next request, per key
        self._policies: dict[tuple[str, int], bytes] = {}

    def policy_header(self, name: str, limit: int) -> bytes:
        key = (name, limit)
        value = self._policies.get(key)
        if value is None:
            value = f'"{name}";q={limit};w={int(self.window)}'.encode()
            self._policies[key] = value
        return value

    def check(self, key: str, limit: int, now: float, policy: str = "api") -> Decision:
        interval = self.window / limit
        tat = self._tat.get(key, now)
        if tat < now:
            tat = now
        new_tat = tat + interval
        allow_at = new_tat - self.window
        policy_header = (b"ratelimit-policy", self.policy_header(policy, limit))
        if now < allow_at:
            retry = max(1, math.ceil(allow_at - now))
            reset = math.ceil(tat - now)
            headers = [
                policy_header,
                (b"ratelimit", f'"{policy}";r=0;t={reset}'.encode()),
                (b"retry-after", str(retry).encode()),
            ]
            return Decision(False, 0, reset, retry, headers)
        if len(self._tat) >= self.max_tracked and key not in self._tat:
            self._prune(now)
        self._tat[key] = new_tat
        remaining = int((self.window - (new_tat - now)) / interval + 1e-9)
        reset = math.ceil(new_tat - now)
        headers = [policy_header, (b"ratelimit", f'"{policy}";r={remaining};t={reset}'.encode())]
        return Decision(True, remaining, reset, 0, headers)

    def _prune(self, now: float) -> None:
        # A key whose TAT has passed is at full quota: the same as not tracked.
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
        if len(self._tat) >= self.max_tracked:
            self._tat.clear()
