"""``App.config_from_object`` says clearly what went wrong, and never silently reads nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import aqueue


def test_a_missing_settings_module_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(aqueue.ConfigError, match="can't import 'no_such_settings'"):
        aqueue.App().config_from_object("no_such_settings")


def test_a_settings_module_that_raises_on_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_settings.py").write_text("raise RuntimeError('no database URL')\n")
    (tmp_path / "needy_settings.py").write_text("import not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(aqueue.ConfigError, match="RuntimeError: no database URL"):
        aqueue.App().config_from_object("broken_settings")
    with pytest.raises(aqueue.ConfigError, match="not_installed_pkg"):
        aqueue.App().config_from_object("needy_settings")
    for name in ("broken_settings", "needy_settings"):
        sys.modules.pop(name, None)


def test_aqueue_names_are_read_without_a_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "web_settings.py").write_text(
        "DEBUG = True\nAQUEUE_PREFIX = 'fromfile'\nAQUEUE_RESULT_TTL = 30\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = aqueue.App()
    app.config_from_object("web_settings")
    assert app.settings.prefix == "fromfile"
    assert app.settings.result_ttl == 30
    sys.modules.pop("web_settings", None)
