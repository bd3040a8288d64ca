"""The pass-through path: forward a request to its service and stream the answer back.

Raw ASGI on one long-lived ``aiohttp.ClientSession`` per upstream, so that the gateway
keeps most of a service's own throughput (``bench.gateway`` measures it; a FastAPI route
on httpx kept far less). It is one path read top to bottom, hence one module a little over
500 lines. The path is the public path unchanged; the
principal goes in the signed ``X-Seedbed-Principal`` header; hop-by-hop headers
are dropped; ``X-Request-ID`` and ``traceparent`` are passed on (a traceparent
is made when the caller sent none; with tracing on, it is the gateway's server span's).

Failures: a service that cannot be reached answers 503 problem+json naming it
(after retrying idempotent requests), no answer in time 504, a connection lost
mid-request 502. Small bodies are read whole (and so can be retried); large ones are
read whole too, into memory then a temporary file, before the request goes (the principal
header signs the body's digest), and stream to the service from there; answers stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
from starlette.types import Receive, Scope, Send
from yarl import URL

from gateway.settings import GatewaySettings
from shared import tracing
from shared.logs import request_id_var
from shared.principal import EMPTY_BODY_DIGEST, body_digest, sha256_digest, sign
from shared.problems import Problem, problem_response

log = logging.getLogger("seedbed.gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Replaced by the gateway (principal, request id, trace) or meaningless past it (the
# caller's credential never reaches a service; the length is the body's own).
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"cookie",
    b"x-seedbed-principal",
    b"x-request-id",
    b"traceparent",
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
# uvicorn writes its own date and server; the request-id middleware its own id.
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {b"date", b"server", b"x-request-id"}
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BUFFERED_BODY_BYTES = 256 * 1024  # read whole (retryable); above this, spooled, then streamed
SPOOL_MEMORY_BYTES = 1024 * 1024  # a spooled body beyond this goes to a temporary file
SPOOL_CHUNK_BYTES = 64 * 1024
BUFFERED_RESPONSE_BYTES = 1024 * 1024
UNREACHABLE_HOLD_SECONDS = 2.0
_TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_NULL_TRACE = b"0" * 32


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


def payload_too_large(limit: int) -> Problem:
    return Problem(
        413,
        "Content Too Large",
        f"The request body is larger than this route accepts ({limit} bytes).",
        type="payload-too-large",
        max_bytes=limit,
    )


def new_traceparent() -> str:
    raw = os.urandom(24).hex()
    return f"00-{raw[:32]}-{raw[32:]}-01"


def valid_traceparent(value: bytes) -> bool:
    return bool(_TRACEPARENT.match(value)) and value[3:35] != _NULL_TRACE and not value.startswith(b"ff")


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; :class:`BodyTooLarge` as soon as it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _StreamedBody:
    """A large or unsized request body, read whole first (counted against the limit, hashed
    for the principal header) into memory and then a temporary file, streamed from there."""

    too_large = False  # both found while spooling, before the request goes
    client_gone = False

    def __init__(self, spool: Any, size: int, digest: str, on_progress: Callable[[], None]) -> None:
        self.spool = spool
        self.size = size
        self.digest = digest
        self.on_progress = on_progress

    @classmethod
    async def spooled(cls, receive: Receive, limit: int, on_progress: Callable[[], None]) -> _StreamedBody:
        """:class:`BodyTooLarge` as soon as it passes ``limit``; :class:`ClientGone`."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - kept by the body
        hasher = hashlib.sha256()
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLarge
                    hasher.update(chunk)
                    spool.write(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return cls(spool, size, sha256_digest(hasher.digest()), on_progress)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while chunk := self.spool.read(SPOOL_CHUNK_BYTES):
                self.on_progress()
                yield chunk
        finally:
            self.spool.close()


class ReadDeadlines:
    """The read timeout of every call in flight, kept by one watchdog task.

    A timer per call (aiohttp's ``sock_read``, rearmed on every chunk, or ``asyncio.timeout``)
    cost about 15 us of CPU per request here, some 5% of the whole pass-through; a dict entry
    per call and a sweep a few times a second cost next to nothing. A call overdue is
    cancelled and answers 504. The deadline moves on with every chunk either way, so it
    bounds silence, not the length of a large upload or download.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.resolution = min(0.25, max(timeout / 10, 0.02))
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name="proxy-read-deadlines")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.resolution)
            now = loop.time()
            overdue = [task for task, deadline in self._deadlines.items() if deadline <= now]
            for task in overdue:
                del self._deadlines[task]
                self._expired.add(task)
                task.cancel()

    def arm(self, task: asyncio.Task[Any]) -> None:
        """(Re)start the clock of ``task``'s call: it must make progress within the timeout."""
        self._deadlines[task] = task.get_loop().time() + self.timeout

    def disarm(self, task: asyncio.Task[Any]) -> None:
        self._deadlines.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for being overdue (the cancellation is then undone)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True


class Proxy:
    """One pooled aiohttp session per service, and the forwarding of one request."""

    def __init__(self, settings: GatewaySettings, secret: bytes) -> None:
        self.settings = settings
        self.secret = secret
        self.base_urls = settings.upstreams()
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        # Connecting is bounded here; waiting for the answer by the read deadlines.
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.upstream_connect_timeout_seconds,
            sock_connect=settings.upstream_connect_timeout_seconds,
        )
        self.deadlines = ReadDeadlines(settings.upstream_timeout_seconds)
        self.retries = settings.upstream_retries
        # A service found unreachable is still tried on each request, but without the retry
        # pauses for a moment: a service that is down answers 503 at once, not after 150 ms.
        self._unreachable_until: dict[str, float] = {}

    async def start(self) -> None:
        self.deadlines.start()
        for name in self.base_urls:
            connector = aiohttp.TCPConnector(
                limit=self.settings.upstream_connections,
                keepalive_timeout=self.settings.upstream_keepalive_seconds,
                ttl_dns_cache=300,
            )
            self.sessions[name] = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                auto_decompress=False,  # bytes pass through exactly, Content-Encoding and all
                cookie_jar=aiohttp.DummyCookieJar(),  # never carry one caller's cookie to another
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept", "Content-Type"),
                max_line_size=16 * 1024,
                max_field_size=16 * 1024,
            )

    async def close(self) -> None:
        await self.deadlines.stop()
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        payload: str,
        body_limit: int,
        extra_response_headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = raw_path.decode("latin-1")
        if query:
            target = f"{target}?{query.decode('latin-1')}"

        extra = list(extra_response_headers)

        async def problem(failure: Problem) -> None:
            await send_problem(scope, receive, send, failure, extra)

        headers: list[tuple[str, str]] = []
        content_length: int | None = None
        chunked = False
        traceparent: str | None = None
        forwarded_for: str | None = None
        connection_tokens: list[bytes] = []
        for name, value in scope["headers"]:
            if name in DROPPED_REQUEST_HEADERS:
                if name == b"content-length":
                    try:
                        content_length = int(value)
                    except ValueError:
                        await problem(Problem(400, "Bad Request", "Invalid Content-Length."))
                        return
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"traceparent":
                    if valid_traceparent(value):
                        traceparent = value.decode("latin-1")
                elif name == b"x-forwarded-for":
                    forwarded_for = value.decode("latin-1")
                elif name == b"connection":
                    connection_tokens.extend(t.strip().lower() for t in value.split(b","))
                continue
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if connection_tokens:
            dropped = set(connection_tokens)
            headers = [(n, v) for n, v in headers if n.encode("latin-1") not in dropped]

        request_id = request_id_var.get()
        if request_id:
            headers.append(("x-request-id", request_id))
        if carrier := tracing.forwarded_context():
            # Our server span is the service's parent: a client span per hop told nothing more.
            headers = [(name, value) for name, value in headers if name not in carrier]
            headers.extend(carrier.items())
        else:
            headers.append(("traceparent", traceparent or new_traceparent()))
        client = scope.get("client")
        # When uvicorn trusted a local proxy's X-Forwarded-For, the client is already its last entry.
        if forwarded_for and client and forwarded_for.rsplit(",", 1)[-1].strip() != client[0]:
            forwarded_for = f"{forwarded_for}, {client[0]}"
        elif not forwarded_for and client:
            forwarded_for = client[0]
        if forwarded_for:
            headers.append(("x-forwarded-for", forwarded_for))
        headers.append(("x-forwarded-proto", scope.get("scheme", "http")))

        # The body: refused by its declared length before a byte is read; small ones read
        # whole (replayable), large or unsized ones streamed and counted on the way.
        data: bytes | _StreamedBody | None = None
        if content_length is not None and content_length > body_limit:
            await problem(payload_too_large(body_limit))
            return
        if content_length is not None and content_length <= BUFFERED_BODY_BYTES:
            try:
                data = await read_body(receive, body_limit) if content_length else b""
            except BodyTooLarge:
                await problem(payload_too_large(body_limit))
                return
            except ClientGone:
                return
            if content_length == 0 and method in ("GET", "HEAD", "DELETE", "OPTIONS"):
                data = None
        task = asyncio.current_task()
        assert task is not None
        deadlines = self.deadlines
        if data is None and (content_length is not None or chunked):
            try:
                data = await _StreamedBody.spooled(receive, body_limit, lambda: deadlines.arm(task))
            except BodyTooLarge:
                await problem(payload_too_large(body_limit))
                return
            except ClientGone:
                return
            headers.append(("content-length", str(data.size)))
        if isinstance(data, _StreamedBody):
            digest = data.digest
        else:
            digest = body_digest(data) if data else EMPTY_BODY_DIGEST
        headers.append(("x-seedbed-principal", sign(self.secret, method, target, payload, digest=digest)))

        started = False  # the status line went out: failures can only cut the answer short
        deadlines.arm(task)
        try:
            session = self.sessions[service]
            url = URL(self.base_urls[service] + target, encoded=True)
            retryable = method in IDEMPOTENT_METHODS and not isinstance(data, _StreamedBody)
            if self._unreachable_until.get(service, 0.0) > task.get_loop().time():
                retryable = False
            attempt = 0
            while True:
                try:
                    response = await session.request(
                        method, url, headers=headers, data=data, allow_redirects=False
                    )
                    if self._unreachable_until:
                        self._unreachable_until.pop(service, None)
                    break
                except (
                    aiohttp.ClientConnectorError,
                    aiohttp.ConnectionTimeoutError,
                    aiohttp.ServerDisconnectedError,
                ) as exc:
                    if isinstance(data, _StreamedBody) and (data.too_large or data.client_gone):
                        if data.too_large:
                            await problem(payload_too_large(body_limit))
                        return
                    if retryable and attempt < self.retries:
                        attempt += 1
                        await asyncio.sleep(0.05 * attempt)
                        continue
                    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
                        self._unreachable_until[service] = task.get_loop().time() + UNREACHABLE_HOLD_SECONDS
                        await problem(service_unavailable(service))
                    else:
                        await problem(connection_lost(service))
                    return
                except TimeoutError:
                    await problem(service_timeout(service))
                    return
                except (BodyTooLarge, ClientGone, aiohttp.ClientError) as exc:
                    if isinstance(data, _StreamedBody) and (data.too_large or data.client_gone):
                        if data.too_large:
                            await problem(payload_too_large(body_limit))
                        return
                    log.warning("upstream request failed", extra={"service": service, "error": repr(exc)})
                    await problem(connection_lost(service))
                    return

            try:
                out_headers = []
                listed: list[bytes] = []  # headers the service's Connection header names as hop-by-hop
                for name, value in response.raw_headers:
                    name = name.lower()
                    if name in DROPPED_RESPONSE_HEADERS:
                        if name == b"connection":
                            listed.extend(token.strip().lower() for token in value.split(b","))
                        continue
                    out_headers.append((name, value))
                if listed:
                    out_headers = [(name, value) for name, value in out_headers if name not in listed]
                out_headers.extend(extra)
                length = response.content_length
                start = {"type": "http.response.start", "status": response.status, "headers": out_headers}
                if method == "HEAD" or response.status in (204, 304):
                    deadlines.disarm(task)
                    started = True
                    await send(start)
                    await send({"type": "http.response.body", "body": b""})
                    return
                if length is not None and length <= BUFFERED_RESPONSE_BYTES:
                    try:
                        body = await response.read()
                    except aiohttp.ClientError:
                        await problem(connection_lost(service))
                        return
                    deadlines.disarm(task)  # the caller's own pace is not the service's delay
                    started = True
                    await send(start)
                    await send({"type": "http.response.body", "body": body})
                    return
                # Large or unsized: stream. Once the status line is out, a failure can only cut
                # the connection short (the client sees a truncated body, never a wrong one).
                deadlines.disarm(task)
                started = True
                await send(start)
                deadlines.arm(task)
                async for chunk in response.content.iter_any():
                    deadlines.disarm(task)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    deadlines.arm(task)
                deadlines.disarm(task)
                await send({"type": "http.response.body", "body": b""})
            finally:
                response.release()
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise
            if not started:  # after the status line, a timeout can only cut the answer short
                await problem(service_timeout(service))
        finally:
            deadlines.disarm(task)


async def send_problem(
    scope: Scope,
    receive: Receive,
    send: Send,
    problem: Problem,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with problem+json from raw ASGI code, with any extra headers (rate limits)."""
    response = problem_response(problem, scope["path"])
    response.raw_headers.extend(extra_headers)
    await response(scope, receive, send)


def service_unavailable(service: str) -> Problem:
    return Problem(
        503,
        "Service Unavailable",
        f"The {service} service is not reachable; try again shortly.",
        type="service-unavailable",
        service=service,
        headers={"Retry-After": "5"},
    )


def service_timeout(service: str) -> Problem:
    return Problem(
        504,
        "Gateway Timeout",
        f"The {service} service did not answer in time.",
        type="service-timeout",
        service=service,
    )


def connection_lost(service: str) -> Problem:
    return Problem(
        502,
        "Bad Gateway",
        f"The connection to the {service} service was lost; the request may or may not have been "
        "applied. Retry with the same Idempotency-Key, or read the resource before retrying.",
        type="service-connection-lost",
        service=service,
    )
