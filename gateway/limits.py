"""Rate limits (GCRA) and the IETF ``RateLimit-Policy`` / ``RateLimit`` headers.

Each bucket (a credential, or a client address for credential-less feeds and failed
authentication) gets ``limit`` requests per ``window`` seconds, usable as a burst and
replenished continuously (the generic cell rate algorithm: one timestamp per key, no
timers). The headers follow draft-ietf-httpapi-ratelimit-headers:
``RateLimit-Policy: "api";q=600;w=60`` and ``RateLimit: "api";r=599;t=1`` (``r``
requests left, ``t`` seconds until the quota is whole again).

Where the timestamps live (``GATEWAY_RATE_LIMIT_STORE``):

- ``local``: in this process. N gateway replicas allow up to N times the quota; right for
  the embedded default (one gateway on SQLite).
- ``nats``: in a JetStream KeyValue bucket every replica reads and writes, so replicas share
  one quota. A check is a read and a compare-and-set write (the key's last revision), retried
  when another replica wrote in between. When NATS cannot answer, the replica falls back to
  its local timestamps (a broker blip must not turn every request away); it goes back to the
  bucket when NATS answers again.
- ``auto`` (the default): ``nats`` when the gateway's database is not SQLite (a deployment
  that can run several gateways), else ``local``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import struct
import time
from dataclasses import dataclass
from typing import Protocol

from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.nats import NatsLink

log = logging.getLogger("seedbed.gateway.limits")

RATE_LIMITS_BUCKET = "SEEDBED_RATE_LIMITS"
MAX_KEY_LOCKS = 100_000
CAS_ATTEMPTS = 8  # compare-and-set retries when other replicas write the same key meanwhile
CAS_PAUSE_SECONDS = 0.002  # the first retry's longest random pause; it doubles at each retry
NATS_RETRY_SECONDS = 2.0  # after a failure, how long a replica counts locally before asking NATS again
_TAT = struct.Struct("!d")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int
    reset_seconds: int  # until the whole quota is available again
    retry_after_seconds: int  # 0 when allowed
    headers: list[tuple[bytes, bytes]]


_policies: dict[tuple[str, int, int], bytes] = {}


def policy_header(name: str, limit: int, window: float) -> bytes:
    key = (name, limit, int(window))
    value = _policies.get(key)
    if value is None:
        value = f'"{name}";q={limit};w={int(window)}'.encode()
        _policies[key] = value
    return value


def gcra(tat: float | None, limit: int, window: float, now: float, policy: str) -> tuple[Decision, float]:
    """The decision for one request at ``now`` and the key's new theoretical arrival time
    (unchanged when refused)."""
    interval = window / limit
    if tat is None or tat < now:
        tat = now
    new_tat = tat + interval
    allow_at = new_tat - window
    policy_line = (b"ratelimit-policy", policy_header(policy, limit, window))
    if now < allow_at:
        retry = max(1, math.ceil(allow_at - now))
        reset = math.ceil(tat - now)
        headers = [
            policy_line,
            (b"ratelimit", f'"{policy}";r=0;t={reset}'.encode()),
            (b"retry-after", str(retry).encode()),
        ]
        return Decision(False, 0, reset, retry, headers), tat
    remaining = int((window - (new_tat - now)) / interval + 1e-9)
    reset = math.ceil(new_tat - now)
    headers = [policy_line, (b"ratelimit", f'"{policy}";r={remaining};t={reset}'.encode())]
    return Decision(True, remaining, reset, 0, headers), new_tat


class Limits(Protocol):
    """What the edge asks: take one request from a bucket, or look whether it is empty."""

    window: float

    async def admit(self, key: str, limit: int, policy: str = "api") -> Decision: ...

    async def exhausted(self, key: str, limit: int, policy: str = "api") -> Decision | None: ...


class RateLimiter:
    """Timestamps in this process (per replica)."""

    def __init__(self, window_seconds: float = 60.0, max_tracked: int = 100_000) -> None:
        self.window = window_seconds
        self.max_tracked = max_tracked
        self._tat: dict[str, float] = {}  # theoretical arrival time of the next request, per key

    def check(self, key: str, limit: int, now: float, policy: str = "api") -> Decision:
        decision, new_tat = gcra(self._tat.get(key), limit, self.window, now, policy)
        if decision.allowed:
            if len(self._tat) >= self.max_tracked and key not in self._tat:
                self._prune(now)
            self._tat[key] = new_tat
        return decision

    def peek(self, key: str, limit: int, now: float, policy: str = "api") -> Decision | None:
        """The refusal a request at ``now`` would get, without taking anything; None if allowed."""
        decision, _ = gcra(self._tat.get(key), limit, self.window, now, policy)
        return None if decision.allowed else decision

    async def admit(self, key: str, limit: int, policy: str = "api") -> Decision:
        return self.check(key, limit, time.monotonic(), policy)

    async def exhausted(self, key: str, limit: int, policy: str = "api") -> Decision | None:
        return self.peek(key, limit, time.monotonic(), policy)

    def tracked(self) -> int:
        return len(self._tat)

    def _prune(self, now: float) -> None:
        # A key whose TAT has passed is at full quota: the same as not tracked.
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
        if len(self._tat) >= self.max_tracked:
            self._tat.clear()


def bucket_key(key: str) -> str:
    """A KV key for a bucket name (KV keys allow few characters; addresses stay out of NATS)."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


