"""The Lua scripts, read from ``lua/`` beside this module.

Each script is ``_common.lua`` (the helpers every script shares: ``now_ms``,
entry fields, unique-key release, the enqueue routine), then for the
scripts that need it ``_flow.lua`` (priorities, rate and concurrency limits),
followed by its own file, so a helper is written once and a script is one
``EVALSHA``.
"""

from __future__ import annotations

import functools
import importlib.resources

__all__ = ["SCRIPT_NAMES", "script_source"]

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
)

#: The scripts that use flow control's helpers (the others don't pay for
#: defining them on every call).
_FLOW = frozenset({"enqueue", "fetch", "start", "finish", "renew", "promote", "leave", "purge"})


@functools.cache
def script_source(name: str) -> str:
    """The full source of one script: the shared helpers, then the script."""
    lua = importlib.resources.files(__package__).joinpath("lua")
    parts = (
        ("_common.lua", "_flow.lua", f"{name}.lua")
        if name in _FLOW
        else ("_common.lua", f"{name}.lua")
    )
    return "".join(lua.joinpath(part).read_text() for part in parts)
