"""The first hour, against a started system: `make demo` (twice: the same counts), every
`seedbed` command with its errors, the event tail resuming after a dropped connection, and
every command of the README's walkthrough.

One system for the module (its own: these tests load a whole demo network into it and
restart its gateway), the demo loaded once by `make demo`; the commands run as a user runs
them, as processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.testing.databases import DatabaseFactory
from shared.testing.ports import server_port
from shared.testing.system import System
from tests.conftest import boot, line_body, poll
from tests.readme import NOT_RUN, ROOT, runnable, script, shell_blocks

pytestmark = pytest.mark.slow

API = "/api/v1"
BIN = Path(sys.executable).parent
MAKE_DEMO = [
    "make",
    "--no-print-directory",
    "-C",
    str(ROOT),
    "-o",
    ".venv/.installed",  # the tests' own interpreter is installed already (BIN below)
    f"BIN={BIN}",
    "demo",
]


@dataclass
class FirstHour:
    system: System
    home: Path  # stands for the repository's folder: var/ holds the staff key and the demo keys

    @property
    def var(self) -> Path:
        return self.home / "var"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDBED_", "GATEWAY_"))}
        return env | {
            "SEEDBED_URL": self.system.url,
            "SEEDBED_KEY": self.system.staff_key,
            "SEEDBED_VAR_DIR": str(self.var),
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            "COLUMNS": "200",  # wide enough that Rich never shortens a cell
            **extra,
        }

    def keys(self) -> dict[str, dict[str, Any]]:
        return dict(json.loads((self.var / "demo-keys.json").read_text()))

    def seedbed(
        self, *args: str, key: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = self.env() | ({"SEEDBED_KEY": key} if key else {})
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            cwd=self.home,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def make_demo(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            MAKE_DEMO, cwd=self.home, env=self.env(), capture_output=True, text=True, timeout=900
        )

    def get(self, path: str, key: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.system.staff_key}"}
        response = httpx.get(self.system.url + API + path, headers=headers, params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def every(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query = {"limit": 500} | params
        while True:
            page = self.get(path, **query)
            items += page["items"]
            if not page.get("next_cursor"):
                return items
            query["cursor"] = page["next_cursor"]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure as the user sees it: exit 1, one line `Error: ...`, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def hour(
    tmp_path_factory: pytest.TempPathFactory, _database_factory_sync: DatabaseFactory
) -> Iterator[FirstHour]:
    root = tmp_path_factory.mktemp("first-hour")
    (root / "system").mkdir()
    with boot(root / "system", _database_factory_sync) as (system, _clock):
        home = root / "home"
        (home / "var").mkdir(parents=True)
        (home / "var" / "staff-key").write_text(system.staff_key + "\n")
        hour = FirstHour(system, home)
        loaded = hour.make_demo()
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        yield hour


def counts(hour: FirstHour) -> dict[str, int]:
    sessions = hour.every("/sessions")
    return {
        "anchors": len(hour.every("/anchors")),
        "cohorts": len(hour.every("/cohorts")),
        "enterprises": len(hour.every("/enterprises")),
        "demand lines": len(
            hour.every("/demand", status="draft,planned,tendering,awarded,cancelled,withdrawn")
        ),
        "aggregate_only lines": len(hour.every("/demand", visibility="aggregate_only")),
        "mentors": len(hour.every("/mentors")),
        "sessions": len(sessions),
        "completed sessions": sum(s["status"] == "completed" for s in sessions),
        "api keys": len(hour.every("/api-keys")),
        "webhooks": len(hour.every("/webhooks")),
        "bids": len(hour.every("/bids")),
        "bids won": len(hour.every("/bids", status="won")),
        "awarded lines": len(hour.every("/demand", status="awarded")),
    }


# -- the demo -------------------------------------------------------------------------------------


def test_make_demo_loads_the_network_the_issue_describes(hour: FirstHour) -> None:
    found = counts(hour)
    assert found["anchors"] == 12 and found["cohorts"] == 3 and found["mentors"] == 20
    assert found["enterprises"] == 61 and found["demand lines"] == 400
    assert 20 <= found["aggregate_only lines"] <= 60
    assert found["completed sessions"] >= 3 and found["sessions"] >= 15
    assert found["bids"] == 16 and found["bids won"] >= 3 and found["awarded lines"] >= 5
    keys = hour.keys()
    assert set(keys) == {"staff", "anchor", "enterprise", "mentor", "integrator"}
    for role, entry in keys.items():
        me = hour.get("/me", key=entry["key"])
        assert me["role"] == role and me["subject_id"] == entry["subject_id"]
    (hook,) = hour.every("/webhooks")
    assert hook["active"] is False and hook["url"].startswith("http://127.0.0.1:")
    lines = hour.every("/demand")
    assert {line["anchor_type"] for line in lines} >= {"nhs_trust", "university", "police", "fire"}
    # Completed sessions signed off what the enterprises had submitted.
    completed = [
        s for s in hour.every("/sessions", status="completed") if s["outcome"]["signed_off_milestones"]
    ]
    assert completed
    session = completed[0]
    code = session["outcome"]["signed_off_milestones"][0]
    path = f"{API}/enterprises/{session['enterprise_id']}/milestones/{code}"
    headers = {"Authorization": f"Bearer {hour.system.staff_key}"}

    async def milestone() -> httpx.Response:
        async with httpx.AsyncClient(base_url=hour.system.url, headers=headers) as http:
            return await http.get(path)

    signed = asyncio.run(poll(milestone, lambda r: r.json()["status"] == "verified", timeout=30)).json()
    assert signed["verified_by"]["role"] == "mentor"

    # The impact report counts the wins, each confirmed by the anchor's award once it is heard of.
    async def impact() -> httpx.Response:
        async with httpx.AsyncClient(base_url=hour.system.url, headers=headers) as http:
            return await http.get(f"{API}/reports/impact")

    wins = found["bids won"]
    report = asyncio.run(poll(impact, lambda r: r.json()["totals"]["wins_confirmed"] == wins, timeout=30))
    assert report.json()["totals"]["bids_won"] == wins


def test_make_demo_twice_leaves_the_same_counts(hour: FirstHour) -> None:
    before = counts(hour)
    again = hour.make_demo()
    assert again.returncode == 0, again.stdout + again.stderr
    assert counts(hour) == before
    assert "Keys for the walkthrough" in again.stdout
    for entry in hour.keys().values():
        assert entry["key"] in again.stdout  # the same keys, printed again


# -- each command ---------------------------------------------------------------------------------


def test_health_and_a_gateway_that_is_down(hour: FirstHour) -> None:
    up = hour.seedbed("health")
    assert up.returncode == 0, up.stderr
    assert "ready" in up.stdout and "mentoring" in up.stdout
    down = hour.seedbed("--url", f"http://127.0.0.1:{server_port()}", "health")
    assert "cannot reach the gateway" in one_error_line(down)


def test_keys_create_list_revoke_and_a_bad_or_refused_key(hour: FirstHour) -> None:
    made = hour.seedbed("--json", "keys", "create", "--role", "integrator", "--name", "cli test hub")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert hour.get("/me", key=key["key"])["role"] == "integrator"
    shown = hour.seedbed("keys", "create", "--role", "integrator", "--name", "cli test table")
    assert shown.returncode == 0 and "shown only now" in shown.stdout
    listed = hour.seedbed("keys", "list", "--role", "integrator")
    assert key["id"] in listed.stdout and "cli test hub" in listed.stdout
    as_json = json.loads(hour.seedbed("--json", "keys", "list", "--role", "integrator").stdout)
    assert key["id"] in {k["id"] for k in as_json["items"]}
    revoked = hour.seedbed("keys", "revoke", key["id"])
    assert revoked.returncode == 0 and key["id"] in revoked.stdout
    refused = hour.seedbed("keys", "list", key=key["key"])
    assert "refused the API key (401" in one_error_line(refused)
    not_staff = hour.seedbed("keys", "list", key=hour.keys()["anchor"]["key"])
    assert "403" in one_error_line(not_staff)
    bad = hour.seedbed("keys", "create", "--role", "anchor", "--name", "no subject")
    line = one_error_line(bad)
    assert "422" in line and "subject_id is required for the anchor role" in line
    assert one_error_line(hour.seedbed("keys", "revoke", "not-a-key-id")).startswith("Error: DELETE")


def test_dead_letters_list_and_replay_and_their_errors(hour: FirstHour) -> None:
    for part in ("enterprises", "demand", "mentoring", "gateway"):
        listed = hour.seedbed("--json", "dead-letters", "list", "--part", part, "--status", "all")
        assert listed.returncode == 0, listed.stderr
        expected = hour.every(f"/admin/{part}/dead-letters", status="all")
        assert json.loads(listed.stdout)["items"] == expected
    table = hour.seedbed("dead-letters", "list", "--part", "demand")
    assert table.returncode == 0 and "Dead letters of demand" in table.stdout
    assert "--part must be one of" in one_error_line(hour.seedbed("dead-letters", "list", "--part", "x"))
    missing = one_error_line(hour.seedbed("dead-letters", "replay", "--part", "demand", "987654321"))
    assert "404" in missing and "No dead letter 987654321" in missing
    not_staff = hour.seedbed("dead-letters", "list", "--part", "demand", key=hour.keys()["anchor"]["key"])
    assert "403" in one_error_line(not_staff)


def test_demand_import_then_a_refused_file_shows_every_bad_row_and_writes_nothing(
    hour: FirstHour, tmp_path: Path
) -> None:
    anchor = hour.keys()["anchor"]
    good = tmp_path / "lines.csv"
    good.write_text(
        "external_ref,title,cpv_codes,estimated_value_pence,category\n"
        "CLI-1,Park benches (test),39100000,2500000,goods\n"
        "CLI-2,Tree planting (test),77310000,1800000,services\n"
    )
    first = hour.seedbed("demand", "import", str(good), key=anchor["key"])
    assert first.returncode == 0, first.stderr
    assert "Imported lines.csv" in first.stdout
    again = json.loads(hour.seedbed("--json", "demand", "import", str(good), key=anchor["key"]).stdout)
    assert again == {"format": "csv", "rows": 2, "created": 0, "updated": 0, "unchanged": 2}
    before = len(hour.every("/demand", anchor_id=anchor["subject_id"], status="draft,planned,tendering"))
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "external_ref,title,cpv_codes,estimated_value_pence,category\n"
        "CLI-3,Minibus hire (test),6013000,-5,services\n"
        "CLI-4,Fine row (test),60130000,900000,services\n"
        "CLI-5,,60130000,900000,transport\n"
    )
    refused = hour.seedbed("demand", "import", str(bad), key=anchor["key"])
    line = one_error_line(refused)
    assert "422 Import rejected" in line and "nothing was imported" in line
    table = refused.stderr
    assert "4 problem(s); nothing was imported" in table
    for row, field in (("2", "cpv_codes"), ("2", "estimated_value_pence"), ("4", "title"), ("4", "category")):
        assert any(row in text and field in text for text in table.splitlines()), (row, field, table)
    after = len(hour.every("/demand", anchor_id=anchor["subject_id"], status="draft,planned,tendering"))
    assert after == before
    unknown = tmp_path / "lines.txt"
    unknown.write_text("x")
    assert "cannot tell the kind" in one_error_line(hour.seedbed("demand", "import", str(unknown)))


def test_pipeline_table_says_what_it_leaves_out(hour: FirstHour) -> None:
    deadline = time.monotonic() + 60
    # The demo's open public lines, the ones it awarded having left the pipeline.
    expected = len(hour.every("/demand", visibility="public", status="planned,tendering"))
    assert expected >= 340
    while True:  # until they are in a published snapshot
        view = json.loads(hour.seedbed("--json", "pipeline", "--group-by", "anchor_type").stdout)
        if (view["totals"]["count"] or 0) >= expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert view["totals"]["count"] == expected
    # Grouped by anchor type, the view cuts the confidential blocks: public lines only, and said so.
    assert view["confidential"]["included"] is False
    assert all(c["confidential_included"] is False for c in view["cells"])
    table = hour.seedbed("pipeline", "--group-by", "anchor_type").stdout
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 3}
    for cell in view["cells"]:
        assert str(cell["count"]) in rows[cell["key"]["anchor_type"]]
    assert " ".join(view["confidential"]["note"].split()[:4]) in " ".join(table.split())
    filtered = json.loads(
        hour.seedbed("--json", "pipeline", "--group-by", "quarter", "--cpv", "55", "--vcse").stdout
    )
    assert filtered["filters"] and filtered["group_by"] == ["quarter"]
    wrong = hour.seedbed("pipeline", "--group-by", "colour")
    assert "422" in one_error_line(wrong) and "group_by" in wrong.stderr


def test_matches_with_gaps_for_the_enterprise_and_404_for_another(hour: FirstHour) -> None:
    mine = hour.keys()["enterprise"]
    found = json.loads(hour.seedbed("--json", "matches", mine["subject_id"], key=mine["key"]).stdout)
    assert found["items"] and any(item["gaps"] for item in found["items"])
    table = hour.seedbed("matches", mine["subject_id"], "--limit", "3", key=mine["key"]).stdout
    assert found["items"][0]["title"] in table
    other = next(e["id"] for e in hour.every("/enterprises") if e["id"] != mine["subject_id"])
    assert "404" in one_error_line(hour.seedbed("matches", other, key=mine["key"]))


class Lines:
    """A process's stdout lines as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(
            target=lambda: [self.queue.put(line) for line in process.stdout], daemon=True
        ).start()

    def next(self, timeout: float = 60) -> dict[str, Any]:
        return dict(json.loads(self.queue.get(timeout=timeout)))


