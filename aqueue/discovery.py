"""Finding task modules: import ``<package>.tasks`` of each package.

``app.autodiscover_tasks()`` with no packages asks Django for its installed
apps (``django.setup()`` first when the registry is not ready yet: a worker
process, whose tasks usually use the ORM). Django is imported only then.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from typing import Any

from .core.errors import ConfigError

__all__ = ["autodiscover_tasks", "installed_packages"]


def installed_packages() -> list[str]:
    """The packages of Django's installed apps (``django.setup()`` if needed)."""
    try:
        django: Any = importlib.import_module("django")
        apps: Any = importlib.import_module("django.apps").apps
    except ImportError as exc:
        raise ConfigError("autodiscover_tasks() without packages needs Django") from exc
    if not apps.ready:
        if apps.loading:
            raise ConfigError(
                "autodiscover_tasks() was called while Django was still loading its apps; "
                "call it after django.setup(), e.g. from AppConfig.ready()"
            )
        django.setup()
    return [config.name for config in apps.get_app_configs()]


def autodiscover_tasks(
    packages: Iterable[str] | None = None, related_name: str = "tasks"
) -> list[str]:
    """Import ``<package>.<related_name>`` for each package that has one.

    Returns the modules imported. An ImportError raised *inside* a tasks
    module is not swallowed.
    """
    imported = []
    for package in installed_packages() if packages is None else packages:
        name = f"{package}.{related_name}"
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(name)
            imported.append(name)
    return imported
