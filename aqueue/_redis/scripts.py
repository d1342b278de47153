"""The Lua scripts, read from ``lua/`` beside this module.

Each script is the shared helpers it uses, then its own file, so a helper is
written once and a script is one ``EVALSHA``. The helpers live in
``_common.lua`` (``now_ms``, entry fields, unique-key release, the enqueue
routine, ...) and ``_flow.lua`` (priorities, rate and concurrency limits).
Redis runs a script's whole text on every call, and each ``local function``
there builds a closure each time, so a script carries only the helpers it
names, directly or through another helper (:func:`_helpers_for`): a lone
``enqueue()`` used to define some forty helpers to call four of them. So a
helper file holds only top-level ``local`` definitions, each starting at
column 0 with its comment right above it; anything else at the top level
travels with the definition before it (and is left out with it).

A broker given a test clock (:mod:`aqueue.testing`) loads a second variant
of each script, :func:`clocked_source`: ``_clock.lua`` slipped in after the
helpers takes "now" from the caller's last argument. Production scripts are
never built with it, so they can only read Redis' ``TIME``.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

__all__ = ["SCRIPT_NAMES", "RegisteredScripts", "ScriptSources", "clocked_source", "script_source"]

#: Every script the broker registers, one per state change.
SCRIPT_NAMES = (
    "enqueue",
    "enqueue_lone",
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

#: The helper files, in the order their definitions run (a helper may use
#: the ones before it).
_HELPER_FILES = ("_common.lua", "_flow.lua")

#: A top-level definition: ``local function name(`` or ``local a, b = ...``.
_DEFINITION = re.compile(r"local\s+(?:function\s+([A-Za-z_]\w*)|([A-Za-z_][\w\s,]*?)\s*=)")
_WORD = re.compile(r"[A-Za-z_]\w*")


#: Where the scripts are when the package is installed as files (as a wheel installs it).
_LUA = os.path.join(os.path.dirname(__file__), "lua")


def _read(part: str) -> str:
    try:
        with open(os.path.join(_LUA, part), encoding="utf-8") as file:
            return file.read()
    except OSError:  # a package not installed as files (in a zip): through its loader
        import importlib.resources

        return importlib.resources.files(__package__).joinpath("lua", part).read_text()


@functools.cache
def script_source(name: str) -> str:
    """The full source of one script: the helpers it uses, then the script."""
    own = _read(f"{name}.lua")
    return _helpers_for(own) + own


@functools.cache
def clocked_source(name: str) -> str:
    """The test-clock variant of a script: "now" (ms) is its caller's last argument."""
    own, clock = _read(f"{name}.lua"), _read("_clock.lua")
    return _helpers_for(clock + own) + clock + own


class ScriptSources(dict[str, str]):
    """Each script's source, composed when it is first used.

    A worker process calls a handful of the scripts (fetch, finish, renew,
    reclaim, promote, ...); composing all of them when a broker is made cost a
    worker about 1 MiB of resident memory and 15 ms of its start-up for scripts
    it never runs (enqueue, purge, replay, tick, unique, ...).
    """

    def __missing__(self, name: str) -> str:
        if name not in SCRIPT_NAMES:
            raise KeyError(name)
        source = self[name] = script_source(name)
        return source


class RegisteredScripts(dict[str, "AsyncScript"]):
    """Each script registered with ``client`` (its SHA1 computed) when first used."""

    def __init__(self, client: aioredis.Redis, sources: ScriptSources) -> None:
        super().__init__()
        self._client = client
        self._sources = sources

    def __missing__(self, name: str) -> AsyncScript:
        script = self[name] = self._client.register_script(self._sources[name])
        return script


class _Block:
    """One top-level definition of a helper file, with the comments above it."""

    __slots__ = ("defines", "text", "uses", "words")

    def __init__(self, text: str) -> None:
        self.text = text
        names = ""
        for line in text.splitlines():
            match = _DEFINITION.match(line)
            if match is not None:
                names = match.group(1) or match.group(2)
                break
        self.defines = frozenset(n.strip() for n in names.split(",") if n.strip())
        #: Every word of the block, comments included: a name a comment mentions
        #: pulls in a helper that is not needed, never leaves out one that is.
        self.words = frozenset(_WORD.findall(text))
        #: The blocks (by index) defining a name this block mentions.
        self.uses: tuple[int, ...] = ()


@functools.cache
def _blocks() -> tuple[_Block, ...]:
    """The helper files cut into top-level definitions, in file order.

    A block starts with the comment lines right above a line that opens with
    ``local`` at column 0 and runs up to the next such comment or line;
    anything else at column 0 (``end``, a table's closing brace) stays with the
    block it closes.
    """
    blocks: list[_Block] = []
    for part in _HELPER_FILES:
        lines = _read(part).splitlines(keepends=True)
        starts: list[int] = []
        for i, line in enumerate(lines):
            if line.startswith("local "):
                start = i
                while start > 0 and lines[start - 1].startswith("--"):
                    start -= 1
                if not starts or start > starts[-1]:
                    starts.append(start)
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        starts.append(len(lines))
        for begin, end in itertools.pairwise(starts):
            blocks.append(_Block("".join(lines[begin:end])))
    # Only the words that name a helper matter to _helpers_for(): keeping every
    # word of every block (comments included) held some 300 KiB for the process' life.
    definers = _definers(blocks)
    for block in blocks:
        block.words &= definers.keys()
        block.uses = tuple(sorted({i for name in block.words for i in definers[name]}))
    return tuple(blocks)


def _definers(blocks: list[_Block]) -> dict[str, list[int]]:
    """Each helper name and the blocks (by index) that define it."""
    definers: dict[str, list[int]] = {}
    for i, block in enumerate(blocks):
        for name in block.defines:
            definers.setdefault(name, []).append(i)
    return definers


def _helpers_for(own: str) -> str:
    """The definitions ``own`` uses, directly or through each other, in file order.

    Blocks that define nothing (comments only) are left out; a block whose
    names another needed block (or ``own``) mentions is kept, and so are the
    blocks it mentions in turn.
    """
    blocks = _blocks()
    words = set(_WORD.findall(own))
    to_visit = [i for i, block in enumerate(blocks) if not block.defines.isdisjoint(words)]
    kept: set[int] = set()
    while to_visit:
        i = to_visit.pop()
        if i not in kept:
            kept.add(i)
            to_visit.extend(blocks[i].uses)
    return "".join(blocks[i].text for i in sorted(kept))
