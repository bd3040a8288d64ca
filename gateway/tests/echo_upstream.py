"""An instrumented upstream for the proxy-mechanics tests, run as a real uvicorn process.

The services cannot be made slow, echo their request headers or stream a large
answer on demand; this small ASGI app can. It sits behind the kit's own
``PrincipalMiddleware``, so every request it answers was signed correctly by the
gateway, exactly as a service would require.

- ``/api/v1/<anything>``: echoes method, raw path, query, headers, principal and body digest.
- ``.../slow?seconds=``: answers after a pause.
- ``.../large?bytes=``: streams that many bytes back (no Content-Length).
- ``.../trickle?chunks=&interval=``: a slow stream, one small chunk per interval.
- ``.../headers``: answers with hop-by-hop and end-to-end headers to filter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from shared.principal import Principal, PrincipalMiddleware


async def _read(receive: Receive) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        if not message.get("more_body", False):
            return size, digest.hexdigest()


async def _json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    raw = json.dumps(body).encode()
    length = str(len(raw)).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", length), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": raw})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    if path in ("/healthz", "/readyz"):
        await _json(send, 200, {"status": "ok"}, [])
        return
    if path.endswith("/slow"):
        await asyncio.sleep(float(query.get("seconds", ["1"])[0]))
    if path.endswith("/trickle"):
        chunks, interval = int(query.get("chunks", ["5"])[0]), float(query.get("interval", ["0.2"])[0])
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for _ in range(chunks):
            await asyncio.sleep(interval)
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path.endswith("/large"):
        total = int(query.get("bytes", ["0"])[0])
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        chunk = b"x" * 65536
        sent = 0
        while sent < total:
            part = chunk[: min(len(chunk), total - sent)]
            sent += len(part)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    size, digest = await _read(receive)
    principal: Principal = scope["state"]["principal"]
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
    extra: list[tuple[bytes, bytes]] = [(b"etag", b'"7"'), (b"location", b"/api/v1/demand/7")]
    if path.endswith("/headers"):
        extra += [
            (b"connection", b"x-upstream-private"),
            (b"x-upstream-private", b"secret"),
            (b"keep-alive", b"timeout=5"),
            (b"x-upstream-public", b"visible"),
            (b"x-request-id", b"upstream-made-this-up"),
        ]
    await _json(
        send,
        int(query.get("status", ["200"])[0]),
        {
            "method": scope["method"],
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "principal": principal.model_dump(),
            "body_bytes": size,
            "body_sha256": digest,
        },
        extra,
    )


def create_app() -> Any:
    secret = os.environ["SEEDBED_INTERNAL_SECRET"].encode()
    return PrincipalMiddleware(echo, secret=secret)
