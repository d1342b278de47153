"""Tasks defined in a script run as ``__main__`` get the name a worker imports them by."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import aqueue


def _define_in_main(app: aqueue.App) -> aqueue.Task[Any, Any]:
    def count(text: str) -> int:
        return len(text)

    count.__module__ = "__main__"
    return app.task(count)


def test_a_script_run_by_path_is_named_by_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = types.ModuleType("__main__")
    main.__file__ = str(tmp_path / "web_app.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.syspath_prepend(str(tmp_path))
    task = _define_in_main(aqueue.App())
    assert task.name == "web_app._define_in_main.<locals>.count"


def test_a_module_run_with_dash_m_is_named_by_its_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = importlib.machinery.ModuleSpec("shop.tasks", None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    task = _define_in_main(aqueue.App())
    assert task.name.startswith("shop.tasks.")


def test_an_unfindable_main_warns_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    with pytest.warns(UserWarning, match=r"no worker knows.*@app.task\(name=\.\.\.\)"):
        task = _define_in_main(aqueue.App())
    assert task.name.startswith("__main__.")
