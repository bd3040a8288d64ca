"""API keys: created by staff, shown once, stored only as a hash, refused from the moment they are revoked."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from gateway import keys
from gateway.auth import Authenticator
from gateway.models import api_keys
from gateway.tests.conftest import BOOTSTRAP_KEY, GatewayFactory, System, client_of, wait_until
from shared.db import Database


def test_generated_keys_carry_a_visible_lookup_and_256_random_bits() -> None:
    made = {keys.generate_key().plaintext for _ in range(200)}
    assert len(made) == 200
    for plaintext in made:
        lookup = keys.lookup_of(plaintext)
        assert lookup is not None and len(lookup) == keys.LOOKUP_LENGTH
        secret = plaintext[len(keys.KEY_PREFIX) + keys.LOOKUP_LENGTH + 1 :]
        assert len(secret) >= 43  # 32 bytes of urlsafe base64


@pytest.mark.parametrize(
    "token",
    [
        "",
        "sbk_",
        "sbk_short",
        "Bearer sbk_abc",
        "sbk_AAAAAAAAAAA!_secret",
        "sbk_AAAAAAAAAAAAxsecret",
        "eyJ.a.b",
    ],
)
def test_tokens_not_in_the_key_format_have_no_lookup(token: str) -> None:
    assert keys.lookup_of(token) is None


def test_the_digest_depends_on_the_pepper() -> None:
    token = keys.generate_key().plaintext
    assert keys.key_digest(b"one", token) != keys.key_digest(b"two", token)
    assert keys.key_digest(b"one", token) == keys.key_digest(b"one", token)


async def create_key(app: FastAPI, role: str = "integrator", subject: str | None = None, **extra) -> dict:
    """A key; a role bound to an object needs ``subject``, a real one (``System.subject``)."""
    async with client_of(app) as http:
        response = await http.post(
            "/api/v1/api-keys", json={"role": role, "subject_id": subject, "name": "a key", **extra}
        )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_staff_creates_a_key_that_then_authenticates_as_its_principal(
    gateway_app: GatewayFactory, system: System
) -> None:
    async with gateway_app(upstreams=system.upstreams()) as app:
        subject = await system.subject("enterprise")
        created = await create_key(app, "enterprise", subject)
        assert created["key"].startswith(created["prefix"] + "_")
        async with client_of(app, created["key"]) as http:
            me = (await http.get("/api/v1/me")).json()
    assert me == {
        "role": "enterprise",
        "subject_id": subject,
        "actor": f"key:{created['id']}",
        "credential": "api_key",
        "key_id": created["id"],
        "name": "a key",
        "expires_at": None,
        "rate_limit_per_minute": 600,
    }


async def test_the_key_table_holds_no_plaintext_key(
    gateway_app: GatewayFactory, gateway_database_url: str, system: System
) -> None:
    async with gateway_app(upstreams=system.upstreams()) as app:
        created = [
            await create_key(app, role, await system.subject(role) if role in ("anchor", "mentor") else None)
            for role in ("staff", "anchor", "mentor", "integrator")
        ]
    database = Database(gateway_database_url)
    try:
        async with database.transaction(write=False) as session:
            rows = (await session.execute(sa.select(api_keys))).all()
    finally:
        await database.dispose()
    stored = " ".join(str(value) for row in rows for value in row)
    assert len(rows) == 4
    for key in created:
        secret = key["key"].split("_", 2)[2]
        assert key["key"] not in stored
        assert secret not in stored
        assert secret[:16] not in stored
    by_id = {str(row.id): row for row in rows}
    for key in created:
        assert by_id[key["id"]].key_hash == keys.key_digest(b"", key["key"]).hex()


async def test_the_list_never_shows_a_key_and_pages_with_a_cursor(gateway_app: GatewayFactory) -> None:
    async with gateway_app() as app:
        created = [await create_key(app) for _ in range(5)]
        seen = []
        cursor = None
        async with client_of(app) as http:
            while True:
                params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
                page = (await http.get("/api/v1/api-keys", params=params)).json()
                assert all("key" not in item for item in page["items"])
                seen += [item["id"] for item in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            bad_cursor = await http.get("/api/v1/api-keys", params={"cursor": "not-ours"})
    assert seen == [key["id"] for key in created]
    assert bad_cursor.status_code == 400
    assert bad_cursor.headers["content-type"] == "application/problem+json"


async def test_a_revoked_key_is_refused_on_the_very_next_request(gateway_app: GatewayFactory) -> None:
    async with gateway_app() as app:
        created = await create_key(app)
        async with client_of(app, created["key"]) as http:
            for _ in range(3):  # the key is verified and cached
                assert (await http.get("/api/v1/me")).status_code == 200
            async with client_of(app) as staff:
                assert (await staff.delete(f"/api/v1/api-keys/{created['id']}")).status_code == 204
            refused = await http.get("/api/v1/me")
        async with client_of(app) as staff:
            listed = (await staff.get("/api/v1/api-keys", params={"include_revoked": True})).json()
            active = (await staff.get("/api/v1/api-keys")).json()
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert [item["revoked_at"] is not None for item in listed["items"]] == [True]
    assert active["items"] == []


async def test_a_key_revoked_on_one_replica_is_refused_by_another_through_the_broadcast(
    gateway_app: GatewayFactory,
) -> None:
    # A long cache TTL: only the NATS broadcast can make replica B forget the key in time.
    async with (
        gateway_app(credential_cache_seconds=3600) as a,
        gateway_app(credential_cache_seconds=3600) as b,
    ):
        auth_b: Authenticator = b.state.runtime.auth
        await wait_until(lambda: auth_b._subscription is not None)
        created = await create_key(a)
        async with client_of(b, created["key"]) as on_b:
            assert (await on_b.get("/api/v1/me")).status_code == 200
            assert len(auth_b.cache) == 1
            async with client_of(a) as staff_on_a:
                assert (await staff_on_a.delete(f"/api/v1/api-keys/{created['id']}")).status_code == 204
            await wait_until(lambda: len(auth_b.cache) == 0, timeout=2)
            assert (await on_b.get("/api/v1/me")).status_code == 401


async def test_a_replica_cut_off_from_nats_does_not_trust_its_cache(
    gateway_app: GatewayFactory, gateway_database_url: str
) -> None:
    # No revocation broadcast can reach a replica without NATS, so it checks the database each time.
    dead_nats = "nats://127.0.0.1:9"
    async with gateway_app(nats_url=dead_nats, credential_cache_seconds=3600) as app:
        created = await create_key(app)
        async with client_of(app, created["key"]) as http:
            assert (await http.get("/api/v1/me")).status_code == 200
            database = Database(gateway_database_url)
            try:
                async with database.transaction() as session:  # as another replica would
                    await keys.revoke_key(session, uuid.UUID(created["id"]), "elsewhere")
            finally:
                await database.dispose()
            assert (await http.get("/api/v1/me")).status_code == 401


async def test_an_expired_key_is_refused(gateway_app: GatewayFactory) -> None:
    async with gateway_app() as app:
        soon = datetime.now(UTC) + timedelta(seconds=3)  # time to create and use it on a loaded machine
        created = await create_key(app, expires_at=soon.isoformat())
        async with client_of(app, created["key"]) as http:
            assert (await http.get("/api/v1/me")).status_code == 200
            await wait_until(lambda: datetime.now(UTC) > soon, timeout=5)
            refused = await http.get("/api/v1/me")
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]


async def test_a_key_with_a_changed_character_is_refused(gateway_app: GatewayFactory) -> None:
    async with gateway_app() as app:
        created = await create_key(app)
        key = created["key"]
        forged = key[:-1] + ("A" if key[-1] != "A" else "B")
        async with client_of(app, forged) as http:
            assert (await http.get("/api/v1/me")).status_code == 401
        unknown_lookup = "sbk_" + "Z" * 12 + key[16:]
        async with client_of(app, unknown_lookup) as http:
            assert (await http.get("/api/v1/me")).status_code == 401


@pytest.mark.parametrize("role", ["anchor", "enterprise", "mentor", "integrator"])
async def test_only_staff_manage_keys(gateway_app: GatewayFactory, system: System, role: str) -> None:
    async with gateway_app(upstreams=system.upstreams()) as app:
        created = await create_key(app, role, await system.subject(role) if role != "integrator" else None)
        async with client_of(app, created["key"]) as http:
            responses = [
                await http.post("/api/v1/api-keys", json={"role": "staff", "name": "escalate"}),
                await http.get("/api/v1/api-keys"),
                await http.delete(f"/api/v1/api-keys/{created['id']}"),
            ]
            still_valid = await http.get("/api/v1/me")
    assert [r.status_code for r in responses] == [403, 403, 403]
    assert all(r.headers["content-type"] == "application/problem+json" for r in responses)
    assert still_valid.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "anchor", "subject_id": None, "name": "x"}, "body"),
        ({"role": "staff", "subject_id": str(uuid.uuid4()), "name": "x"}, "body"),
        ({"role": "overlord", "subject_id": None, "name": "x"}, "role"),
        ({"role": "staff", "subject_id": None, "name": "  "}, "name"),
        ({"role": "anchor", "subject_id": "not-a-uuid", "name": "x"}, "subject_id"),
        ({"role": "staff", "name": "x", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
    ],
)
async def test_invalid_key_requests_are_refused_field_by_field(
    gateway_app: GatewayFactory, body: dict, field: str
) -> None:
    async with gateway_app() as app, client_of(app) as http:
        response = await http.post("/api/v1/api-keys", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_revoking_an_unknown_key_is_404_and_revoking_twice_is_harmless(
    gateway_app: GatewayFactory,
) -> None:
    async with gateway_app() as app:
        created = await create_key(app)
        async with client_of(app) as http:
            unknown = await http.delete(f"/api/v1/api-keys/{uuid.uuid4()}")
            first = await http.delete(f"/api/v1/api-keys/{created['id']}")
            second = await http.delete(f"/api/v1/api-keys/{created['id']}")
    assert unknown.status_code == 404
    assert (first.status_code, second.status_code) == (204, 204)


async def test_the_bootstrap_staff_key_is_staff_whatever_its_format(gateway_app: GatewayFactory) -> None:
    async with gateway_app(bootstrap_staff_key="any format at all: 42") as app:
        async with client_of(app, "any format at all: 42") as http:
            me = (await http.get("/api/v1/me")).json()
        async with client_of(app, BOOTSTRAP_KEY) as http:
            other = await http.get("/api/v1/me")
    assert me["role"] == "staff" and me["credential"] == "bootstrap"
    assert other.status_code == 401


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token sbk_x", "bearer garbage"]
)
async def test_missing_or_malformed_credentials_get_401_problem(
    gateway_app: GatewayFactory, header: str
) -> None:
    async with gateway_app() as app, client_of(app, None) as http:
        headers = {"Authorization": header} if header else {}
        response = await http.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith('Bearer realm="seedbed"')


async def test_a_nats_reconnect_empties_the_cache_since_broadcasts_may_have_been_missed(
    gateway_app: GatewayFactory, gateway_database_url: str, own_nats_server
) -> None:
    async with gateway_app(nats_url=own_nats_server.url, credential_cache_seconds=3600) as app:
        auth: Authenticator = app.state.runtime.auth
        await wait_until(lambda: auth._subscription is not None)
        created = await create_key(app)
        async with client_of(app, created["key"]) as http:
            assert (await http.get("/api/v1/me")).status_code == 200
            assert len(auth.cache) == 1
            own_nats_server.kill()
            # Revoked elsewhere while this replica cannot hear the broadcast.
            database = Database(gateway_database_url)
            try:
                async with database.transaction() as session:
                    await keys.revoke_key(session, uuid.UUID(created["id"]), "elsewhere")
            finally:
                await database.dispose()
            own_nats_server.start()
            await wait_until(lambda: app.state.runtime.nats.connected, timeout=10)
            assert (await http.get("/api/v1/me")).status_code == 401


def test_a_verification_that_began_before_a_revocation_is_not_cached() -> None:
    from gateway.auth import CredentialCache, make_credential
    from shared.principal import Principal

    cache = CredentialCache(ttl=60, size=10)
    key_id = uuid.uuid4()
    credential = make_credential(
        Principal(role="anchor", subject_id="a", actor="k"), "api_key", "k", 10, key_id=key_id
    )
    generation = cache.generation  # the database read starts here...
    cache.revoke(key_id)  # ...a revocation lands meanwhile...
    cache.put(b"digest", credential, now=0.0, generation=generation)  # ...and the stale result arrives
    assert cache.get(b"digest", now=1.0) is None
    cache.put(b"digest", credential, now=0.0, generation=cache.generation)
    assert cache.get(b"digest", now=1.0) is credential
    assert cache.get(b"digest", now=61.0) is None  # the TTL


def test_the_cache_is_bounded() -> None:
    from gateway.auth import CredentialCache, make_credential
    from shared.principal import Principal

    cache = CredentialCache(ttl=60, size=3)
    for n in range(10):
        credential = make_credential(Principal(role="staff", actor=f"k{n}"), "api_key", f"k{n}", 10)
        cache.put(f"d{n}".encode(), credential, now=0.0, generation=cache.generation)
    assert len(cache) == 3
    assert cache.get(b"d9", now=1.0) is not None and cache.get(b"d0", now=1.0) is None


async def test_with_its_database_down_the_gateway_answers_503_for_keys_it_cannot_check(
    gateway_over: GatewayFactory,
) -> None:
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:9/seedbed_gateway"  # nothing listens on port 9
    async with gateway_over(database_url=unreachable) as app:
        async with client_of(app, keys.generate_key().plaintext) as http:
            unknown = await http.get("/api/v1/me")
        async with client_of(app) as http:
            bootstrap = await http.get("/api/v1/me")
    assert unknown.status_code == 503
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.headers["retry-after"]
    assert bootstrap.status_code == 200  # the bootstrap key needs no database


@pytest.mark.parametrize("role", ["anchor", "enterprise", "mentor"])
async def test_a_key_for_a_subject_that_exists_nowhere_is_refused_naming_subject_id(
    gateway_app: GatewayFactory, system: System, role: str
) -> None:
    nowhere = str(uuid.uuid4())
    async with gateway_app(upstreams=system.upstreams()) as app, client_of(app) as http:
        response = await http.post(
            "/api/v1/api-keys", json={"role": role, "subject_id": nowhere, "name": "x"}
        )
        listed = (await http.get("/api/v1/api-keys")).json()["items"]
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["subject_id"]
    assert listed == []


@pytest.mark.parametrize(
    ("kind", "role"), [("anchor", "enterprise"), ("enterprise", "anchor"), ("mentor", "anchor")]
)
async def test_a_key_whose_subject_is_of_another_kind_is_refused(
    gateway_app: GatewayFactory, system: System, kind: str, role: str
) -> None:
    other_kind = await system.subject(kind)
    async with gateway_app(upstreams=system.upstreams()) as app, client_of(app) as http:
        response = await http.post(
            "/api/v1/api-keys", json={"role": role, "subject_id": other_kind, "name": "x"}
        )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["subject_id"]


async def test_a_key_is_not_made_when_the_owning_service_cannot_be_asked(gateway_app: GatewayFactory) -> None:
    # No upstreams: the services are not running.
    async with gateway_app() as app, client_of(app) as http:
        response = await http.post(
            "/api/v1/api-keys", json={"role": "anchor", "subject_id": str(uuid.uuid4()), "name": "x"}
        )
        listed = (await http.get("/api/v1/api-keys")).json()["items"]
    assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
    assert listed == []


async def test_a_key_request_that_is_not_json_names_the_body_through_the_gateway(system: System) -> None:
    async with system.client() as http:
        response = await http.post(
            "/api/v1/api-keys",
            content=b'{"role": "staff",, "name": "x"}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["body"]
    assert "not valid JSON" in errors[0]["message"] and "line 1 column 18" in errors[0]["message"]


async def test_two_authorization_headers_are_refused_whichever_comes_first(
    gateway_over: GatewayFactory,
) -> None:
    async with gateway_over() as app, client_of(app, None) as http:
        one = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"})
        answers = [
            await http.get("/api/v1/me", headers=[("Authorization", first), ("Authorization", second)])
            for first, second in [
                (f"Bearer {BOOTSTRAP_KEY}", "Bearer sbk_not-a-key"),
                ("Bearer sbk_not-a-key", f"Bearer {BOOTSTRAP_KEY}"),
                (f"Bearer {BOOTSTRAP_KEY}", f"Bearer {BOOTSTRAP_KEY}"),
            ]
        ]
    assert one.status_code == 200
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert "Authorization" in answer.json()["detail"]
