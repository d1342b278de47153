"""A task's place in line: its priority and its deployment-wide limits.

``@app.task(priority=5, rate_limit="100/s", concurrency=(5, "tenant:{tenant_id}"))``
is read here once, when the task is registered, so a malformed rate or a key
template naming a parameter the task does not have is a :class:`ConfigError`
at import time, not a surprise on a worker. Each message then carries its
limits packed for the Redis scripts that enforce them (``lua/_flow.lua``):
a concurrency limit and its key, a rate (starts per period) and its key, the
keys formatted from the call's own arguments.
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import ConfigError, EnqueueError, did_you_mean

__all__ = [
    "MAX_PRIORITY",
    "ConcurrencyLimit",
    "ConcurrencySpec",
    "FlowLimits",
    "RateLimit",
    "RateSpec",
    "check_priority",
]

#: Priorities run from 0 (the default) to 9, the most urgent.
MAX_PRIORITY = 9

#: What ``rate_limit=`` takes: ``"100/s"`` or ``("20/s", "tenant:{tenant_id}")``.
RateSpec = str | tuple[str, str]
#: What ``concurrency=`` takes: ``5`` or ``(5, "tenant:{tenant_id}")``.
ConcurrencySpec = int | tuple[int, str]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PERIOD_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}
_pack = msgspec.msgpack.Encoder().encode


def check_priority(value: object, where: str) -> int:
    """``value`` as a priority, or a :class:`ConfigError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise ConfigError(
            f"{where}: priority must be an integer from 0 to {MAX_PRIORITY} "
            f"({MAX_PRIORITY} the most urgent), got {value!r}"
        )
    return value


class _KeyTemplate(msgspec.Struct, frozen=True):
    """A limit's key: fixed, or formatted from named arguments of the call."""

    template: str
    fields: tuple[str, ...]

    def format(self, arguments: Mapping[str, Any]) -> str:
        if not self.fields:
            return self.template
        return self.template.format_map(arguments)


def _template(template: object, task: str, option: str, params: Mapping[str, Any]) -> _KeyTemplate:
    if not isinstance(template, str) or not template:
        raise ConfigError(f"task {task}: {option}'s key must be a non-empty string")
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"task {task}: {option} key {template!r} is malformed: {exc}") from None
    for _text, field, _spec, _conv in parsed:
        if field is None:
            continue
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not name or name not in params:
            raise ConfigError(
                f"task {task}: {option} key {template!r} names {{{field}}}, which is not a "
                f"parameter of the task{did_you_mean(name, params)}"
            )
        fields.append(name)
    return _KeyTemplate(template, tuple(fields))


class RateLimit(msgspec.Struct, frozen=True):
    """At most ``count`` starts per ``period_ms`` across the deployment, per key."""

    count: int
    period_ms: int
    key: _KeyTemplate

    @property
    def interval_ms(self) -> float:
        return self.period_ms / self.count


class ConcurrencyLimit(msgspec.Struct, frozen=True):
    """At most ``limit`` running at once across the deployment, per key."""

    limit: int
    key: _KeyTemplate


def _rate(spec: object, task: str, params: Mapping[str, Any]) -> RateLimit:
    text, template = spec if isinstance(spec, tuple) and len(spec) == 2 else (spec, None)
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) <= 0:
        raise ConfigError(
            f"task {task}: rate_limit must look like '100/s', '20/m' or '5/h' (a positive "
            f"count per second, minute or hour), optionally with a key template as in "
            f"('20/s', 'tenant:{{tenant_id}}'); got {spec!r}"
        )
    key = _template(template, task, "rate_limit", params) if template is not None else None
    return RateLimit(
        int(match.group(1)),
        _PERIOD_MS[match.group(2)[0]],
        key or _KeyTemplate(f"task:{task}", ()),
    )


def _concurrency(spec: object, task: str, params: Mapping[str, Any]) -> ConcurrencyLimit:
    limit, template = spec if isinstance(spec, tuple) and len(spec) == 2 else (spec, None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ConfigError(
            f"task {task}: concurrency must be a positive integer or (limit, key template) "
            f"as in (5, 'tenant:{{tenant_id}}'); got {spec!r}"
        )
    key = _template(template, task, "concurrency", params) if template is not None else None
    return ConcurrencyLimit(limit, key or _KeyTemplate(f"task:{task}", ()))


class FlowLimits:
    """A task's rate and concurrency limits, packed per message for the scripts."""

    __slots__ = ("_fixed", "_signature", "concurrency", "rate")

    def __init__(
        self,
        task: str,
        signature: inspect.Signature,
        rate_limit: RateSpec | None,
        concurrency: ConcurrencySpec | None,
    ) -> None:
        params = signature.parameters
        self.rate = _rate(rate_limit, task, params) if rate_limit is not None else None
        self.concurrency = (
            _concurrency(concurrency, task, params) if concurrency is not None else None
        )
        self._signature = signature
        keyed = any(lim is not None and lim.key.fields for lim in (self.rate, self.concurrency))
        #: The packed limits when no key depends on the arguments.
        self._fixed = None if keyed else self._pack({})

    @classmethod
    def of(
        cls,
        task: str,
        signature: inspect.Signature,
        rate_limit: RateSpec | None,
        concurrency: ConcurrencySpec | None,
    ) -> FlowLimits | None:
        """The task's limits, or None when it has none (its messages carry nothing)."""
        if rate_limit is None and concurrency is None:
            return None
        return cls(task, signature, rate_limit, concurrency)

    def _pack(self, arguments: Mapping[str, Any]) -> bytes:
        conc, rate = self.concurrency, self.rate
        return _pack(
            (
                conc.limit if conc else 0,
                conc.key.format(arguments) if conc else "",
                rate.count if rate else 0,
                rate.period_ms if rate else 0,
                rate.key.format(arguments) if rate else "",
            )
        )

    def pack(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
        """The limits of one call, keys formatted from its arguments."""
        if self._fixed is not None:
            return self._fixed
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise EnqueueError(f"arguments don't fit the task's limit keys: {exc}") from None
        bound.apply_defaults()
        try:
            return self._pack(bound.arguments)
        except (KeyError, AttributeError, IndexError, ValueError, TypeError) as exc:
            raise EnqueueError(
                f"a limit key could not be formatted from the arguments: {exc}"
            ) from None
