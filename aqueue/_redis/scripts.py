"""The Lua scripts, read from ``lua/`` beside this module.

Each script is ``_common.lua`` (the helpers every script shares: ``now_ms``,
entry fields, unique-key release, the enqueue routine), then for the
scripts that need it ``_flow.lua`` (priorities, rate and concurrency limits),
followed by its own file, so a helper is written once and a script is one
``EVALSHA``.

A broker given a test clock (:mod:`aqueue.testing`) loads a second variant
of each script, :func:`clocked_source`: ``_clock.lua`` slipped in after the
helpers takes "now" from the caller's last argument. Production scripts are
never built with it, so they can only read Redis' ``TIME``.
"""

from __future__ import annotations

import functools
import importlib.resources

__all__ = ["SCRIPT_NAMES", "clocked_source", "script_source"]

#: Every script the broker registers, one per state change.
SCRIPT_NAMES = (
    "enqueue",
    "fetch",
    "start",
    "finish",
    "renew",
    "reclaim",
    "promote",
    "abort",
    "leave",
    "purge",
    "replay",
    "tick",
    "forward",
    "chord",
    "chunk",
    "unique",
    "tick_advance",
    "thread",
    "progress",
)

#: The scripts that use flow control's helpers (the others don't pay for
#: defining them on every call).
_FLOW = frozenset({"enqueue", "fetch", "start", "finish", "renew", "promote", "leave", "purge"})


@functools.cache
def script_source(name: str) -> str:
    """The full source of one script: the shared helpers, then the script."""
    lua = importlib.resources.files(__package__).joinpath("lua")
    return "".join(lua.joinpath(part).read_text() for part in _parts(name))


@functools.cache
def clocked_source(name: str) -> str:
    """The test-clock variant of a script: "now" (ms) is its caller's last argument."""
    lua = importlib.resources.files(__package__).joinpath("lua")
    common, *rest = _parts(name)
    return "".join(lua.joinpath(part).read_text() for part in (common, "_clock.lua", *rest))


def _parts(name: str) -> tuple[str, ...]:
    """The files one script is made of, in order."""
    if name in _FLOW:
        return ("_common.lua", "_flow.lua", f"{name}.lua")
    return ("_common.lua", f"{name}.lua")
