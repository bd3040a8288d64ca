"""The gateway's own endpoints: API keys and the caller's principal.

The edge has authenticated the caller already; these routes read the credential
it put in ``request.state`` and decide what the caller may do here.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from gateway import keys
from gateway.auth import Credential
from gateway.runtime import GatewayRuntime
from gateway.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, ApiKeyPage, KeyRole, Me
from shared.db import SessionDep
from shared.http import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from shared.problems import Problem, forbidden, not_found

router = APIRouter()


def problem(description: str) -> dict[str, str]:
    """An error answer for the document (the merge gives every error its problem+json body)."""
    return {"description": description}


# Dependencies are async (they do no I/O): a plain def would hop to the threadpool per request.
async def current_credential(request: Request) -> Credential:
    credential = getattr(request.state, "credential", None)
    if not isinstance(credential, Credential):
        raise Problem(401, "Unauthorized", "No credential.", type="unauthorized")
    return credential


async def current_runtime(request: Request) -> GatewayRuntime:
    runtime: GatewayRuntime = request.app.state.runtime
    return runtime


CredentialDep = Annotated[Credential, Depends(current_credential)]
RuntimeDep = Annotated[GatewayRuntime, Depends(current_runtime)]


async def staff_credential(credential: CredentialDep) -> Credential:
    if credential.principal.role != "staff":
        raise forbidden("Only staff manage API keys.")
    return credential


StaffCredentialDep = Annotated[Credential, Depends(staff_credential)]


@router.post(
    "/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Create an API key (staff); the key is shown only in this answer",
    tags=["keys"],
    responses={
        403: problem("The caller is not staff."),
        422: problem("Invalid request, or no anchor, enterprise or mentor with that subject_id."),
        503: problem("The service owning the subject could not be asked."),
    },
)
async def create_api_key(
    body: ApiKeyCreate,
    credential: StaffCredentialDep,
    runtime: RuntimeDep,
    session: SessionDep,
    response: Response,
) -> ApiKeyCreated:
    subject_id = str(body.subject_id) if body.subject_id else None
    await keys.check_subject(
        runtime.http, runtime.settings.upstreams(), runtime.service_auth(), body.role, subject_id
    )
    record, plaintext = await keys.insert_key(
        session,
        pepper=runtime.auth.pepper,
        role=body.role,
        subject_id=subject_id,
        name=body.name,
        created_by=credential.principal.actor,
        rate_limit_per_minute=body.rate_limit_per_minute,
        expires_at=body.expires_at,
    )
    response.headers["Location"] = f"/api/v1/api-keys/{record.id}"
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyCreated(**ApiKeyOut.model_validate(record).model_dump(), key=plaintext)


@router.get(
    "/api-keys",
    response_model=ApiKeyPage,
    summary="List API keys (staff), oldest first; revoked ones only when asked",
    tags=["keys"],
    responses={403: problem("The caller is not staff.")},
)
async def list_api_keys(
    _: StaffCredentialDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    include_revoked: bool = False,
    role: KeyRole | None = None,
    subject_id: uuid.UUID | None = None,
) -> ApiKeyPage:
    records = await keys.list_keys(
        session,
        limit=limit + 1,
        after=keys.KEY_ORDER.decode(cursor),
        include_revoked=include_revoked,
        role=role,
        subject_id=str(subject_id) if subject_id else None,
    )
    page, next_cursor = keys.KEY_ORDER.cut(records, limit)
    return ApiKeyPage(items=[ApiKeyOut.model_validate(r) for r in page], next_cursor=next_cursor)


@router.get(
    "/api-keys/{key_id}",
    response_model=ApiKeyOut,
    summary="One API key (staff), without its secret",
    tags=["keys"],
    responses={403: problem("The caller is not staff."), 404: problem("No such key.")},
)
async def get_api_key(key_id: uuid.UUID, _: StaffCredentialDep, session: SessionDep) -> ApiKeyOut:
    record = await keys.get_key(session, key_id)
    if record is None:
        raise not_found("API key", key_id)
    return ApiKeyOut.model_validate(record)


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    summary="Revoke an API key (staff): refused from the next request on, on every replica",
    tags=["keys"],
    responses={403: problem("The caller is not staff."), 404: problem("No such key.")},
)
async def revoke_api_key(key_id: uuid.UUID, credential: StaffCredentialDep, runtime: RuntimeDep) -> Response:
    # Its own transaction: the caches are told only after the revocation is committed, so no
    # replica can re-read the key as valid after forgetting it.
    async with runtime.database.transaction() as session:
        found = await keys.revoke_key(session, key_id, credential.principal.actor)
    if not found:
        raise not_found("API key", key_id)
    await runtime.auth.revoked(key_id)
    return Response(status_code=204)


@router.get("/me", response_model=Me, summary="The caller's principal", tags=["keys"])
async def me(credential: CredentialDep) -> Me:
    principal = credential.principal
    return Me(
        role=principal.role,
        subject_id=principal.subject_id,
        actor=principal.actor,
        credential=credential.kind,  # type: ignore[arg-type]
        key_id=credential.key_id,
        name=credential.name,
        expires_at=credential.expires_at,
        rate_limit_per_minute=credential.rate_limit_per_minute,
    )
