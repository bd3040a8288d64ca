"""The ``seedbed`` command: keys, the demo, imports, the pipeline, matches, events, health.

It talks to the gateway named by ``--url`` or ``SEEDBED_URL`` (the ``make run`` gateway by
default) with the key of ``--key`` or ``SEEDBED_KEY`` (``var/staff-key`` by default).
``--json`` prints what the gateway answered, for scripts. A failure is one line on stderr
(``Error: ...``) and exit status 1: a gateway that does not answer, a refused key, a refused
request with the problem's detail.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import render
from cli.client import Gateway, GatewayError, default_key, default_url, staff_key_file
from cli.demo.loader import default_keys_file, load_demo
from cli.events import Tail

API = "/api/v1"
MEDIA_TYPES = {
    ".csv": "text/csv",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
}

app = typer.Typer(
    help="Seedbed from a terminal: keys, the demo network, demand imports, the pipeline, matches, "
    "the event stream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys (staff): create, list, revoke.", no_args_is_help=True)
demo_app = typer.Typer(help="The synthetic Calder anchor network.", no_args_is_help=True)
demand_app = typer.Typer(help="Forward demand.", no_args_is_help=True)
events_app = typer.Typer(help="The event stream.", no_args_is_help=True)
dead_letters_app = typer.Typer(
    help="Events a consumer gave up on (staff): list, replay.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(demo_app, name="demo")
app.add_typer(demand_app, name="demand")
app.add_typer(events_app, name="events")
app.add_typer(dead_letters_app, name="dead-letters")

out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the gateway's JSON answer.")]


@dataclass
class Options:
    url: str
    key: str | None
    json: bool

    def api_key(self) -> str:
        key = self.key or default_key()
        if key is None:
            raise GatewayError(
                f"no API key: pass --key, set SEEDBED_KEY, or run `make run` (it writes {staff_key_file()})"
            )
        return key

    def gateway(self, *, key_needed: bool = True) -> Gateway:
        return Gateway(self.url, self.api_key() if key_needed else None)


def options(ctx: typer.Context) -> Options:
    found = ctx.find_object(Options)
    assert found is not None
    return found


def emit(opts: Options, as_json: bool, data: Any, *tables: Any) -> None:
    if opts.json or as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    for table in tables:
        out.print(table)


@app.callback()
def main_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(envvar="SEEDBED_URL", help="The gateway [default: the one `make run` starts]."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar="SEEDBED_KEY", help="An API key [default: var/staff-key].", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    ctx.obj = Options(url or default_url(), key, as_json)


# -- health ---------------------------------------------------------------------------------------


@app.command()
def health(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Whether the gateway, every service and NATS answer (exit 1 when not)."""
    opts = options(ctx)
    with opts.gateway(key_needed=False) as gw:
        response = gw.request("GET", "/readyz", expect=(200, 503))
    body = response.json()
    emit(opts, as_json, body, render.health_table(body))
    if response.status_code != 200:
        raise GatewayError(f"not ready: {body.get('detail', body.get('title'))}")


