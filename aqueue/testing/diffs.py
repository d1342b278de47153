"""Readable failures for the test kit's assertions: what was expected, what is, and the diff.

A failed ``assert_enqueued`` or ``assert_ran`` says which call came closest
and marks, character by character, where it differs from the expected one;
a list compared with a list gets a line diff. Values are shown with
``pprint`` so a Struct or a dict of twenty fields stays readable.
"""

from __future__ import annotations

import difflib
import pprint
from collections.abc import Sequence
from typing import Any

__all__ = ["call_text", "closest_diff", "list_diff"]

#: Width values are wrapped at in the diffs.
WIDTH = 88


def call_text(task: str, args: Sequence[Any], kwargs: dict[str, Any], extra: str = "") -> str:
    """``task(1, 'x', flag=True)`` (wrapped by pprint when long), plus ``extra``."""
    parts = [pprint.pformat(a, width=WIDTH) for a in args]
    parts += [f"{k}={pprint.pformat(v, width=WIDTH)}" for k, v in kwargs.items()]
    one_line = f"{task}({', '.join(parts)}){extra}"
    if len(one_line) <= WIDTH and "\n" not in one_line:
        return one_line
    inner = ",\n".join("    " + p.replace("\n", "\n    ") for p in parts)
    return f"{task}(\n{inner},\n){extra}"


def closest_diff(expected: str, candidates: Sequence[str]) -> str:
    """The candidate most like ``expected``, as an ndiff (``-`` expected, ``+`` found)."""
    if not candidates:
        return "  (nothing to compare with)"
    best = max(candidates, key=lambda c: difflib.SequenceMatcher(None, expected, c).ratio())
    lines = difflib.ndiff(expected.splitlines(), best.splitlines())
    return "\n".join(f"  {line.rstrip()}" for line in lines)


def list_diff(expected: Sequence[str], found: Sequence[str]) -> str:
    """A unified line diff of two listings (``-`` expected, ``+`` found)."""
    lines = difflib.unified_diff(
        list(expected), list(found), fromfile="expected", tofile="found", lineterm="", n=2
    )
    return "\n".join(f"  {line}" for line in lines)
