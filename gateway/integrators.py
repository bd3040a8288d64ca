"""The integrators' surface: webhooks, the SSE event stream and the AsyncAPI document.

Who may use it (docs/ACCESS.md): staff everything; anchors and integrators their own
subscriptions and the events their role may see (``gateway.visibility``); the other roles
403. Another owner's subscription answers 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse

from gateway import webhooks
from gateway.api import CredentialDep, RuntimeDep, problem
from gateway.auth import Credential
from gateway.models import api_keys
from gateway.schemas import (
    Delivery,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPage,
    WebhookStatus,
    WebhookUpdate,
)
from gateway.sse import MEDIA_TYPE, EventStream, EventStreamResponse
from gateway.visibility import STREAM_ROLES, NotVisible, TypePattern, narrow, parse_pattern
from shared.db import SessionDep, utcnow
from shared.http import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, columns
from shared.problems import Problem, field_errors, forbidden, not_found

router = APIRouter()

TAG = "integrators"


async def integrator_credential(credential: CredentialDep) -> Credential:
    if credential.principal.role not in STREAM_ROLES:
        raise forbidden(
            "Webhooks, the event stream and the event catalogue are for staff, anchors and integrators."
        )
    return credential


IntegratorDep = Annotated[Credential, Depends(integrator_credential)]
FORBIDDEN = problem("The caller's role may not use webhooks and the event stream.")


def _not_visible(exc: NotVisible) -> Problem:
    return Problem(403, "Forbidden", exc.detail, type="event-types-not-visible", types=exc.patterns)


# -- webhooks --------------------------------------------------------------------------------


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Subscribe a URL to events; the signing secret is shown only in this answer",
    tags=[TAG],
    responses={
        403: problem("The role may not use webhooks, or may see none of the events of a pattern."),
        409: problem("The caller holds the most subscriptions one owner may."),
    },
)
async def create_webhook(
    body: WebhookCreate,
    credential: IntegratorDep,
    runtime: RuntimeDep,
    session: SessionDep,
    response: Response,
) -> WebhookCreated:
    owner = webhooks.Owner.of(credential)
    try:
        narrow(owner.role, [parse_pattern(text) for text in body.types])
    except NotVisible as exc:
        raise _not_visible(exc) from None
    try:
        url = await webhooks.check_url(body.url, runtime.settings)
    except ValueError as exc:
        raise field_errors([{"field": "url", "message": str(exc)}]) from None
    limit = runtime.settings.webhook_max_subscriptions_per_owner
    if not owner.is_staff and await webhooks.count_subscriptions(session, owner) >= limit:
        raise Problem(
            409,
            "Conflict",
            f"You hold {limit} webhook subscriptions already, the most one owner may; delete one first.",
            type="too-many-subscriptions",
        )
    row, secret = await webhooks.create_subscription(
        session, owner, runtime.secret_box, url=url, types=body.types, description=body.description
    )
    response.headers["Cache-Control"] = "no-store"
    return WebhookCreated(**WebhookOut.model_validate(row).model_dump(), secret=secret)


@router.get(
    "/webhooks",
    response_model=WebhookPage,
    summary="The caller's webhook subscriptions (staff: all), oldest first",
    tags=[TAG],
    responses={403: FORBIDDEN},
)
async def list_webhooks(
    credential: IntegratorDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> WebhookPage:
    page, next_cursor = await webhooks.list_subscriptions(
        session, webhooks.Owner.of(credential), limit=limit, cursor=cursor
    )
    return WebhookPage(items=[WebhookOut.model_validate(row) for row in page], next_cursor=next_cursor)


@router.patch(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    summary="Pause or resume a subscription, or change its description",
    tags=[TAG],
    responses={403: FORBIDDEN, 404: problem("No such subscription of the caller's.")},
)
async def update_webhook(
    webhook_id: uuid.UUID, body: WebhookUpdate, credential: IntegratorDep, session: SessionDep
) -> WebhookOut:
    row = await webhooks.set_subscription_state(
        session,
        webhooks.Owner.of(credential),
        webhook_id,
        active=body.active,
        description=body.description,
        change_description="description" in body.model_fields_set,
    )
    if row is None:
        raise not_found("Webhook subscription", webhook_id)
    return WebhookOut.model_validate(row)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    summary="Delete a subscription: nothing more is delivered to it, its delivery log goes with it",
    tags=[TAG],
    responses={403: FORBIDDEN, 404: problem("No such subscription of the caller's.")},
)
async def delete_webhook(webhook_id: uuid.UUID, credential: IntegratorDep, session: SessionDep) -> Response:
    if not await webhooks.delete_subscription(session, webhooks.Owner.of(credential), webhook_id):
        raise not_found("Webhook subscription", webhook_id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    summary="The delivery log of a subscription, newest first, each delivery with its attempts",
    tags=[TAG],
    responses={403: FORBIDDEN, 404: problem("No such subscription of the caller's.")},
)
async def list_deliveries(
    webhook_id: uuid.UUID,
    credential: IntegratorDep,
    session: SessionDep,
    status: WebhookStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> DeliveryPage:
    if await webhooks.get_subscription(session, webhooks.Owner.of(credential), webhook_id) is None:
        raise not_found("Webhook subscription", webhook_id)
    page, next_cursor = await webhooks.list_deliveries(
        session, webhook_id, limit=limit, cursor=cursor, status=status
    )
    return DeliveryPage(
        items=[Delivery.model_validate({**columns(row), "attempt_log": attempts}) for row, attempts in page],
        next_cursor=next_cursor,
    )


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=Delivery,
    summary="Attempt a delivery again now (one attempt; a success enables a disabled subscription again)",
    tags=[TAG],
    responses={
        403: FORBIDDEN,
        404: problem("No such subscription of the caller's, or no such delivery of it."),
    },
)
async def redeliver(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, credential: IntegratorDep, runtime: RuntimeDep
) -> Delivery:
    # Its own transaction: the dispatcher is woken only once the new attempt is committed.
    async with runtime.database.transaction() as session:
        if await webhooks.get_subscription(session, webhooks.Owner.of(credential), webhook_id) is None:
            raise not_found("Webhook subscription", webhook_id)
        retries = len(runtime.settings.webhook_retry_schedule_seconds)
        if not await webhooks.schedule_redelivery(session, webhook_id, delivery_id, retries):
            raise not_found("Delivery", delivery_id)
        row = await webhooks.get_delivery(session, webhook_id, delivery_id)
        attempts = await webhooks.attempts_of(session, delivery_id)
    runtime.dispatcher.poke()
    return Delivery.model_validate({**columns(row), "attempt_log": attempts})


# -- the event stream ------------------------------------------------------------------------


def _requested_types(types: list[str] | None) -> list[TypePattern] | None:
    if not types:
        return None
    texts = [text.strip() for value in types for text in value.split(",") if text.strip()]
    errors = []
    patterns = []
    for text in texts:
        try:
            patterns.append(parse_pattern(text))
        except ValueError as exc:
            errors.append({"field": "types", "message": str(exc)})
    if errors:
        raise field_errors(errors)
    return patterns or None


def _start_after(last_event_id: str | None, since: int | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return since
    try:
        position = int(last_event_id.strip())
    except ValueError:
        position = -1
    if position < 0:
        raise field_errors(
            [{"field": "Last-Event-ID", "message": "must be the id of an event of this stream (an integer)"}]
        )
    return position


STREAM_DESCRIPTION = """\
Server-Sent Events of every event the caller's role may see, in the order of
`SEEDBED_EVENTS`: `id` is the event's position there, `event` its type, `data` the CloudEvent
JSON. Resumes after `Last-Event-ID` (sent by a reconnecting `EventSource`), else after
`since`, else from now. `types` filters with exact types or prefixes ending in `.*`
(repeated, or comma-separated); a pattern of which the role may see nothing is refused (403).
A comment line is sent after 15 s of quiet. The stream never ends by itself."""


@router.get(
    "/events/stream",
    status_code=200,
    summary="Server-Sent Events: every event the caller may see, resumable with Last-Event-ID",
    description=STREAM_DESCRIPTION,
    tags=[TAG],
    response_class=EventStreamResponse,
    response_model=None,
    responses={
        200: {
            "description": "The stream (never ends by itself).",
            "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        403: problem("The role may not use the stream, or may see none of the events of a pattern."),
        429: problem("Too many open streams for this credential, or too many requests."),
        503: problem("The event stream is not available right now."),
    },
    # A stream that never ends: generated test clients (schemathesis) leave this operation alone.
    openapi_extra={"x-seedbed-streaming": True},
)
async def event_stream(
    credential: IntegratorDep,
    runtime: RuntimeDep,
    types: Annotated[list[str] | None, Query(description="Type patterns, e.g. `demand.*`.")] = None,
    since: Annotated[int | None, Query(ge=0, description="Start after this position.")] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event id (position).")
    ] = None,
) -> Response:
    role = credential.principal.role
    try:
        patterns = narrow(role, _requested_types(types))
    except NotVisible as exc:
        raise _not_visible(exc) from None
    after = _start_after(last_event_id, since)
    link = runtime.nats
    if not (link.connected and runtime.event_stream.ready.is_set()):
        raise Problem(
            503,
            "Service Unavailable",
            "The event stream is not available right now; try again shortly.",
            type="events-unavailable",
            headers={"Retry-After": "2"},
        )
    counter = runtime.sse_streams
    key = credential.limit_key
    if not counter.acquire(key):
        raise Problem(
            429,
            "Too Many Requests",
            f"This credential has {counter.limit} event streams open on this server already.",
            type="too-many-streams",
            headers={"Retry-After": "5"},
        )
    try:
        stream = await EventStream.open(link, role, patterns, after, credential.principal.subject_id)
    except Exception as exc:
        counter.release(key)
        raise Problem(
            503,
            "Service Unavailable",
            f"The event stream could not be opened: {type(exc).__name__}.",
            type="events-unavailable",
            headers={"Retry-After": "2"},
        ) from None

    async def still_valid() -> bool:
        """Whether the stream may go on; a check that cannot be made ends it too (fail closed: the
        client reconnects with Last-Event-ID and is authenticated afresh, nothing is lost)."""
        now = utcnow()
        if credential.expires_at is not None and credential.expires_at <= now:
            return False
        if credential.key_id is None:
            return True
        try:
            async with runtime.database.transaction(write=False) as session:
                key_row = (
                    await session.execute(
                        sa.select(api_keys.c.revoked_at, api_keys.c.expires_at).where(
                            api_keys.c.id == credential.key_id
                        )
                    )
                ).one_or_none()
        except Exception:
            return False
        return (
            key_row is not None
            and key_row.revoked_at is None
            and (key_row.expires_at is None or key_row.expires_at > now)
        )

    body = stream.frames(runtime.settings.sse_heartbeat_seconds, still_valid)
    return EventStreamResponse(stream, body, on_close=lambda: counter.release(key))


# -- the event catalogue ---------------------------------------------------------------------


@router.get(
    "/asyncapi.json",
    response_model=dict[str, Any],
    summary="AsyncAPI 3.0: every event type the caller may see, with its payload schema",
    tags=[TAG],
    responses={403: FORBIDDEN},
)
async def asyncapi_json(credential: IntegratorDep, runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(await runtime.asyncapi.document(credential.principal.role))
