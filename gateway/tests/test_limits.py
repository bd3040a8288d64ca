"""Rate limits: per credential (a burst of the quota, then 429 with Retry-After until it refills),
per client address for feeds and failed authentication (forwarded headers only from trusted
proxies), and one quota across gateway replicas when the counters live in NATS KeyValue."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI

from gateway.limits import RateLimiter, SharedRateLimiter
from gateway.tests.conftest import GatewayFactory, client_of
from shared.nats import NatsLink
from shared.testing.system import BOOTSTRAP_KEY


def test_a_full_quota_is_available_as_a_burst_then_refused() -> None:
    limiter = RateLimiter(window_seconds=60)
    decisions = [limiter.check("k", 10, now=100.0) for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    refused = decisions[-1]
    assert refused.retry_after_seconds == 6  # one request's worth: 60 s / 10
    assert (b"retry-after", b"6") in refused.headers


def test_the_quota_refills_continuously() -> None:
    limiter = RateLimiter(window_seconds=60)
    for _ in range(10):
        assert limiter.check("k", 10, now=0.0).allowed
    assert not limiter.check("k", 10, now=5.9).allowed
    assert limiter.check("k", 10, now=6.0).allowed
    assert not limiter.check("k", 10, now=6.1).allowed
    after_a_window = limiter.check("k", 10, now=200.0)
    assert after_a_window.allowed and after_a_window.remaining == 9


def test_credentials_have_separate_quotas() -> None:
    limiter = RateLimiter(window_seconds=60)
    for _ in range(3):
        limiter.check("a", 3, now=0.0)
    assert not limiter.check("a", 3, now=0.0).allowed
    assert limiter.check("b", 3, now=0.0).allowed


def test_headers_follow_the_ietf_draft() -> None:
    decision = RateLimiter(window_seconds=60).check("k", 600, now=0.0)
    headers = dict(decision.headers)
    assert headers[b"ratelimit-policy"] == b'"api";q=600;w=60'
    assert headers[b"ratelimit"] == b'"api";r=599;t=1'


def test_tracking_stays_bounded() -> None:
    limiter = RateLimiter(window_seconds=1, max_tracked=100)
    for n in range(1000):
        limiter.check(f"k{n}", 5, now=float(n))
    assert limiter.tracked() <= 100


async def test_a_key_over_its_quota_gets_429_with_retry_after(gateway_app: GatewayFactory) -> None:
    async with gateway_app() as app:
        await counting(app)
        async with client_of(app) as staff:
            created = (
                await staff.post(
                    "/api/v1/api-keys",
                    json={"role": "integrator", "name": "tight", "rate_limit_per_minute": 3},
                )
            ).json()
        async with client_of(app, created["key"]) as http:
            answers = [await http.get("/api/v1/me") for _ in range(4)]
        async with client_of(app) as staff:
            unaffected = await staff.get("/api/v1/me")
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert int(limited.headers["retry-after"]) == 20
    assert limited.headers["ratelimit-policy"] == '"api";q=3;w=60'
    assert re.fullmatch(r'"api";r=0;t=\d+', limited.headers["ratelimit"])
    assert answers[0].headers["ratelimit"].startswith('"api";r=2;')
    assert unaffected.status_code == 200


def client_at(app, address: str, key: str | None = BOOTSTRAP_KEY) -> httpx.AsyncClient:
    """A client whose connection comes from ``address`` (as the server would report the peer)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 50000)),
        base_url="http://gateway",
        headers=headers,
    )


async def counting(app: FastAPI) -> FastAPI:
    """The gateway once NATS is connected: until then a shared limiter counts locally (by design:
    a broker blip must not refuse everyone), which would split one test's count in two."""
    assert await app.state.nats.wait_ready(10)
    return app


