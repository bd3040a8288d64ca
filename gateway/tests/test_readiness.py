"""The gateway's readiness: 503 only when it cannot serve (its database); NATS and the services
down make it degraded, so that a probe does not take every gateway out over a NATS blip."""

from __future__ import annotations

from gateway.tests.conftest import BOOTSTRAP_KEY, GatewayFactory, client_of


async def test_the_gateway_is_ready_but_degraded_without_nats_and_services(
    gateway_over: GatewayFactory,
) -> None:
    # Port 9 (discard) has no listener: NATS and the three services are down.
    async with gateway_over(nats_url="nats://127.0.0.1:9") as app, client_of(app, None) as http:
        ready = await http.get("/readyz")
        me = await http.get("/api/v1/me", headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"})
    assert ready.status_code == 200, ready.text
    answer = ready.json()
    assert answer["status"] == "degraded"
    assert answer["checks"]["database"] == "ok"
    assert all(answer["checks"][name] != "ok" for name in ("nats", "enterprises", "demand", "mentoring"))
    assert me.status_code == 200  # it serves what needs neither
