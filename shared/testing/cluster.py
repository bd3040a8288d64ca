"""The system spread over several processes, for the cluster tests and the load bench.

``NatsCluster``: three (or more) bundled nats-servers routed into one JetStream cluster on
loopback ports, each with its monitoring port. ``replicated_system`` runs it with PostgreSQL
(one database per service, migrated by alembic), ``replicas`` uvicorn processes of each service
and of the gateway. Each replica logs into PostgreSQL as a role of its own, and ``AUDIT_SQL``
(installed by ``install_audit``) records in each database which role committed which inbox row,
outbox row and sent mark: who did the consumer, write, relay and job work, read from the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from shared.testing.databases import DatabaseFactory, alembic_prepare
from shared.testing.nats_server import NatsServer
from shared.testing.ports import server_port
from shared.testing.system import (
    APPS,
    MIGRATIONS,
    SERVICES,
    Process,
    _wait_for_whole_documents,
    base_environ,
    service_env,
)

PARTS = (*SERVICES, "gateway")
# Eight Python processes importing at once: minutes on a shared, loaded machine.
START_TIMEOUT = 300.0


class ClusterNode(NatsServer):
    """One nats-server of a JetStream cluster: named, routed to its peers, with monitoring."""

    def __init__(self, store_dir: Path, name: str, cluster_port: int, routes: list[int]) -> None:
        super().__init__(store_dir, port=server_port())
        self.name = name
        self.cluster_port = cluster_port
        self.routes = routes
        self.monitor_port = server_port()

    def command(self) -> list[str]:
        if not self.routes:  # a cluster of one: a plain JetStream server
            return [*super().command(), "--http_port", str(self.monitor_port)]
        return [
            *super().command(),
            "--server_name",
            self.name,
            "--cluster_name",
            "seedbed",
            "--cluster",
            f"nats://127.0.0.1:{self.cluster_port}",
            "--routes",
            ",".join(f"nats://127.0.0.1:{port}" for port in self.routes),
            "--http_port",
            str(self.monitor_port),
        ]


class NatsCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        cluster_ports = [server_port() for _ in range(size)]
        self.nodes = [
            ClusterNode(
                root / f"nats-{n}",
                f"n{n}",
                cluster_ports[n],
                [p for i, p in enumerate(cluster_ports) if i != n],
            )
            for n in range(size)
        ]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    async def wait_jetstream(self, timeout: float = 60.0) -> None:
        """Until every node answers JetStream requests (a meta leader is elected)."""
        for node in self.nodes:
            if node.process is not None:
                await node.wait_jetstream(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# Who committed what, by PostgreSQL role (one role per replica): consumed events (inbox rows),
# written events (outbox rows, including those of jobs), published events (the sent mark), and
# on the gateway's database webhook deliveries marked delivered.
AUDIT_SQL = [
    """CREATE TABLE cluster_audit (
        id bigserial PRIMARY KEY,
        work text NOT NULL,
        who text NOT NULL DEFAULT session_user,
        detail text NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    *(
        # One function per kind of row: plpgsql resolves every field an expression names.
        f"""CREATE FUNCTION cluster_audit_{work}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO cluster_audit (work, detail) VALUES ('{work}', {detail});
            RETURN NULL;
        END $$"""
        for work, detail in {
            "consumer": "NEW.consumer || ' ' || NEW.event_id",
            "write": "NEW.subject || ' ' || NEW.id",
            "relay": "NEW.id",
            "dispatch": "NEW.event_id || ' ' || NEW.id::text",
        }.items()
    ),
]
AUDIT_TRIGGERS = {
    "service": [
        "CREATE TRIGGER audit_consumer AFTER INSERT ON inbox FOR EACH ROW "
        "EXECUTE FUNCTION cluster_audit_consumer()",
        "CREATE TRIGGER audit_write AFTER INSERT ON outbox FOR EACH ROW "
        "EXECUTE FUNCTION cluster_audit_write()",
        "CREATE TRIGGER audit_relay AFTER UPDATE OF sent_at ON outbox FOR EACH ROW "
        "WHEN (OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL) EXECUTE FUNCTION cluster_audit_relay()",
    ],
    "gateway": [
        "CREATE TRIGGER audit_dispatch AFTER UPDATE OF delivered_at ON webhook_deliveries FOR EACH ROW "
        "WHEN (OLD.delivered_at IS NULL AND NEW.delivered_at IS NOT NULL) "
        "EXECUTE FUNCTION cluster_audit_dispatch()",
    ],
}


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def install_audit(url: str, part: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for statement in [*AUDIT_SQL, *AUDIT_TRIGGERS["gateway" if part == "gateway" else "service"]]:
            await connection.execute(statement)
    finally:
        await connection.close()


async def audit_rows(url: str) -> list[tuple[str, str, str]]:
    """(work, role, detail) of every audited commit in the database at ``url``."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await connection.fetch("SELECT work, who, detail FROM cluster_audit ORDER BY id")
    finally:
        await connection.close()
    return [(r["work"], r["who"], r["detail"]) for r in rows]


@dataclass
class ReplicatedSystem:
    nats: NatsCluster
    replicas: dict[str, list[Process]]  # part -> its replicas
    database_urls: dict[str, str]  # part -> the database (as the admin role)
    roles: dict[str, str] = field(default_factory=dict)  # role -> "part#replica"

    @property
    def gateways(self) -> list[Process]:
        return self.replicas["gateway"]

    def everything(self) -> list[Process]:
        return [p for processes in self.replicas.values() for p in processes]


@contextlib.contextmanager
def replicated_system(
    root: Path,
    databases: DatabaseFactory,
    *,
    replicas: int = 2,
    nats_nodes: int = 3,
    env: Mapping[str, str] | None = None,
    apps: Mapping[str, str] | None = None,
    audit: bool = True,
) -> Iterator[ReplicatedSystem]:
    """The whole system on PostgreSQL and a JetStream cluster (streams at ``nats_nodes``
    replicas), ``replicas`` processes of each part. Gateway replica ``i`` calls replica ``i`` of
    each service (there is no load balancer here); the replicas of a part connect to different
    NATS nodes and learn the others from the cluster."""
    if databases.postgres_url is None:
        raise RuntimeError("the replicated system runs on PostgreSQL: set SEEDBED_TEST_POSTGRES_URL")
    apps = APPS | dict(apps or {})
    cluster = NatsCluster(root, nats_nodes)
    run = uuid.uuid4().hex[:6]
    roles = {f"sbc_{run}_{part}_{i}": f"{part}#{i}" for part in PARTS for i in range(replicas)}
    admin = asyncpg_dsn(databases.postgres_url)
    everything: list[Process] = []

    async def prepare() -> dict[str, str]:
        connection = await asyncpg.connect(admin)
        try:
            for role in roles:
                await connection.execute(f'CREATE ROLE "{role}" LOGIN SUPERUSER')
        finally:
            await connection.close()
        urls = {}
        for part in PARTS:
            urls[part] = await databases.create("postgres", part, alembic_prepare(MIGRATIONS[part]))
            if audit:
                await install_audit(urls[part], part)
        return urls

    async def drop_roles() -> None:
        connection = await asyncpg.connect(admin)
        try:
            for role in roles:
                with contextlib.suppress(Exception):
                    await connection.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await connection.close()

    try:
        urls = asyncio.run(prepare())
        cluster.start()
        asyncio.run(cluster.wait_jetstream())
        common = base_environ() | {"SEEDBED_STREAM_REPLICAS": str(nats_nodes)} | dict(env or {})
        for part in PARTS:
            common[f"{part.upper()}_DB_POOL_SIZE"] = "4"
        processes: dict[str, list[Process]] = {}
        for n, part in enumerate(PARTS):
            processes[part] = []
            for i in range(replicas):
                role = f"sbc_{run}_{part}_{i}"
                own = {
                    name: make_url(url).set(username=role).render_as_string(hide_password=False)
                    for name, url in urls.items()
                }
                node = cluster.nodes[(n + i) % nats_nodes]
                process_env = service_env(common, own, node.url) | dict(env or {})
                if part == "gateway":
                    process_env |= {f"GATEWAY_{s.upper()}_URL": processes[s][i].url for s in SERVICES}
                processes[part].append(
                    Process(f"{part}#{i}", apps[part], server_port(), process_env, root / f"{part}-{i}.log")
                )
        everything = [p for ps in processes.values() for p in ps]
        for process in everything:
            process.start()
        for process in everything:
            process.wait_ready("/readyz", START_TIMEOUT)
        for gateway in processes["gateway"]:
            _wait_for_whole_documents(gateway.url)
        yield ReplicatedSystem(cluster, processes, urls, roles)
    finally:
        for process in everything:
            with contextlib.suppress(Exception):
                if process.process is not None:
                    process.thaw()
            process.terminate()
        for process in everything:
            process.stop(timeout=6)
        cluster.stop()
        asyncio.run(drop_roles())


def role_counts(rows: list[tuple[str, str, str]], roles: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """work -> replica name -> how many commits of that work the replica's role made."""
    counts: dict[str, dict[str, int]] = {}
    for work, who, _detail in rows:
        replica = roles.get(who, who)
        counts.setdefault(work, {}).setdefault(replica, 0)
        counts[work][replica] += 1
    return counts


def parse_sse(lines: list[str]) -> dict[str, Any]:
    """One Server-Sent Event from its lines (``id``, ``event``, ``data``)."""
    event: dict[str, Any] = {"data": ""}
    for line in lines:
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            event["data"] += value
        elif name in ("id", "event"):
            event[name] = value
    return event
