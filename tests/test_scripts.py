"""The Lua scripts as loaded: each carries the helpers it uses, and only those.

A script that names a helper its composition left out would fail only when
that line runs (Redis refuses reads of undefined globals), so the check here is
static: every name a composed script reads without declaring it must be one of
the globals Redis gives scripts. And every composition must compile in Redis.
"""

from __future__ import annotations

import re

import pytest
import redis

from aqueue._redis.scripts import SCRIPT_NAMES, clocked_source, script_source

#: What Redis' Lua sandbox offers scripts (the names aqueue's scripts read).
REDIS_GLOBALS = {
    "ARGV",
    "KEYS",
    "bit",
    "cjson",
    "cmsgpack",
    "error",
    "ipairs",
    "math",
    "next",
    "pairs",
    "pcall",
    "redis",
    "select",
    "string",
    "struct",
    "table",
    "tonumber",
    "tostring",
    "type",
    "unpack",
}
_KEYWORDS = {
    *("and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in"),
    *("local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"),
}
_STRING_OR_COMMENT = re.compile(
    r"--\[\[.*?\]\]|--[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'|\[\[.*?\]\]", re.S
)
_DECLARED = (
    re.compile(r"\blocal[ \t]+function[ \t]+(\w+)"),
    re.compile(r"\blocal[ \t]+(\w+(?:[ \t]*,[ \t]*\w+)*)"),
    re.compile(r"\bfunction[ \t]*\w*[ \t]*\(([^)]*)\)"),
    re.compile(r"\bfor[ \t]+(\w+(?:[ \t]*,[ \t]*\w+)*)[ \t]+in\b"),
    re.compile(r"\bfor[ \t]+(\w+)[ \t]*="),
)
_READ = re.compile(r"(?<![.:\w])([A-Za-z_]\w*)")


def undeclared_names(source: str) -> set[str]:
    """Names the code reads that no ``local``, parameter or loop variable declares."""
    code = _STRING_OR_COMMENT.sub(" ", source)
    declared: set[str] = set()
    for pattern in _DECLARED:
        for names in pattern.findall(code):
            declared.update(n.strip() for n in names.split(",") if n.strip())
    # `t.key` and `{key = ...}`: field names, not variables.
    code = re.sub(r"[{,]\s*\w+\s*=(?!=)", ",", code)
    return {n for n in _READ.findall(code) if n not in declared and n not in _KEYWORDS}


def test_every_script_reads_only_what_it_declares_or_redis_gives() -> None:
    for name in SCRIPT_NAMES:
        for source in (script_source(name), clocked_source(name)):
            assert undeclared_names(source) <= REDIS_GLOBALS, name


def test_the_check_sees_a_helper_left_out() -> None:
    source = script_source("enqueue")
    assert undeclared_names(source.replace("local function now_ms", "local function other")) >= {
        "now_ms"
    }


def test_a_script_carries_only_the_helpers_it_uses() -> None:
    enqueue = script_source("enqueue")
    for used in ("now_ms", "already_enqueued", "enqueue_one", "enqueue_flow", "live_owner"):
        assert f"local function {used}(" in enqueue
    for unused in ("take_entry", "trim_acked", "admit", "push_frame", "is_utf8"):
        assert f"local function {unused}(" not in enqueue
    # A helper a helper uses comes along (enqueue_flow -> route -> has_backlog -> id_parts).
    assert "local function id_parts(" in enqueue
    # Helpers keep their order: a helper defined after one it calls would not see it.
    assert enqueue.index("local function id_parts(") < enqueue.index("local function has_backlog(")


def test_every_script_compiles_in_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        for name in SCRIPT_NAMES:
            for source in (script_source(name), clocked_source(name)):
                assert len(client.script_load(source)) == 40
    finally:
        client.close()


def test_scripts_are_read_through_the_package_loader_when_not_installed_as_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aqueue._redis import scripts

    installed = scripts._read("fetch.lua")
    monkeypatch.setattr(scripts, "_LUA", "/nonexistent/aqueue/lua")  # as inside a zip
    assert scripts._read("fetch.lua") == installed
