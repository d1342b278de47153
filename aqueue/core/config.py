"""App configuration: explicit, validated at construction, secrets masked.

Settings come from keyword options, ``AQUEUE_*`` environment variables or a
settings object (Django settings, a module, a mapping:
``app.config_from_object("django.conf:settings", namespace="AQUEUE")``). An
unknown name is rejected with the closest valid one, so a typo is never
silently ignored.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import types
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, did_you_mean
from .urls import mask_url, parse_redis_url

__all__ = [
    "DEFAULT_REDIS_URL",
    "MAX_RESULT_BYTES_LIMIT",
    "Settings",
    "options_from_object",
]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: Highest ``max_result_bytes``: Redis refuses a request argument over 512 MB,
#: and an outcome travels with its message and error in one script call.
MAX_RESULT_BYTES_LIMIT = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything an :class:`~aqueue.App` can be configured with.

    Durations are seconds (floats).
    """

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = "aqueue"
    """Key prefix, so several apps can share one Redis database."""
    default_queue: str = "default"
    result_ttl: float = 86400.0
    """How long a finished task's record (result or error) is kept."""
    visibility_timeout: float = 60.0
    """How long a delivery stays leased to a worker without renewal."""
    heartbeat_interval: float = 1.0
    """How often a worker renews its heartbeat and its running leases."""
    dead_worker_after: float = 5.0
    """Missing heartbeats for this long: the worker is dead and its work is
    reclaimed at once (capped by the visibility timeout)."""
    max_deliveries: int = 5
    """Deliveries without a recorded outcome before a message is dead-lettered."""
    max_payload_bytes: int = 1024 * 1024
    dead_letter_maxlen: int = 100_000
    dead_letter_on_failure: bool = False
    """Also dead-letter tasks that failed for good (retries exhausted)."""
    signing_key: str | None = None
    """Shared secret: messages are signed with HMAC-SHA256 and unsigned or
    wrongly signed ones are dead-lettered by workers."""
    connect_timeout: float = 5.0
    """How long enqueue() waits for Redis before raising ConnectionFailed."""
    result_poll_interval: float = 5.0
    """First fallback poll while awaiting a result, backing off to 8x; pushes
    normally arrive first, and every waiter is re-read after a reconnect."""
    replicas_ack: int = 0
    """Durable mode: every enqueue and every recorded outcome waits (``WAIT``)
    until this many replicas have it, and is not acknowledged otherwise
    (the producer gets ConnectionFailed; a worker records it again later)."""
    sentinel_password: str | None = None
    """Password of the Sentinel processes themselves (``redis+sentinel://``
    URLs); the URL's own password is the data nodes'."""
    max_result_bytes: int = 16 * 1024 * 1024
    """Largest encoded return value a task may store (bytes). A larger value
    fails the task with ``ResultTooLarge`` instead of being stored; at most
    ``MAX_RESULT_BYTES_LIMIT`` (Redis refuses larger requests)."""
    max_connections: int = 200
    """Most connections one event loop's client opens for commands and scripts
    (plus one for result pushes): many concurrent ``enqueue()``, ``abort()``
    or ``get()`` calls wait their turn instead of opening one each."""
    events: bool = False
    """Publish every state change as an event (``app.events()``, ``aqueue
    events``) to a capped stream, written by the scripts that make the change."""
    events_maxlen: int = 10_000
    """About how many entries the event stream keeps (the oldest are dropped).
    An entry holds the events of one script call, 1 to 100: one enqueue, or a
    worker's batch of starts or outcomes."""

    def __post_init__(self) -> None:
        positive = (
            "result_ttl",
            "visibility_timeout",
            "heartbeat_interval",
            "dead_worker_after",
            "connect_timeout",
            "result_poll_interval",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in (
            "max_deliveries",
            "max_payload_bytes",
            "dead_letter_maxlen",
            "max_result_bytes",
            "max_connections",
            "events_maxlen",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_result_bytes > MAX_RESULT_BYTES_LIMIT:
            raise ConfigError(
                f"max_result_bytes must be at most {MAX_RESULT_BYTES_LIMIT:,} (256 MiB), got "
                f"{self.max_result_bytes:,}: store large results elsewhere and return a reference"
            )
        if not isinstance(self.replicas_ack, int) or self.replicas_ack < 0:
            raise ConfigError(
                f"replicas_ack must be 0 (off) or the number of replicas, got {self.replicas_ack!r}"
            )
        if self.heartbeat_interval * 2 > self.visibility_timeout:
            raise ConfigError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be at most half of "
                f"visibility_timeout ({self.visibility_timeout}s) so leases are renewed in time"
            )
        for name in ("prefix", "default_queue"):
            value = getattr(self, name)
            if not value or any(c in value for c in "{}: \n"):
                raise ConfigError(f"{name} must be non-empty without braces, colons or spaces")
        parse_redis_url(self.redis_url)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """Build settings from keyword options, rejecting unknown names."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key not in known:
                raise ConfigError(f"unknown option {key!r}{did_you_mean(key, known)}")
        return cls(**options)

    def replace(self, **options: Any) -> Settings:
        """A copy with ``options`` changed (validated like the constructor's)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(options)
        return Settings.from_options(values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Options found in ``AQUEUE_*`` environment variables."""
        env = os.environ if environ is None else environ
        found: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"AQUEUE_{field.name.upper()}")
            if raw is None:
                continue
            found[field.name] = _parse(field.name, field.type, raw)
        return found

    def __repr__(self) -> str:
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "redis_url":
                value = mask_url(value)
            elif field.name in ("signing_key", "sentinel_password") and value is not None:
                value = "***"
            parts.append(f"{field.name}={value!r}")
        return f"Settings({', '.join(parts)})"


def _parse(name: str, annotation: Any, raw: str) -> Any:
    text = str(annotation)
    try:
        if text.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"AQUEUE_{name.upper()}={raw!r} is not a valid {text}") from None
    return raw


def _resolve(source: object) -> object:
    """``"pkg.module:attr"``, ``"pkg.module.attr"`` or ``"pkg.module"`` to the object."""
    if not isinstance(source, str):
        return source
    module_name, sep, attr = source.partition(":")
    if not sep:
        try:
            return _import(source)
        except ModuleNotFoundError as exc:
            if "." not in source or exc.name != source:
                raise ConfigError(f"can't import {source!r} for configuration: {exc}") from None
            module_name, _, attr = source.rpartition(".")
    try:
        module = _import(module_name)
    except ImportError as exc:
        raise ConfigError(f"can't import {module_name!r} for configuration: {exc}") from exc
    try:
        return getattr(module, attr) if attr else module
    except AttributeError:
        raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None


def _import(module_name: str) -> types.ModuleType:
    """Import a settings module; its own errors become a ConfigError saying so."""
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"importing {module_name!r} for configuration failed: {type(exc).__name__}: {exc}"
        ) from exc


def _items(obj: object) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items()}
    names = dir(obj)
    return {n: getattr(obj, n) for n in names if not n.startswith("_")}


def options_from_object(source: object, namespace: str | None = None) -> dict[str, Any]:
    """The App options found in ``source``, validated by name.

    With ``namespace="AQUEUE"`` only names starting ``AQUEUE_`` are read, and
    the rest of the name is the option in any case (``AQUEUE_PREFIX`` ->
    ``prefix``). Without a namespace, ``AQUEUE_*`` names are read the same way
    when there are any; else a mapping's keys are option names, and an
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
                raise ConfigError(f"unknown aqueue setting {name!r}{did_you_mean(name, spelled)}")
            found[option] = value
        return found
    items = _items(obj)
    if any(name.upper().startswith("AQUEUE_") for name in items):
        # AQUEUE_* names can only be meant for aqueue: read them as such.
        return options_from_object(obj, "AQUEUE")
    if not isinstance(obj, Mapping):
        items = {k: v for k, v in items.items() if k.islower() and not callable(v)}
        items = {k: v for k, v in items.items() if not _is_module(v)}
    for name, value in items.items():
        if name not in known:
            raise ConfigError(f"unknown aqueue setting {name!r}{did_you_mean(name, known)}")
        found[name] = value
    return found


def _is_module(value: object) -> bool:
    return isinstance(value, types.ModuleType)
