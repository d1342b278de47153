"""What ``aqueue worker`` loads at start-up: only what a worker needs.

Every module imported costs start-up time and resident memory in every
worker process, so the command line loads a command's heavy parts (the web
dashboard, the demo's throwaway Redis) only when that command runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aqueue.cli import COMMAND_GROUPS, build_parser
from aqueue.cli import dashboard as dashboard_command
from aqueue.dashboard import auth


def test_the_dashboard_command_names_the_dashboards_own_variable() -> None:
    assert dashboard_command.AUTH_ENV == auth.AUTH_ENV


def _modules_after(probe: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``probe``."""
    probe += "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout))


def test_building_the_worker_command_loads_only_what_a_worker_uses() -> None:
    loaded = _modules_after(
        "from aqueue.cli import build_parser\n"
        "argv = ['worker', 'x:app']\n"
        "args = build_parser(argv).parse_args(argv)\n"
        "assert args.func.__module__ == 'aqueue.cli.worker'\n"
    )
    assert "aqueue.cli.worker" in loaded
    assert "aqueue.runtime.worker" in loaded
    unused = {
        m
        for m in loaded
        if m.startswith(("aqueue.dashboard", "aqueue.testing", "aqueue.integrations"))
        or (
            m.startswith("aqueue.cli.")
            and m not in {"aqueue.cli.base", "aqueue.cli.worker", "aqueue.cli.pidfiles"}
        )
    }
    assert unused == set()
    for module in ("aqueue.groups", "aqueue.periodic", "aqueue.schedules", "aqueue.deadletter"):
        assert module not in loaded
    # Loaded on first use: workflows, delay(), executor="process" tasks, events.
    for module in (
        "aqueue.canvas",
        "aqueue.sync",
        "aqueue.runtime.processes",
        "aqueue.core.events",
    ):
        assert module not in loaded
    for module in ("difflib", "statistics", "zoneinfo"):  # stdlib a worker never uses
        assert module not in loaded


def test_what_a_worker_loads_on_first_use_works_the_first_time() -> None:
    loaded = _modules_after(
        "import sys\n"
        "import aqueue.runtime.worker\n"
        "import aqueue\n"
        "app = aqueue.App()\n"
        "@app.task\n"
        "async def add(a: int, b: int) -> int:\n"
        "    return a + b\n"
        "before = set(sys.modules)\n"
        "assert 'aqueue.canvas' not in before and 'aqueue.sync' not in before\n"
        "assert type(add.s(1, 2)).__name__ == 'Signature'\n"
        "with app.eager():\n"
        "    assert add.delay(2, 3).get(timeout=5) == 5\n"
    )
    assert {"aqueue.canvas", "aqueue.sync"} <= loaded


def test_import_aqueue_loads_neither_redis_nor_the_runtime() -> None:
    """A web app that only enqueues never loads the worker runtime; names load on first use."""
    loaded = _modules_after("import aqueue\n")
    assert not {m for m in loaded if m.startswith(("redis", "aqueue.runtime", "aqueue.app"))}
    loaded = _modules_after("import aqueue\naqueue.group\n")
    assert "aqueue.groups" in loaded
    assert not {m for m in loaded if m.startswith("aqueue.runtime")}


def test_each_command_group_adds_the_commands_it_is_listed_with() -> None:
    everything = build_parser()
    (sub,) = (a for a in everything._actions if a.dest == "command")
    listed = [c for commands in COMMAND_GROUPS.values() for c in commands]
    assert sorted(sub.choices) == sorted(listed)
    for group, commands in COMMAND_GROUPS.items():
        for command in commands:
            only = build_parser([command])
            (one,) = (a for a in only._actions if a.dest == "command")
            assert sorted(one.choices) == sorted(commands), group


@pytest.mark.parametrize("argv", [[], ["--version"], ["wrker"], ["-h"]])
def test_a_command_line_naming_no_command_gets_every_group(argv: list[str]) -> None:
    (sub,) = (a for a in build_parser(argv)._actions if a.dest == "command")
    assert "dashboard" in sub.choices
    assert "worker" in sub.choices


def test_the_command_keeps_its_start_up_out_of_collections_and_collects_again() -> None:
    probe = (
        "import gc, sys\n"
        "from aqueue.cli import main\n"
        "sys.argv = ['aqueue', 'worker', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 1000, file=sys.stderr)\n"
        "gc.unfreeze()\n"
        "try:\n"
        "    main(['worker', '--help'])  # a program calling main() keeps its own heap as it is\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.isenabled(), gc.get_freeze_count(), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.split() == ["True", "True", "True", "0"]


def test_the_scheduler_of_a_worker_without_schedules_loads_no_time_zones() -> None:
    # Every worker not in burst mode runs it (schedules may be added in Redis later).
    loaded = _modules_after(
        "from aqueue.periodic import Scheduler\nfrom aqueue.schedules import StoredScheduleSource\n"
    )
    assert "zoneinfo" not in loaded
    loaded = _modules_after(
        "import aqueue\n"
        "app = aqueue.App()\n"
        "@app.periodic(every=60)\n"
        "async def tick() -> None: ...\n"
    )
    assert "zoneinfo" in loaded  # a declared schedule checks its time zone
