"""Django: find the ``tasks.py`` of every installed app.

::

    # proj/aqueue_app.py
    import aqueue

    app = aqueue.App()
    app.config_from_object("django.conf:settings", namespace="AQUEUE")
    app.autodiscover_tasks()

Run workers with ``DJANGO_SETTINGS_MODULE=proj.settings aqueue worker
proj.aqueue_app:app``. When the app registry is not ready yet (a worker
process), ``django.setup()`` is called first, since tasks usually use the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..discovery import autodiscover_tasks as _import_task_modules
from ..discovery import installed_packages

if TYPE_CHECKING:
    from ..app import App

__all__ = ["autodiscover_tasks", "installed_packages"]


def autodiscover_tasks(
    app: App, packages: Iterable[str] | None = None, related_name: str = "tasks"
) -> list[str]:
    """Import ``<package>.<related_name>`` for each package that has one (``app``'s tasks
    register themselves as they are imported). Returns the modules imported."""
    return _import_task_modules(packages, related_name)
