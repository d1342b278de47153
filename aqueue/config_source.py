"""Reading App options from a settings object: Django settings, a module, a mapping.

``app.config_from_object("django.conf:settings", namespace="AQUEUE")`` reads
every ``AQUEUE_*`` name (``AQUEUE_REDIS_URL``, ``AQUEUE_VISIBILITY_TIMEOUT``,
...). A name under the namespace that is not an option is rejected, with the
closest valid name in the same spelling, so a typo is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from .config import Settings
from .errors import ConfigError

__all__ = ["options_from_object"]


def _resolve(source: object) -> object:
    """``"pkg.module:attr"``, ``"pkg.module.attr"`` or ``"pkg.module"`` to the object."""
    if not isinstance(source, str):
        return source
    module_name, sep, attr = source.partition(":")
    if not sep:
        try:
            return importlib.import_module(source)
        except ImportError:
            module_name, _, attr = source.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"can't import {module_name!r} for configuration: {exc}") from exc
    try:
        return getattr(module, attr) if attr else module
    except AttributeError:
        raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None


def _items(obj: object) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items()}
    names = dir(obj)
    return {n: getattr(obj, n) for n in names if not n.startswith("_")}


def options_from_object(source: object, namespace: str | None = None) -> dict[str, Any]:
    """The App options found in ``source``, validated by name.

    With ``namespace="AQUEUE"`` only names starting ``AQUEUE_`` are read, and
    the rest of the name is the option in any case (``AQUEUE_PREFIX`` ->
    ``prefix``). Without a namespace, a mapping's keys are option names, and an
    object's public lower-case attributes are (upper-case ones, like other
    settings of a Django module, are left alone).
    """
    obj = _resolve(source)
    known = [f.name for f in dataclasses.fields(Settings)]
    found: dict[str, Any] = {}
    if namespace:
        head = namespace.rstrip("_") + "_"
        for name, value in _items(obj).items():
            if not name.upper().startswith(head.upper()):
                continue
            option = name[len(head) :].lower()
            if option not in known:
                spelled = [head + k.upper() if name.isupper() else head + k for k in known]
                close = difflib.get_close_matches(name, spelled, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown aqueue setting {name!r}{hint}")
            found[option] = value
        return found
    items = _items(obj)
    if not isinstance(obj, Mapping):
        items = {k: v for k, v in items.items() if k.islower() and not callable(v)}
        items = {k: v for k, v in items.items() if not _is_module(v)}
    for name, value in items.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown aqueue setting {name!r}{hint}")
        found[name] = value
    return found


def _is_module(value: object) -> bool:
    import types

    return isinstance(value, types.ModuleType)
