"""A first parameter annotated ``aqueue.Context`` is not part of the enqueue signature."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_drops_the_context_parameter() -> None:
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--warn-unused-ignores",
            # Errors inside aqueue itself are `mypy --strict aqueue`'s business.
            "--follow-imports=silent",
            "tests/typing/check_context.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