def test_events_tail_resumes_after_the_gateway_drops_it_missing_nothing(hour: FirstHour) -> None:
    system = hour.system
    anchor, hub = hour.keys()["anchor"], hour.keys()["integrator"]

    def post(title: str) -> str:
        body = {k: v for k, v in line_body(anchor["subject_id"], title).items() if k != "anchor_id"}
        response = httpx.post(
            system.url + API + "/demand",
            json=body,
            headers={"Authorization": f"Bearer {anchor['key']}"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    # Line A's position, read here, so that the tail starts just before it however long the
    # command takes to start on a busy machine.
    with httpx.stream(
        "GET",
        system.url + API + "/events/stream",
        params={"types": "demand.item.*"},
        headers={"Authorization": f"Bearer {hub['key']}"},
        timeout=60,
    ) as stream:
        first = post("Tail A (test)")
        position = next(int(line[4:]) for line in stream.iter_lines() if line.startswith("id: "))
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "--json",
            "events",
            "tail",
            "--types",
            "demand.item.*",
            "--since",
            str(position - 1),
            "--count",
            "3",
        ],
        cwd=hour.home,
        env=hour.env(SEEDBED_KEY=hub["key"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(tail)
    try:
        a = lines.next(timeout=180)
        assert a["event"]["subject"] == first and int(a["id"]) == position
        # The tail is frozen while the gateway restarts and two lines are posted: when it runs
        # again its connection is gone, and only Last-Event-ID brings back what it missed.
        tail.send_signal(signal.SIGSTOP)
        system.gateway.stop()
        system.gateway.start()
        system.gateway.wait_ready("/readyz")
        second, third = post("Tail B (test)"), post("Tail C (test)")
        tail.send_signal(signal.SIGCONT)
        b, c = lines.next(timeout=180), lines.next(timeout=180)
        assert tail.wait(60) == 0
    finally:
        if tail.poll() is None:
            tail.send_signal(signal.SIGCONT)
            tail.kill()
    assert [b["event"]["subject"], c["event"]["subject"]] == [second, third]
    assert int(a["id"]) < int(b["id"]) < int(c["id"])
    assert f"resuming after event {a['id']}" in tail.stderr.read()  # type: ignore[union-attr]


def test_events_tail_errors(hour: FirstHour) -> None:
    down = hour.seedbed("--url", f"http://127.0.0.1:{server_port()}", "events", "tail", "--count", "1")
    assert "cannot reach the gateway" in one_error_line(down)
    mentor = hour.keys()["mentor"]
    assert "403" in one_error_line(hour.seedbed("events", "tail", "--count", "1", key=mentor["key"]))
    replay = hour.seedbed(
        "--json", "events", "tail", "--since", "0", "--count", "4", key=hour.keys()["integrator"]["key"]
    )
    assert replay.returncode == 0, replay.stderr
    ids = [int(json.loads(line)["id"]) for line in replay.stdout.splitlines()]
    assert len(ids) == 4 and ids == sorted(ids)


# -- the README -----------------------------------------------------------------------------------


def test_the_readme_names_every_kind_of_user_and_runs_all_but_the_two_commands() -> None:
    blocks = shell_blocks()
    assert len(blocks) >= 9
    skipped = [line for block in blocks for line in block.splitlines() if line not in runnable(block)]
    assert {line.split("#")[0].strip() for line in skipped} == NOT_RUN
    text = (ROOT / "README.md").read_text()
    for heading in (
        "### Staff",
        "### An anchor",
        "### Everyone",
        "### An enterprise",
        "### A mentor",
        "### An integrator",
    ):
        assert heading in text
    assert "```mermaid" in text


def test_every_command_of_the_readme_walkthrough_runs(hour: FirstHour) -> None:
    walk = hour.home
    result = subprocess.run(
        ["bash", "-c", script(BIN)], cwd=walk, env=hour.env(), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    out = result.stdout
    assert "Imported school-meals.csv" in out
    assert "refused: nothing was imported" in out and "nothing was imported" in result.stderr
    assert '"status":"verified"' in out and '"role":"mentor"' in out
    assert '"active":false' in out
    assert "Public liability cover" in out  # the session the enterprise booked
    assert out.count("demand.") >= 5  # the tail's events