class SharedRateLimiter:
    """Timestamps in a JetStream KeyValue bucket, shared by every gateway replica.

    The times are wall-clock (``time.time()``): replicas on different machines compare them,
    so they rely on synchronised clocks (NTP keeps skew to milliseconds, well under a quota's
    interval). Entries expire after one window, when the key is back at full quota anyway."""

    def __init__(self, link: NatsLink, window_seconds: float = 60.0, replicas: int = 1) -> None:
        self.link = link
        self.window = window_seconds
        self.replicas = replicas
        self.fallback = RateLimiter(window_seconds)
        self.fallbacks_total = 0  # checks answered locally because NATS did not answer
        self._kv: KeyValue | None = None
        self._kv_lock = asyncio.Lock()
        self._nats_again_at = 0.0
        # Concurrent checks of one key take turns here, so a replica never races itself on
        # the key's revision (compare-and-set retries are left to races between replicas).
        self._key_locks: dict[str, asyncio.Lock] = {}
        # A refused key stays refused until its allow time whatever other replicas do (its
        # timestamp only grows): until then it is refused here without asking NATS.
        self._refused_until: dict[str, tuple[float, int]] = {}

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        async with self._kv_lock:
            if self._kv is None:
                js = self.link.js
                try:
                    self._kv = await js.key_value(RATE_LIMITS_BUCKET)
                except BucketNotFoundError:
                    self._kv = await js.create_key_value(
                        KeyValueConfig(
                            bucket=RATE_LIMITS_BUCKET,
                            description="Seedbed gateway rate-limit timestamps (GCRA), shared by replicas",
                            history=1,
                            ttl=self.window,
                            storage=StorageType.MEMORY,
                            replicas=self.replicas,
                            direct=True,  # reads served by any replica, without the JetStream API
                        )
                    )
            return self._kv

    async def admit(self, key: str, limit: int, policy: str = "api") -> Decision:
        if not self._nats_usable():
            return await self.fallback.admit(key, limit, policy)
        try:
            return await self._admit_shared(key, limit, policy)
        except Exception as exc:
            self._nats_failed(exc)
            return await self.fallback.admit(key, limit, policy)

    async def exhausted(self, key: str, limit: int, policy: str = "api") -> Decision | None:
        known = self._known_refusal(key, limit, policy)
        if known is not None:
            return known
        if not self._nats_usable():
            return await self.fallback.exhausted(key, limit, policy)
        try:
            kv = await self._bucket()
            tat, _revision = await self._read(kv, bucket_key(key))
        except Exception as exc:
            self._nats_failed(exc)
            return await self.fallback.exhausted(key, limit, policy)
        decision, _ = gcra(tat, limit, self.window, time.time(), policy)
        return None if decision.allowed else decision

    def _known_refusal(self, key: str, limit: int, policy: str) -> Decision | None:
        """The bucket's answer for a key refused lately, while it must still be a refusal."""
        refused = self._refused_until.get(key)
        if refused is None:
            return None
        allow_at, refused_limit = refused
        now = time.time()
        if allow_at <= now or refused_limit != limit:
            del self._refused_until[key]
            return None
        # The timestamp is at least the one read then: rebuild it from the allow time.
        decision, _ = gcra(allow_at + self.window - self.window / limit, limit, self.window, now, policy)
        return decision

    async def _admit_shared(self, key: str, limit: int, policy: str) -> Decision:
        known = self._known_refusal(key, limit, policy)
        if known is not None:
            return known
        lock = self._key_locks.get(key)
        if lock is None:
            if len(self._key_locks) >= MAX_KEY_LOCKS:
                self._key_locks = {k: held for k, held in self._key_locks.items() if held.locked()}
            lock = self._key_locks[key] = asyncio.Lock()
        async with lock:
            return await self._admit_locked(key, limit, policy)

    async def _admit_locked(self, key: str, limit: int, policy: str) -> Decision:
        kv = await self._bucket()
        stored = bucket_key(key)
        for attempt in range(CAS_ATTEMPTS):
            tat, revision = await self._read(kv, stored)
            now = time.time()
            decision, new_tat = gcra(tat, limit, self.window, now, policy)
            if not decision.allowed:
                assert tat is not None
                if len(self._refused_until) >= MAX_KEY_LOCKS:
                    self._refused_until.clear()
                self._refused_until[key] = (tat + self.window / limit - self.window, limit)
                return decision
            try:
                if revision is None:
                    await kv.create(stored, _TAT.pack(new_tat))
                else:
                    await kv.update(stored, _TAT.pack(new_tat), last=revision)
            except KeyWrongLastSequenceError:
                # Another replica took from this bucket meanwhile: read again after a random
                # pause, so that two replicas in step do not keep overwriting each other's reads.
                await asyncio.sleep(random.uniform(0, CAS_PAUSE_SECONDS * 2**attempt))
                continue
            return decision
        # Contended past all retries: many replicas hit one key at once; count it here.
        return await self.fallback.admit(key, limit, policy)

    @staticmethod
    async def _read(kv: KeyValue, key: str) -> tuple[float | None, int | None]:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None, None
        if entry.value is None or len(entry.value) != _TAT.size:
            return None, entry.revision
        return _TAT.unpack(entry.value)[0], entry.revision

    def _nats_usable(self) -> bool:
        return self.link.connected and time.monotonic() >= self._nats_again_at

    def _nats_failed(self, exc: Exception) -> None:
        self.fallbacks_total += 1
        if time.monotonic() >= self._nats_again_at:
            log.warning(
                "rate limits counted per replica for now: the shared bucket did not answer",
                extra={"error": repr(exc)},
            )
        self._nats_again_at = time.monotonic() + NATS_RETRY_SECONDS
        self._kv = None  # the bucket may have been deleted: look it up (or make it) again
