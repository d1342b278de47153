"""The public API is typed end to end: mypy --strict agrees with assert_type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize(
    "target",
    [
        "tests/typing/check_api.py",
        "tests/typing/check_workflows.py",
        "tests/typing/check_streaming.py",
        "tests/typing/check_flow.py",
    ],
)
def test_mypy_strict_accepts_the_typed_api(target: str) -> None:
    pytest.importorskip("mypy")
    root = HERE.parent
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", target],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
