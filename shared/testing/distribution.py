"""How pytest-xdist shares the tests out (``-n 2 --dist loadgroup``, set in pyproject.toml).

Each test goes to whichever worker is free (those marked ``slow`` first), except that the
tests sharing a module- or session-scoped fixture of a conftest or test module (a whole
running system, the events it published) go to one worker together: that fixture is then set
up once, not once per worker, and never torn down and set up again between its tests. Tests
marked ``xdist_group`` go together as well, as xdist documents.

The scheduler is xdist's ``loadgroup`` one, told the groups directly: xdist passes them from the
workers to the scheduler by appending ``@group`` to node ids, which has no effect from pytest 9.2
on (pytest-dev/pytest-xdist#1386), so every test was sent out on its own. Here each worker
writes the group of every test it collected to a file, before it reports its collection; the
scheduler reads that file once every worker has reported.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

GROUPS_DIR = "seedbed_groups_dir"
_groups_dir = pytest.StashKey[Path]()


def _shared_fixtures(item: pytest.Item) -> list[tuple[str, str]]:
    """The module- and session-scoped fixtures of this project's conftests and test modules
    that ``item`` uses (those of plugins, such as ``nats_server``, are cheap per worker)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    used = [(name, definitions[-1]) for name, definitions in info.name2fixturedefs.items() if definitions]
    return sorted((d.baseid, name) for name, d in used if d.scope != "function" and d.baseid)


def worker_groups(items: list[pytest.Item]) -> dict[str, str]:
    """The group of each test that must share a worker with others, by node id: tests linked,
    directly or through others, by a shared fixture are in one group."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    uses = {item.nodeid: _shared_fixtures(item) for item in items}
    for keys in uses.values():
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
    groups = {}
    for item in items:
        marked = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if marked:
            groups[item.nodeid] = "_".join(marked)
        elif keys := uses[item.nodeid]:
            baseid, name = root(keys[0])
            groups[item.nodeid] = f"{baseid}::{name}"
    return groups


# -- on the controller ------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is None and config.getoption("dist", "no") == "loadgroup":
        config.stash[_groups_dir] = Path(tempfile.mkdtemp(prefix="seedbed-xdist-groups-"))


def pytest_unconfigure(config: pytest.Config) -> None:
    if (directory := config.stash.get(_groups_dir, None)) is not None:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    if (directory := node.config.stash.get(_groups_dir, None)) is not None:
        node.workerinput[GROUPS_DIR] = str(directory)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if (directory := config.stash.get(_groups_dir, None)) is None:
        return None
    from xdist.scheduler import LoadGroupScheduling

    class Scheduling(LoadGroupScheduling):  # type: ignore[misc]  # xdist has no type information
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has reported its collection
                assert directory is not None
                files = sorted(directory.glob("*.json"))
                self.groups = json.loads(files[0].read_text()) if files else {}
            return self.groups.get(nodeid) or super()._split_scope(nodeid)

    return Scheduling(config, log)


# -- on a worker ------------------------------------------------------------------------------


@pytest.hookimpl(trylast=True)  # after deselection, and after xdist's own hook
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    directory = getattr(config, "workerinput", {}).get(GROUPS_DIR)
    if directory is None:
        return
    # Tests marked slow are sent out first (after the groups, the largest first): last, one of
    # them would keep a worker busy for seconds after the other one had run out of tests.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "worker")
    scratch = Path(directory) / f"{worker}.json.new"
    scratch.write_text(json.dumps(worker_groups(items)))
    scratch.replace(scratch.with_suffix(""))  # whole when the scheduler reads it
