"""Mistakes a new user makes get one clear line from the CLI, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import free_port, redis_server, worker_env
from .ops_support import APPS, cli


def _base(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0]


def test_a_database_number_the_server_does_not_have(redis_url: str, prefix: str) -> None:
    wrong = _base(redis_url) + "/99"
    for args in (["inspect", "--url", wrong], ["worker", "basic:app", "--url", wrong]):
        done = cli(redis_url, prefix, *args, timeout=30)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "no database of the number in the URL" in done.stderr
        assert "below the server's `databases` setting" in done.stderr


def test_inspect_json_into_a_pipe_closed_early(redis_url: str, prefix: str) -> None:
    # `true` exits without reading: every write of inspect meets a closed pipe.
    command = f"{sys.executable} -m aqueue inspect basic:app --json | true"
    done = subprocess.run(
        command,
        shell=True,
        cwd=str(APPS),
        env=worker_env(redis_url, prefix),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr


def test_a_url_that_points_at_a_replica(redis_url: str, prefix: str) -> None:
    host, port = _base(redis_url).removeprefix("redis://").split(":")
    with redis_server("--replicaof", host, port) as replica:
        done = cli(
            replica.url, prefix, "enqueue", "basic:app", "basic.add", "--args", "[1, 2]",
            "--url", replica.url,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "read-only replica" in done.stderr


def test_a_typo_in_the_app_name_suggests_the_closest(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "shop.py").write_text("import aqueue\n\napp = aqueue.App()\n")
    done = cli(redis_url, prefix, "worker", "shop:ap", cwd=tmp_path, timeout=30)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "module 'shop' has no attribute 'ap'; did you mean 'app'?" in done.stderr


def test_a_task_module_whose_own_import_fails_shows_the_real_error(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "shop.py").write_text("import aqueue\nimport requestsz\n\napp = aqueue.App()\n")
    done = cli(redis_url, prefix, "worker", "shop:app", cwd=tmp_path, timeout=30)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "importing 'shop' failed at " in done.stderr
    assert "shop.py:2 (import requestsz)" in done.stderr
    assert "No module named 'requestsz'" in done.stderr
    assert "Run from the directory" not in done.stderr
    # A module that is really missing still says where to run from.
    missing = cli(redis_url, prefix, "worker", "nowhere:app", cwd=tmp_path, timeout=30)
    assert "Run from the directory that contains it" in missing.stderr


def test_help_shows_no_restructuredtext_markup() -> None:
    commands = [["multi"], ["demo"], ["inspect"], ["worker"], ["dead", "list"], ["beat"]]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "aqueue", *command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        text = done.stdout
        assert "``" not in text and ":class:" not in text and ":mod:" not in text, command
        assert "\n::\n" not in text, command


def test_redis_not_running_says_so_in_one_line(redis_url: str, prefix: str) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    done = cli(redis_url, prefix, "inspect", "--url", closed, timeout=30)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and closed in lines[0], done.stderr
    assert ".." not in lines[0]
    assert "--url" in lines[0]
