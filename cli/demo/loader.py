"""Loading the demo network through the gateway's public API, as a staff user would.

Idempotent: each thing is looked up first (anchors and cohorts by name, enterprises by name,
mentors by email, demand lines by their anchor's ``external_ref``, sessions by mentor,
enterprise and topic, the webhook by its URL, bids by enterprise and line: ``bids.py``) and
made only when missing; imports upsert by ``external_ref``; creates carry an
``Idempotency-Key``. The keys it makes for each kind of user are kept in a file beside the
staff key, and used again while they still work.

Mentoring sessions can be completed only once they have started, so the few sessions that
sign off milestones are booked as drop-ins at the next whole minute and completed when it
has passed: a first load waits up to a minute for them.

A little over 500 lines: one loader per kind of thing, in the order the network is built.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cli.client import BUSY, RETRIES, Gateway, GatewayError
from cli.demo import files
from cli.demo.bids import load_bids
from cli.demo.network import (
    ALL_STATUSES,
    DEMO_TOPIC,
    LABEL,
    Booking,
    Enterprise,
    Network,
    build_network,
    drop_in_start,
    drop_in_windows,
)

API = "/api/v1"
WEBHOOK_URL = "http://127.0.0.1:9/seedbed-demo-webhook"  # loopback discard port; paused anyway
KEY_NAMES = {
    "staff": "demo: intake officer (staff)",
    "anchor": "demo: Calder City Council procurement (anchor)",
    "enterprise": "demo: Green Shoots Catering CIC (enterprise)",
    "mentor": "demo: mentor Amira Hussain (mentor)",
    "integrator": "demo: Calder social-impact hub (integrator)",
}
WORKERS = 4  # requests in flight while loading milestones: the services take them in turn anyway


@dataclass
class Tally:
    made: int = 0
    found: int = 0


@dataclass
class LoadReport:
    seed: int
    counts: dict[str, Tally] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tally(self, kind: str, made: bool) -> None:
        with self.lock:
            tally = self.counts.setdefault(kind, Tally())
            if made:
                tally.made += 1
            else:
                tally.found += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "counts": {k: {"made": v.made, "already_there": v.found} for k, v in self.counts.items()},
            "keys": self.keys,
            "notes": self.notes,
        }


Step = Callable[[str, int], None]  # (what is being done, how many units are done) -> progress


class DemoLoader:
    def __init__(
        self,
        gateway: Gateway,
        network: Network,
        keys_file: Path,
        step: Step = lambda what, done: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.gw = gateway
        self.net = network
        self.keys_file = keys_file
        self.step = step
        self.now = clock
        self.report = LoadReport(network.seed)
        self.ids: dict[str, str] = {}  # network ref -> id in the system
        self.cohort_ids: dict[str, str] = {}

    @property
    def units(self) -> int:
        """How many steps the progress bar counts."""
        net = self.net
        return (
            (len(net.anchors) * 2 + len(net.cohorts) + len(net.enterprises) * 2 + len(net.mentors))
            + len(KEY_NAMES)
            + 1
            + len(net.bookings)
            + len(net.bids)
        )

    def _idempotency(self, what: str) -> dict[str, str]:
        return {"Idempotency-Key": f"seedbed-demo-{self.net.seed}-{what}"}

    # -- the whole load ---------------------------------------------------------------------

    def load(self) -> LoadReport:
        me = self.gw.get(f"{API}/me")
        if me.get("role") != "staff":
            raise GatewayError(f"the demo loads as staff; this key is a {me.get('role')} key")
        self.anchors()
        self.cohorts()
        self.enterprises()
        self.mentors()
        self.keys()
        self.webhook()
        self.demand()
        self.milestones()
        self.bookings()
        load_bids(self.gw, self.net, self.ids, self.report, self.step, self._idempotency)
        return self.report

    # -- anchors, cohorts, enterprises, mentors ---------------------------------------------

    def anchors(self) -> None:
        existing = {a["name"]: a["id"] for a in self.gw.pages(f"{API}/anchors")}
        for anchor in self.net.anchors:
            self.step("anchors", 1)
            self.ids[anchor.ref] = self._made(
                "anchors",
                existing,
                anchor.body["name"],
                lambda anchor=anchor: self.gw.post(
                    f"{API}/anchors", anchor.body, headers=self._idempotency(f"anchor-{anchor.ref}")
                )["id"],
            )

    def _made(self, kind: str, existing: dict[str, str], name: str, make: Callable[[], str]) -> str:
        made = name not in existing
        if made:
            existing[name] = make()
        self.report.tally(kind, made)
        return existing[name]

    def cohorts(self) -> None:
        existing = {c["name"]: c["id"] for c in self.gw.pages(f"{API}/cohorts")}
        for n, cohort in enumerate(self.net.cohorts):
            self.step("cohorts", 1)
            self.cohort_ids[cohort["name"]] = self._made(
                "cohorts",
                existing,
                cohort["name"],
                lambda cohort=cohort, n=n: self.gw.post(
                    f"{API}/cohorts", cohort, headers=self._idempotency(f"cohort-{n}")
                )["id"],
            )

    def enterprises(self) -> None:
        existing = {e["name"]: e["id"] for e in self.gw.pages(f"{API}/enterprises")}
        for enterprise in self.net.enterprises:
            self.step("enterprises", 1)
            body = {k: v for k, v in enterprise.body.items() if k != "cohort"}
            if enterprise.body.get("cohort"):
                body["cohort_id"] = self.cohort_ids[enterprise.body["cohort"]]
            self.ids[enterprise.ref] = self._made(
                "enterprises",
                existing,
                body["name"],
                lambda body=body, ref=enterprise.ref: self.gw.post(
                    f"{API}/enterprises", body, headers=self._idempotency(f"enterprise-{ref}")
                )["id"],
            )

    def mentors(self) -> None:
        existing = {m["email"]: m["id"] for m in self.gw.pages(f"{API}/mentors")}
        for mentor in self.net.mentors:
            self.step("mentors", 1)
            self.ids[mentor.ref] = self._made(
                "mentors",
                existing,
                mentor.body["email"],
                lambda mentor=mentor: self.gw.post(
                    f"{API}/mentors", mentor.body, headers=self._idempotency(f"mentor-{mentor.ref}")
                )["id"],
            )

    # -- keys and the integrator's webhook ---------------------------------------------------

    def _saved_keys(self) -> dict[str, dict[str, Any]]:
        try:
            saved = json.loads(self.keys_file.read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def _still_works(self, entry: dict[str, Any], role: str, subject_id: str | None) -> bool:
        with Gateway(self.gw.url, entry.get("key")) as as_key:
            try:
                me = as_key.get(f"{API}/me")
            except GatewayError:
                return False
        return bool(me.get("role") == role and me.get("subject_id") == subject_id)

    def keys(self) -> None:
        featured = self.net.featured
        subjects = {
            "staff": None,
            "anchor": self.ids[featured["anchor"]],
            "enterprise": self.ids[featured["enterprise"]],
            "mentor": self.ids[featured["mentor"]],
            "integrator": None,
        }
        saved = self._saved_keys()
        for role, subject_id in subjects.items():
            self.step("keys", 1)
            name = KEY_NAMES[role]
            entry = saved.get(role)
            if entry and self._still_works(entry, role, subject_id):
                self.report.tally("api keys", False)
            else:
                # The key is shown once: a lost one is revoked and made again under the same name.
                params: dict[str, Any] = {"role": role}
                if subject_id:
                    params["subject_id"] = subject_id
                for old in self.gw.pages(f"{API}/api-keys", params):
                    if old["name"] == name:
                        self.gw.delete(f"{API}/api-keys/{old['id']}")
                made = self.gw.post(f"{API}/api-keys", {"role": role, "subject_id": subject_id, "name": name})
                entry = {
                    "id": made["id"],
                    "key": made["key"],
                    "role": role,
                    "subject_id": subject_id,
                    "name": name,
                }
                saved[role] = entry
                self.keys_file.parent.mkdir(parents=True, exist_ok=True)
                self.keys_file.write_text(json.dumps(saved, indent=2) + "\n")
                self.keys_file.chmod(0o600)
                self.report.tally("api keys", True)
            self.report.keys[role] = entry

    def webhook(self) -> None:
        """The hub's subscription: registered, then paused, so the demo sends nothing anywhere."""
        self.step("webhook", 1)
        with Gateway(self.gw.url, self.report.keys["integrator"]["key"]) as hub:
            found = [w for w in hub.pages(f"{API}/webhooks") if w["url"] == WEBHOOK_URL]
            if found:
                hook = found[0]
            else:
                hook = hub.post(
                    f"{API}/webhooks",
                    {
                        "url": WEBHOOK_URL,
                        "types": ["demand.*"],
                        "description": "Calder social-impact hub (demo): paused, so nothing is sent",
                    },
                )
            if hook["active"]:
                hook = hub.patch(f"{API}/webhooks/{hook['id']}", {"active": False})
        self.report.tally("webhooks", not found)
        self.report.keys["integrator"] = self.report.keys["integrator"] | {"webhook_id": hook["id"]}

    # -- demand -------------------------------------------------------------------------------

    def demand(self) -> None:
        for anchor in self.net.anchors:
            self.step("demand lines", 1)
            anchor_id = self.ids[anchor.ref]
            lines = [line for line in self.net.lines if line.anchor == anchor.ref]
            known = {
                line["external_ref"]
                for line in self.gw.pages(f"{API}/demand", {"anchor_id": anchor_id, "status": ALL_STATUSES})
            }
            for line in lines:
                if line.route == "post":
                    ref = line.body["external_ref"]
                    if ref not in known:
                        self.gw.post(
                            f"{API}/demand",
                            line.body | {"anchor_id": anchor_id},
                            headers=self._idempotency(f"line-{ref}"),
                        )
                    self.report.tally("demand lines posted", ref not in known)
            for route, media_type in (("csv", "text/csv"), ("ocds", "application/json")):
                bodies = [line.body for line in lines if line.route == route]
                if not bodies:
                    continue
                buyer = anchor.body["name"]
                content = (
                    files.csv_file(bodies)
                    if route == "csv"
                    else files.ocds_package(buyer, bodies, buyer_id=anchor_id)
                )
                result = self.gw.request(
                    "POST",
                    f"{API}/demand/imports",
                    retry=True,  # an upsert by external_ref: sending the file again is harmless
                    params={"anchor_id": anchor_id},
                    content=content,
                    headers={"Content-Type": media_type},
                ).json()
                tally = self.report.counts.setdefault(f"demand lines imported ({route})", Tally())
                tally.made += result["created"]
                tally.found += result["updated"] + result["unchanged"]

    # -- readiness milestones -------------------------------------------------------------------

    def milestones(self) -> None:
        """Each enterprise's progress: the intake officer submits evidence on the enterprise's
        behalf, and a reviewer (the loading staff key) verifies it: nobody verifies their own."""
        intake = Gateway(self.gw.url, self.report.keys["staff"]["key"])
        with intake, ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda enterprise: self._milestones_of(enterprise, intake), self.net.enterprises))

    def _milestones_of(self, enterprise: Enterprise, intake: Gateway) -> None:
        self.step("milestones", 1)
        if not enterprise.milestones:
            return
        path = f"{API}/enterprises/{self.ids[enterprise.ref]}/milestones"
        status = {m["code"]: m["status"] for m in self.gw.pages(path)}
        for step in enterprise.milestones:
            current = status.get(step.code, "not_started")
            done = current == step.status or current == "verified"
            self.report.tally("milestones", not done)
            if done:
                continue
            if step.status == "in_progress":
                self._move(intake, f"{path}/{step.code}", {"status": "in_progress"})
                continue
            if current != "submitted":
                evidence = {
                    "reference": f"DEMO-{step.code[:12].upper()}-{enterprise.ref}",
                    "issuer": "Calder demo evidence",
                }
                body: dict[str, Any] = {"status": "submitted", "evidence": evidence}
                if step.value_pence is not None:
                    body["value_pence"] = step.value_pence
                self._move(intake, f"{path}/{step.code}", body)
            if step.status == "verified":
                verify: dict[str, Any] = {"status": "verified", "note": "Checked by the demo reviewer."}
                if step.expires_in_days is not None:
                    expires = self.now() + timedelta(days=step.expires_in_days)
                    verify["expires_at"] = expires.isoformat()
                self._move(self.gw, f"{path}/{step.code}", verify)

    def _move(self, gw: Gateway, path: str, body: dict[str, Any]) -> None:
        """PATCH a milestone to ``body["status"]``; when a busy service timed out, look whether
        the move was made before making it again (a repeated move may be refused)."""
        for attempt in range(RETRIES + 1):
            try:
                gw.patch(path, body)
                return
            except GatewayError as exc:
                if exc.status not in BUSY or attempt == RETRIES:
                    raise
            time.sleep(2**attempt)
            if self.gw.get(path)["status"] == body["status"]:
                return

    # -- mentoring sessions ---------------------------------------------------------------------

    def _sessions_of(self, mentor_id: str) -> list[dict[str, Any]]:
        return list(self.gw.pages(f"{API}/sessions", {"mentor_id": mentor_id}))

    def bookings(self) -> None:
        drop_ins: list[tuple[Booking, dict[str, Any]]] = []
        for booking in self.net.bookings:
            self.step("mentoring sessions", 1)
            mentor_id, enterprise_id = self.ids[booking.mentor], self.ids[booking.enterprise]
            topic = f"{booking.topic} {DEMO_TOPIC}"
            found = [
                s
                for s in self._sessions_of(mentor_id)
                if s["enterprise_id"] == enterprise_id and s["topic"] == topic and s["status"] != "cancelled"
            ]
            if found:
                self.report.tally("mentoring sessions", False)
                if booking.complete and found[0]["status"] == "booked":
                    drop_ins.append((booking, found[0]))
                continue
            if booking.complete:
                drop_ins.append((booking, self._drop_in(booking, mentor_id, enterprise_id, topic)))
                continue
            start = self.now() + timedelta(days=booking.days_ahead)
            slots = self.gw.get(
                f"{API}/mentors/{mentor_id}/slots",
                params={
                    "start": start.isoformat(),
                    "end": (start + timedelta(days=28)).isoformat(),
                    "duration_minutes": 60,
                },
            )["items"]
            if not slots:
                self.report.notes.append(f"no free slot of mentor {booking.mentor} for {topic!r}")
                continue
            self.gw.post(
                f"{API}/sessions",
                {
                    "mentor_id": mentor_id,
                    "enterprise_id": enterprise_id,
                    "start": slots[0]["start"],
                    "duration_minutes": 60,
                    "topic": topic,
                },
                headers=self._idempotency(
                    f"session-{booking.mentor}-{booking.enterprise}-{slots[0]['start']}"
                ),
            )
            self.report.tally("mentoring sessions", True)
        self._complete(drop_ins)

    def _drop_in(self, booking: Booking, mentor_id: str, enterprise_id: str, topic: str) -> dict[str, Any]:
        """Book a 30-minute drop-in at the next whole minute: the mentor's availability gets the
        hour from then (past midnight too), with no notice, for as long as it takes to book it."""
        availability = self.gw.get(f"{API}/mentors/{mentor_id}/availability")
        zone = ZoneInfo(availability["timezone"])
        start = drop_in_start(self.now().astimezone(zone))
        windows = {day.isoformat(): hours for day, hours in drop_in_windows(start).items()}
        rules = {k: v for k, v in availability.items()}
        dropped = rules | {
            "minimum_notice_minutes": 0,
            "overrides": [
                *[o for o in rules["overrides"] if o["date"] not in windows],
                *[{"date": day, "windows": hours} for day, hours in windows.items()],
            ],
        }
        self.gw.put(f"{API}/mentors/{mentor_id}/availability", dropped)
        try:
            session = self.gw.post(
                f"{API}/sessions",
                {
                    "mentor_id": mentor_id,
                    "enterprise_id": enterprise_id,
                    "start": start.isoformat(),
                    "duration_minutes": 30,
                    "topic": topic,
                    "milestone_code": booking.milestone_code,
                },
            )
        finally:
            self.gw.put(f"{API}/mentors/{mentor_id}/availability", rules)
        self.report.tally("mentoring sessions", True)
        return dict(session)

    def _complete(self, drop_ins: list[tuple[Booking, dict[str, Any]]]) -> None:
        if not drop_ins:
            return
        latest = max(datetime.fromisoformat(s["start"]) for _, s in drop_ins)
        while (wait := (latest - self.now()).total_seconds() + 1) > 0:
            self.step(f"waiting {wait:.0f} s for the drop-in sessions to start", 0)
            time.sleep(min(wait, 1.0))
        for booking, session in drop_ins:
            self.gw.post(
                f"{API}/sessions/{session['id']}/complete",
                {
                    "outcome": "Went through the evidence together; it meets what anchors ask for.",
                    "action_items": ["Keep the certificate with the bid library"],
                    "signed_off_milestones": [booking.milestone_code] if booking.milestone_code else [],
                },
            )
            self.report.tally("sessions completed", True)


def default_keys_file(staff_key_file: Path) -> Path:
    return staff_key_file.with_name("demo-keys.json")


def load_demo(
    gateway: Gateway,
    *,
    seed: int,
    keys_file: Path,
    today: datetime | None = None,
    step: Step = lambda what, done: None,
    on_start: Callable[[int], None] = lambda total: None,
) -> LoadReport:
    """Load the network of ``seed`` through ``gateway`` (a staff key's)."""
    network = build_network(seed, (today or datetime.now(UTC)).date())
    loader = DemoLoader(gateway, network, keys_file, step)
    on_start(loader.units)
    return loader.load()


__all__ = ["LABEL", "LoadReport", "default_keys_file", "load_demo"]
