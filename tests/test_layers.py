"""dagd's layers import inward only, and no two modules import each other in a circle.

The rule (docs/architecture.md draws it): `core` imports nothing else of dagd; `runtime`
imports `core`; `daemon` imports `runtime` and `core`; `net` sees the daemon only through its
narrow interface, `dagd.daemon.api`; the client library imports `core`; the CLI sits on top;
only the composition root (`dagd.app`) and the public surface (`dagd/__init__`) know everyone.
Imports under `if TYPE_CHECKING:` count too: a type is a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dagd"

#: module prefix -> the prefixes it may import (besides itself). The most specific prefix wins.
ALLOWED: dict[str, tuple[str, ...]] = {
    "dagd.core": ("dagd.core",),
    "dagd.runtime": ("dagd.core", "dagd.runtime"),
    "dagd.daemon": ("dagd.core", "dagd.runtime", "dagd.daemon"),
    "dagd.net": ("dagd.core", "dagd.net", "dagd.daemon.api"),
    "dagd.client": ("dagd.core",),
    "dagd.cli": (
        "dagd.core",
        "dagd.runtime",
        "dagd.daemon",
        "dagd.client",
        "dagd.cli",
        "dagd.app",
    ),
    "dagd.examples": ("dagd",),
    "dagd.app": ("dagd",),
    "dagd.__main__": ("dagd.cli",),
    "dagd": ("dagd",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The dagd modules that `name` imports (a package import counts as its `__init__`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from dagd.x import y` imports the module dagd.x.y if there is one, else dagd.x
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def rule_for(name: str) -> tuple[str, tuple[str, ...]]:
    best = max((p for p in ALLOWED if name == p or name.startswith(p + ".")), key=len)
    return best, ALLOWED[best]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_the_rules_cover_every_module():
    for name in modules():
        rule_for(name)  # raises ValueError (max of nothing) for a module outside every rule


def outward(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for name, targets in sorted(edges.items()):
        _, allowed = rule_for(name)
        for target in sorted(targets):
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                wrong.append(f"{name} imports {target}")
    return wrong


def test_imports_point_inward():
    wrong = outward(graph())
    assert not wrong, "imports that point outward:\n" + "\n".join(wrong)


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    for root in sorted(edges):
        if root in state:
            continue
        stack = [(root, iter(sorted(edges[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in edges:
                    continue
                if state.get(child) == 1:
                    return [*path[path.index(child) :], child]
                if child not in state:
                    state[child] = 1
                    stack.append((child, iter(sorted(edges[child]))))
                    path.append(child)
                    break
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def test_no_import_circles():
    edges = graph()
    # The public surface imports lazily from everyone, and everyone may name `dagd`'s
    # submodules through it; it is the root, not a member of a circle.
    edges.pop("dagd", None)
    for targets in edges.values():
        targets.discard("dagd")
    circle = find_circle(edges)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_circle_finder_finds_circles(edges, expected):
    assert find_circle(edges) == expected


def test_the_layer_check_sees_an_outward_import(tmp_path):
    fake = tmp_path / "model.py"
    fake.write_text("from dagd.daemon.store import Store\nfrom . import spec\n")
    known = set(modules())
    found = imports_of("dagd.core.model", fake, known)
    assert found == {"dagd.daemon.store", "dagd.core.spec"}
    assert outward({"dagd.core.model": found}) == ["dagd.core.model imports dagd.daemon.store"]
