"""Lint, format and strict typing of the package, run as part of the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_check() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    proc = _run(ruff, "check", "aqueue", "tests", "examples", "benchmarks")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run(ruff, "format", "--check", "aqueue", "tests", "examples", "benchmarks")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_on_the_package() -> None:
    pytest.importorskip("mypy")
    proc = _run(sys.executable, "-m", "mypy", "--strict", "aqueue")
    assert proc.returncode == 0, proc.stdout + proc.stderr