# -- keys -----------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="staff, anchor, enterprise, mentor or integrator")],
    name: Annotated[str, typer.Option(help="What the key is for, for people.")],
    subject_id: Annotated[
        str | None, typer.Option(help="The anchor, enterprise or mentor the key acts for.")
    ] = None,
    expires_at: Annotated[str | None, typer.Option(help="RFC 3339 time when it stops working.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key; the key is shown only now."""
    opts = options(ctx)
    body = {"role": role, "subject_id": subject_id, "name": name}
    if expires_at:
        body["expires_at"] = expires_at
    with opts.gateway() as gw:
        made = gw.post(f"{API}/api-keys", body)
    if opts.json or as_json:
        emit(opts, as_json, made)
        return
    out.print(render.keys_table([made]))
    out.print(f"key (shown only now): [bold]{made['key']}[/bold]")


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    role: Annotated[str | None, typer.Option(help="Only keys of this role.")] = None,
    subject_id: Annotated[str | None, typer.Option(help="Only keys acting for this subject.")] = None,
    include_revoked: Annotated[bool, typer.Option(help="Revoked keys too.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List API keys (never the keys themselves)."""
    opts = options(ctx)
    params: dict[str, Any] = {"include_revoked": include_revoked}
    if role:
        params["role"] = role
    if subject_id:
        params["subject_id"] = subject_id
    with opts.gateway() as gw:
        items = list(gw.pages(f"{API}/api-keys", params))
    emit(opts, as_json, {"items": items}, render.keys_table(items))


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke an API key: refused from the next request on."""
    with options(ctx).gateway() as gw:
        gw.delete(f"{API}/api-keys/{key_id}")
    out.print(f"revoked {key_id}")


# -- demo -----------------------------------------------------------------------------------------


@demo_app.command("load")
def demo_load(
    ctx: typer.Context,
    seed: Annotated[int, typer.Option(help="The same seed makes the same network.")] = 2026,
    keys_file: Annotated[
        Path | None, typer.Option(help="Where the keys it makes are kept [default: beside var/staff-key].")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Load a synthetic city anchor network through the API (twice changes nothing)."""
    opts = options(ctx)
    keys_path = keys_file or default_keys_file(staff_key_file())
    progress = Progress(
        TextColumn("{task.description:<48}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=opts.json or as_json,
    )
    with opts.gateway() as gw, progress:
        task = progress.add_task("connecting", total=None)

        def step(what: str, done: int) -> None:
            progress.update(task, description=what, advance=done)

        report = load_demo(
            gw,
            seed=seed,
            keys_file=keys_path,
            step=step,
            on_start=lambda total: progress.update(task, total=total),
        )
        progress.update(task, description="done", completed=progress.tasks[0].total)
    data = report.as_json()
    counts = Table("kind", "made", "already there", title=f"Demo network (seed {seed}): synthetic data")
    for kind, tally in data["counts"].items():
        counts.add_row(kind, str(tally["made"]), str(tally["already_there"]))
    if opts.json or as_json:
        emit(opts, as_json, data | {"keys_file": str(keys_path)})
    else:
        out.print(counts)
        # Plain lines, not a table: a key must survive copying whole.
        out.print(f"Keys for the walkthrough, one per kind of user (kept in {keys_path}):")
        for role, entry in report.keys.items():
            acts_for = f"  acts for {entry['subject_id']}" if entry.get("subject_id") else ""
            out.print(f"  {role:<11} {entry['key']}{acts_for}", highlight=False, soft_wrap=True)
    for note in report.notes:
        err.print(f"note: {note}")


# -- demand ---------------------------------------------------------------------------------------


@demand_app.command("import")
def demand_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The file to send.")
    ],
    anchor_id: Annotated[str | None, typer.Option(help="Staff: the anchor the lines are for.")] = None,
    content_type: Annotated[
        str | None,
        typer.Option(
            help="text/csv, application/x-ndjson or application/json (OCDS) [default: by extension]."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Import demand lines (CSV, JSON lines, or an OCDS release package): all or nothing."""
    opts = options(ctx)
    media_type = content_type or MEDIA_TYPES.get(file.suffix.lower())
    if media_type is None:
        raise GatewayError(
            f"cannot tell the kind of {file.name}: name it .csv, .ndjson or .json, or pass --content-type"
        )
    size = file.stat().st_size
    progress = Progress(
        TextColumn("sending {task.fields[name]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )

    def chunks() -> Any:
        with file.open("rb") as handle:
            while chunk := handle.read(64 * 1024):
                progress.update(task, advance=len(chunk))
                yield chunk

    params = {"anchor_id": anchor_id} if anchor_id else {}
    with opts.gateway() as gw, progress:
        task = progress.add_task("import", total=size, name=file.name)
        try:
            result = gw.request(
                "POST",
                f"{API}/demand/imports",
                params=params,
                content=chunks(),
                headers={"Content-Type": media_type, "Content-Length": str(size)},
            ).json()
        except GatewayError as exc:
            if exc.problem.get("type", "").endswith("import-rejected") and not (opts.json or as_json):
                progress.stop()
                err.print(render.bad_rows_table(exc.problem))
            elif opts.json or as_json:
                sys.stdout.write(json.dumps(exc.problem, indent=2) + "\n")
            raise
    summary = Table("format", "rows", "created", "updated", "unchanged", title=f"Imported {file.name}")
    summary.add_row(*(str(result[k]) for k in ("format", "rows", "created", "updated", "unchanged")))
    emit(opts, as_json, result, summary)


# -- the pipeline and matches -----------------------------------------------------------------------


@app.command()
def pipeline(
    ctx: typer.Context,
    group_by: Annotated[
        str,
        typer.Option(
            help="Comma-separated: cpv_division, cpv_group, quarter, anchor_type, value_band, "
            "suitable_for_vcse, suitable_for_sme, delivery_area."
        ),
    ] = "cpv_division",
    quarter_of: Annotated[str | None, typer.Option(help="tender or contract_start.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First quarter, e.g. 2027-Q1.")] = None,
    to: Annotated[str | None, typer.Option(help="Last quarter.")] = None,
    cpv: Annotated[list[str] | None, typer.Option(help="CPV division or group (repeat for more).")] = None,
    anchor_type: Annotated[list[str] | None, typer.Option(help="Anchor type (repeat for more).")] = None,
    value_band: Annotated[list[str] | None, typer.Option(help="Value band (repeat for more).")] = None,
    delivery_area: Annotated[list[str] | None, typer.Option(help="Postcode area (repeat for more).")] = None,
    vcse: Annotated[
        bool | None, typer.Option("--vcse/--not-vcse", help="Only lines (not) suitable for VCSEs.")
    ] = None,
    sme: Annotated[
        bool | None, typer.Option("--sme/--not-sme", help="Only lines (not) suitable for SMEs.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The aggregated pipeline as a table; cells disclosure control holds back read "suppressed"."""
    opts = options(ctx)
    params: dict[str, Any] = {"group_by": group_by}
    for name, value in (
        ("quarter_of", quarter_of),
        ("from", from_),
        ("to", to),
        ("cpv", cpv),
        ("anchor_type", anchor_type),
        ("value_band", value_band),
        ("delivery_area", delivery_area),
        ("suitable_for_vcse", vcse),
        ("suitable_for_sme", sme),
    ):
        if value is not None and value != []:
            params[name] = str(value).lower() if isinstance(value, bool) else value
    with opts.gateway() as gw:
        view = gw.get(f"{API}/pipeline", params=params)
    emit(opts, as_json, view, render.pipeline_table(view))


@app.command()
def matches(
    ctx: typer.Context,
    enterprise: Annotated[str, typer.Argument(help="The enterprise's id.")],
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Open demand lines an enterprise could bid for, best first, with its readiness gaps."""
    opts = options(ctx)
    with opts.gateway() as gw:
        found = gw.get(f"{API}/enterprises/{enterprise}/matches", params={"limit": limit} if limit else None)
        anchors = (
            {a["id"]: a["name"] for a in gw.pages(f"{API}/anchors")} if not (opts.json or as_json) else {}
        )
    emit(opts, as_json, found, render.matches_table(found["items"], anchors))


# -- events ---------------------------------------------------------------------------------------


@events_app.command("tail")
def events_tail(
    ctx: typer.Context,
    types: Annotated[
        list[str] | None,
        typer.Option("--types", help="Event type patterns, e.g. 'demand.*' (repeat for more)."),
    ] = None,
    since: Annotated[
        int | None, typer.Option(help="Start after this stream position (0: from the start).")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    reconnect: Annotated[bool, typer.Option(help="Resume with Last-Event-ID after a drop.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Follow the event stream (Server-Sent Events), resuming after a dropped connection."""
    opts = options(ctx)
    key = opts.api_key()
    json_lines = opts.json or as_json

    def show(event_id: str, event_type: str, event: dict[str, Any]) -> None:
        if json_lines:
            sys.stdout.write(json.dumps({"id": event_id, "event": event}) + "\n")
            sys.stdout.flush()
            return
        when = str(event.get("time", ""))[:19]
        out.print(f"[dim]{event_id:>7}[/dim] {when} [bold]{event_type}[/bold] {event.get('subject', '')}")

    def dropped(why: str, last_id: str | None, delay: float) -> None:
        after = f"after event {last_id}" if last_id else "from the start"
        err.print(f"[yellow]stream dropped ({why}); resuming {after} in {delay:.1f} s[/yellow]")

    tail = Tail(opts.url, key, list(types or []), since, count, reconnect, on_drop=dropped)
    try:
        tail.run(show)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


# -- dead letters --------------------------------------------------------------------------------

PARTS = ("enterprises", "demand", "mentoring", "gateway")
PartOption = Annotated[
    str, typer.Option("--part", help="enterprises, demand, mentoring or gateway (the webhook consumer).")
]


def _part(part: str) -> str:
    if part not in PARTS:
        raise GatewayError(f"--part must be one of {', '.join(PARTS)}, not {part!r}")
    return part


@dead_letters_app.command("list")
def dead_letters_list(
    ctx: typer.Context,
    part: PartOption,
    status: Annotated[str, typer.Option(help="waiting, replayed or all.")] = "waiting",
    consumer: Annotated[str | None, typer.Option(help="Only this durable consumer's.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List the dead letters of one part, with the error that sent each one there."""
    opts = options(ctx)
    params: dict[str, Any] = {"status": status}
    if consumer:
        params["consumer"] = consumer
    with opts.gateway() as gw:
        items = list(gw.pages(f"{API}/admin/{_part(part)}/dead-letters", params))
    emit(opts, as_json, {"items": items}, render.dead_letters_table(part, items))


@dead_letters_app.command("replay")
def dead_letters_replay(
    ctx: typer.Context,
    part: PartOption,
    dead_letter_id: Annotated[int, typer.Argument(help="The dead letter's id (from `list`).")],
    as_json: JsonOption = False,
) -> None:
    """Hand a dead letter to its consumer again (its inbox makes a second application harmless)."""
    opts = options(ctx)
    with opts.gateway() as gw:
        done = gw.post(f"{API}/admin/{_part(part)}/dead-letters/{dead_letter_id}/replay")
    if opts.json or as_json:
        emit(opts, as_json, done)
        return
    out.print(f"dead letter {done['id']}: {done['outcome']}")


def main() -> None:
    try:
        app(prog_name="seedbed")
    except GatewayError as exc:
        err.print(f"Error: {exc.message}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["app", "main"]
