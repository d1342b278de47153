"""The Lua scripts, read from ``lua/`` beside this module.

Each script is ``_common.lua`` (the helpers every script shares: ``now_ms``,
entry fields, unique-key release, the enqueue routine) followed by its own
file, so a helper is written once and a script is one ``EVALSHA``.
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
    "progress",
)


@functools.cache
def script_source(name: str) -> str:
    """The full source of one script: the shared helpers, then the script."""
    lua = importlib.resources.files(__package__).joinpath("lua")
    return lua.joinpath("_common.lua").read_text() + lua.joinpath(f"{name}.lua").read_text()
