"""What ``aqueue worker`` loads at start-up: only what a worker needs.

Every module imported costs start-up time and resident memory in every
worker process, so the command line loads a command's heavy parts (the web
dashboard, the demo's throwaway Redis) only when that command runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

from aqueue.cli import dashboard as dashboard_command
from aqueue.dashboard import auth


def test_the_dashboard_command_names_the_dashboards_own_variable() -> None:
    assert dashboard_command.AUTH_ENV == auth.AUTH_ENV


def test_building_the_worker_command_loads_no_dashboard_and_no_test_kit() -> None:
    probe = (
        "import json, sys\n"
        "from aqueue.cli import build_parser\n"
        "args = build_parser().parse_args(['worker', 'x:app'])\n"
        "assert args.func.__module__ == 'aqueue.cli.worker'\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('aqueue'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "aqueue.cli.worker" in loaded
    assert "aqueue.runtime.worker" in loaded
    heavy = {m for m in loaded if m.startswith(("aqueue.dashboard", "aqueue.testing"))}
    assert heavy == set()