async def feed(http: httpx.AsyncClient, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await http.get("/api/v1/mentors/0b7e/calendar.ics", params={"token": "t"}, headers=headers)


async def test_x_forwarded_for_from_an_untrusted_peer_does_not_buy_a_new_feed_quota(
    gateway_app: GatewayFactory,
) -> None:
    async with gateway_app(public_rate_limit_per_minute=2) as app, client_at(app, "127.0.0.1", None) as http:
        await counting(app)
        answers = [await feed(http, f"198.51.100.{n}") for n in range(4)]
    # No proxy is trusted by default: the loopback peer is the client, whatever it claims.
    assert [a.status_code for a in answers] == [503, 503, 429, 429]


async def test_a_trusted_proxy_reports_the_client_address_the_feed_limit_counts(
    gateway_app: GatewayFactory,
) -> None:
    async with (
        gateway_app(public_rate_limit_per_minute=2, trusted_proxies=["10.0.0.0/8"]) as app,
        client_at(app, "10.1.2.3", None) as proxy,
        client_at(app, "192.0.2.50", None) as direct,
    ):
        await counting(app)
        one = [await feed(proxy, "198.51.100.1") for _ in range(3)]
        other = [await feed(proxy, "198.51.100.2") for _ in range(2)]
        # A peer that is not a trusted proxy is counted as itself, whatever header it sends.
        spoofed = [await feed(direct, f"198.51.100.{n}") for n in range(10, 13)]
    assert [a.status_code for a in one] == [503, 503, 429]
    assert [a.status_code for a in other] == [503, 503]
    assert [a.status_code for a in spoofed] == [503, 503, 429]


async def test_failed_authentication_is_limited_per_address_then_refused_with_429(
    gateway_app: GatewayFactory,
) -> None:
    # Limits of a few a minute: a refill takes 20 s, far longer than the test's requests.
    async with gateway_app(auth_failure_limit_per_minute=3) as app:
        await counting(app)
        async with client_at(app, "198.51.100.9", None) as attacker:
            guesses = [
                await attacker.get("/api/v1/me", headers={"Authorization": f"Bearer sb_guess{n:04d}"})
                for n in range(12)
            ]
            # Past the limit even the right key is refused: otherwise guessing would still pay.
            right_key = await attacker.get("/api/v1/me", headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"})
            malformed = await attacker.get("/api/v1/me", headers={"Authorization": "Basic abc"})
            # A route of a service (the pass-through path) refuses it alike.
            passed_through = await attacker.get(
                "/api/v1/demand", headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"}
            )
        async with client_at(app, "192.0.2.1") as elsewhere:
            unaffected = await elsewhere.get("/api/v1/me")
    codes = [a.status_code for a in guesses]
    assert codes == [401] * 3 + [429] * 9
    refused = guesses[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("rate-limited") and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-policy"] == '"auth-failures";q=3;w=60'
    assert right_key.status_code == 429 and malformed.status_code == 429
    assert passed_through.status_code == 429
    assert unaffected.status_code == 200


async def test_two_thousand_bad_keys_from_one_address_get_a_bounded_number_of_401s(
    gateway_over: GatewayFactory,
) -> None:
    async with gateway_over() as app, client_at(app, "198.51.100.77", None) as attacker:
        limit = app.state.settings.auth_failure_limit_per_minute
        codes = [
            (await attacker.get("/api/v1/me", headers={"Authorization": f"Bearer sb_bad{n:05d}"})).status_code
            for n in range(2000)
        ]
    assert codes[:limit] == [401] * limit and codes[limit] == 429
    # The quota refills one failure per 60/limit s while the run lasts: a few more 401s, not 2,000.
    assert codes.count(401) < 2 * limit and codes.count(429) > 2000 - 2 * limit


async def test_credential_less_calendar_feeds_are_limited_per_client_address(
    gateway_app: GatewayFactory,
) -> None:
    async with gateway_app(public_rate_limit_per_minute=2) as app, client_of(app, None) as http:
        await counting(app)
        answers = [
            await http.get("/api/v1/mentors/0b7e/calendar.ics", params={"token": "t"}) for _ in range(3)
        ]
    # The mentoring service is not running in this test: the first two pass the limit and find it down.
    assert [a.status_code for a in answers] == [503, 503, 429]
    assert answers[0].headers["ratelimit-policy"] == '"public";q=2;w=60'


def test_list_settings_read_json_or_commas_from_the_environment(monkeypatch) -> None:
    from gateway.settings import GatewaySettings

    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("GATEWAY_OIDC_ALGORITHMS", '["ES256"]')
    settings = GatewaySettings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.oidc_algorithms == ["ES256"]


async def test_the_gateways_own_routes_refuse_bodies_over_the_limit(gateway_app: GatewayFactory) -> None:
    async def chunks():
        for _ in range(20):
            yield b" " * 1024

    async with gateway_app(max_body_bytes=8 * 1024) as app, client_of(app) as http:
        declared = await http.post(
            "/api/v1/api-keys",
            content=b"{" + b" " * 9000 + b"}",
            headers={"Content-Type": "application/json"},
        )
        streamed = await http.post(
            "/api/v1/api-keys", content=chunks(), headers={"Content-Type": "application/json"}
        )
        small = await http.post("/api/v1/api-keys", json={"role": "integrator", "name": "fits"})
    assert declared.status_code == 413 and declared.headers["content-type"] == "application/problem+json"
    assert streamed.status_code == 413 and streamed.headers["content-type"] == "application/problem+json"
    assert small.status_code == 201


async def test_two_gateway_replicas_on_one_nats_server_hold_a_key_to_one_quota(
    gateway_app: GatewayFactory,
) -> None:
    async with (
        gateway_app(rate_limit_store="nats", auth_failure_limit_per_minute=3) as one,
        gateway_app(rate_limit_store="nats", auth_failure_limit_per_minute=3) as two,
    ):
        await counting(one)
        await counting(two)
        async with client_of(one) as staff:
            made = await staff.post(
                "/api/v1/api-keys", json={"role": "integrator", "name": "shared", "rate_limit_per_minute": 3}
            )
        key = made.json()["key"]
        async with client_of(one, key) as via_one, client_of(two, key) as via_two:
            answers = [await (via_one if n % 2 == 0 else via_two).get("/api/v1/me") for n in range(10)]
        # Failed authentications are counted across replicas too.
        async with (
            client_at(one, "198.51.100.30", None) as at_one,
            client_at(two, "198.51.100.30", None) as at_two,
        ):
            guesses = [
                await (at_one if n % 2 == 0 else at_two).get(
                    "/api/v1/me", headers={"Authorization": f"Bearer sb_guess{n}"}
                )
                for n in range(8)
            ]
        shared = [one.state.runtime.limiter, two.state.runtime.limiter]
    assert [a.status_code for a in answers] == [200] * 3 + [429] * 7
    assert {a.headers["ratelimit-policy"] for a in answers} == {'"api";q=3;w=60'}
    assert [g.status_code for g in guesses] == [401] * 3 + [429] * 5
    assert all(limiter.fallbacks_total == 0 for limiter in shared)  # every check went to the bucket


async def test_replicas_counting_locally_each_allow_the_whole_quota(gateway_app: GatewayFactory) -> None:
    """The embedded default (one gateway): counters in the process, so N replicas allow N quotas."""
    async with gateway_app(rate_limit_store="local") as one, gateway_app(rate_limit_store="local") as two:
        async with client_of(one) as staff:
            made = await staff.post(
                "/api/v1/api-keys", json={"role": "integrator", "name": "local", "rate_limit_per_minute": 3}
            )
        key = made.json()["key"]
        async with client_of(one, key) as via_one, client_of(two, key) as via_two:
            answers = [await (via_one if n % 2 == 0 else via_two).get("/api/v1/me") for n in range(8)]
    assert [a.status_code for a in answers] == [200] * 6 + [429] * 2


async def test_concurrent_checks_on_two_replicas_allow_exactly_the_quota(nats_url: str) -> None:
    """Compare-and-set on the key's revision: racing replicas never both take the last request."""
    links = [NatsLink(nats_url, name=f"replica-{n}") for n in range(2)]
    for link in links:
        await link.start()
    try:
        assert all([await link.wait_ready(10) for link in links])
        # A one-hour window: no request refills while the test runs, however loaded the machine.
        replicas = [SharedRateLimiter(link, window_seconds=3600) for link in links]
        decisions = await asyncio.gather(*(replicas[n % 2].admit("key:racing", 10) for n in range(40)))
        again = await asyncio.gather(*(limiter.admit("key:racing", 10) for limiter in replicas))
    finally:
        for link in links:
            await link.close()
    assert sum(d.allowed for d in decisions) == 10
    assert not any(d.allowed for d in again)  # refused from the cache or the bucket alike
    assert all(limiter.fallbacks_total == 0 for limiter in replicas)
