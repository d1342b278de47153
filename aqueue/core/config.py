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
from urllib.parse import parse_qsl, unquote, urlencode

from .errors import ConfigError, did_you_mean

__all__ = [
    "DEFAULT_REDIS_URL",
    "RedisTarget",
    "Settings",
    "mask_url",
    "options_from_object",
    "parse_redis_url",
]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"

_URL_FORMS = (
    "redis://[user:password@]host:port/db, rediss://..., unix:///path.sock, "
    "redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db] "
    "or redis+cluster://[user:password@]host:port[,host:port...]"
)


@dataclasses.dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL points at: one server, a Sentinel service or a Cluster.

    For ``standalone`` the URL itself is handed to the client as it is;
    ``hosts`` are the sentinels (``sentinel``) or the seed nodes (``cluster``).
    """

    kind: str
    """``"standalone"``, ``"sentinel"`` or ``"cluster"``."""
    hosts: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def describe(self) -> str:
        """The target without secrets, for banners and ``inspect``."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        if self.kind == "sentinel":
            return f"sentinel service {self.service_name!r} db {self.db} via {hosts}"
        if self.kind == "cluster":
            return f"cluster seeded by {hosts}"
        return "standalone"


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL, raising :class:`ConfigError` with the accepted forms."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"redis_url must be one of {_URL_FORMS}; got {url!r}")
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget("standalone", tls=scheme == "rediss")
    base, plus, kind = scheme.partition("+")
    if not plus or base not in ("redis", "rediss") or kind not in ("sentinel", "cluster"):
        raise ConfigError(f"redis_url must be one of {_URL_FORMS}; got {mask_url(url)!r}")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    default_port = 26379 if kind == "sentinel" else 6379
    hosts = tuple(_host_port(item, default_port, url) for item in hostlist.split(","))
    segments = [segment for segment in path.split("/") if segment]
    if kind == "cluster":
        if segments and segments != ["0"]:
            raise ConfigError(
                f"a Redis Cluster has only database 0; remove {'/' + '/'.join(segments)!r} "
                f"from {mask_url(url)!r}"
            )
        return RedisTarget("cluster", hosts, "", 0, username, password, base == "rediss")
    if not segments or len(segments) > 2:
        raise ConfigError(
            f"a Sentinel URL names the service after the hosts, e.g. "
            f"redis+sentinel://host:26379/mymaster[/0]; got {mask_url(url)!r}"
        )
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ConfigError(
                f"the database in {mask_url(url)!r} must be a number, got {segments[1]!r}"
            )
        db = int(segments[1])
    return RedisTarget(
        "sentinel", hosts, unquote(segments[0]), db, username, password, base == "rediss"
    )


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:6379
        host, _, port_text = item[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigError(f"a host is missing in {mask_url(url)!r} (host:port[,host:port...])")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{port_text!r} in {mask_url(url)!r} is not a port number")
    return host, int(port_text)


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
        for name in ("max_deliveries", "max_payload_bytes", "dead_letter_maxlen", "events_maxlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.replicas_ack, int) or self.replicas_ack < 0:
            raise ConfigError(
                f"replicas_ack must be 0 (off) or the number of replicas, got {self.replicas_ack!r}"
            )
        if self.replicas_ack and parse_redis_url(self.redis_url).kind == "cluster":
            raise ConfigError(
                "replicas_ack is not supported on Redis Cluster yet; use it with a standalone "
                "master or a redis+sentinel:// URL"
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


def mask_url(url: str) -> str:
    """The URL with every password replaced by ``***``: in the user part (also with
    several hosts), and in the query (``?password=...``, which Redis clients accept too)."""
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_mark, fragment = query.partition("#")
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_is_secret(key) for key, _ in pairs):
            masked = [(key, "***" if _is_secret(key) else value) for key, value in pairs]
            query = urlencode(masked, safe="*")
        tail = f"{path}?{query}{hash_mark}{fragment}"
    return f"{scheme}://{netloc}{tail}"


def _is_secret(key: str) -> bool:
    key = key.lower()
    return "password" in key or key in ("pass", "passwd", "secret", "token")


# -- reading options from a settings object --------------------------------------


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
