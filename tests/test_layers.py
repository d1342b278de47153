"""The package's shape, read from its own source: layers, no circles, one door to Redis.

Layers, lowest first; an import may only point down (or stay in its layer),
``TYPE_CHECKING`` and function-level imports included. ``docs/architecture.md``
draws the same picture.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aqueue"

#: (layer number, name, module prefixes), lowest first.
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "core", ("aqueue.core", "aqueue._version")),
    (2, "redis adapter", ("aqueue._redis",)),
    (
        3,
        "client side",
        (
            "aqueue.client",
            "aqueue.waiter",
            "aqueue.result",
            "aqueue.inline",
            "aqueue.sync",
            "aqueue.task",
            "aqueue.canvas",
            "aqueue.groups",
            "aqueue.periodic",
            "aqueue.unique",
            "aqueue.schedules",
            "aqueue.deadletter",
            "aqueue.discovery",
            "aqueue.app",
            "aqueue.events",
        ),
    ),
    (4, "runtime", ("aqueue.runtime",)),
    (5, "faces", ("aqueue.cli", "aqueue.integrations", "aqueue.testing", "aqueue.dashboard")),
]
#: The package facade: it re-exports the public names; nothing imports it.
FACADES = {"aqueue", "aqueue.__main__"}
#: Longest module without a one-line reason (a comment) near its top.
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    names: tuple[str, ...]
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return (ROOT / Path(*name.split(".")) / "__init__.py").exists()


def imports_of(name: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = tuple(a.name for a in node.names)
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if submodules:
                for sub in submodules:
                    yield Import(name, sub, (), node.lineno)
                rest = tuple(n for n in names if f"{target}.{n}" not in known)
                if rest:
                    yield Import(name, target, rest, node.lineno)
            else:
                yield Import(name, target, names, node.lineno)


def all_imports() -> list[Import]:
    known = modules()
    return [imp for name, path in known.items() for imp in imports_of(name, path, known)]


def layer_of(module: str) -> int | None:
    for number, _, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return number
    return None


def test_every_module_has_a_layer() -> None:
    homeless = [m for m in modules() if m not in FACADES and layer_of(m) is None]
    assert not homeless, f"modules in no layer (add them to LAYERS and the docs): {homeless}"


def test_no_import_points_up_a_layer() -> None:
    upward = []
    for imp in all_imports():
        if not imp.target.startswith("aqueue"):
            continue
        if imp.target in FACADES:
            upward.append(f"{imp.source}:{imp.line} imports the facade {imp.target}")
            continue
        source, target = layer_of(imp.source), layer_of(imp.target)
        if source is not None and target is not None and target > source:
            upward.append(f"{imp.source}:{imp.line} -> {imp.target}")
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def test_the_import_graph_has_no_circle() -> None:
    known = modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in all_imports():
        target = imp.target
        while target and target not in known:  # `from pkg.mod import Name`
            target = target.rpartition(".")[0]
        if target in known and target != imp.source:
            graph[imp.source].add(target)
    # Packages whose __init__ only holds a docstring are no part of a circle.
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_module_imports_another_modules_private_names() -> None:
    found = [
        f"{imp.source}:{imp.line} imports {name} from {imp.target}"
        for imp in all_imports()
        if imp.target.startswith("aqueue") and imp.target != imp.source
        for name in imp.names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not found, "\n".join(found)


def test_only_the_redis_adapter_imports_redis_at_run_time() -> None:
    found = []
    for name, path in modules().items():
        if layer_of(name) == 2:
            continue
        tree = ast.parse(path.read_text())
        type_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for n in ast.walk(block)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                hits = [a.name for a in node.names if a.name.split(".")[0] == "redis"]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                hits = [node.module or ""] if (node.module or "").split(".")[0] == "redis" else []
            else:
                hits = []
            found += [f"{name}:{node.lineno} imports {h}" for h in hits]
    assert not found, "\n".join(found)


def _uses(path: Path, needles: tuple[str, ...]) -> list[str]:
    text = path.read_text()
    return [n for n in needles if n in text]


def test_only_the_cli_parses_arguments_handles_signals_and_sets_up_logging() -> None:
    needles = (
        "import argparse",
        "add_signal_handler",
        "signal.signal(",
        "logging.basicConfig",
        "StreamHandler",
        "FileHandler",
        "addHandler",
        "SystemExit",
    )
    found = {
        name: hits
        for name, path in modules().items()
        if not name.startswith("aqueue.cli") and name not in FACADES
        if (hits := _uses(path, needles))
    }
    assert not found, f"CLI-only code outside aqueue.cli: {found}"


def test_long_modules_say_why() -> None:
    unexplained = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        if len(lines) <= MAX_LINES:
            continue
        head = "\n".join(lines[:40])
        if "# Over 400 lines:" not in head:
            unexplained.append(f"{name} ({len(lines)} lines)")
    assert not unexplained, (
        "modules over 400 lines need a `# Over 400 lines: <reason>` comment near the top "
        f"(or a split): {unexplained}"
    )


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_named_like_the_standard_library(name: str) -> None:
    leaf = name.rpartition(".")[2]
    assert leaf not in sys.stdlib_module_names or leaf in {"__main__"}, (
        f"{name} shadows the standard library's {leaf}"
    )
