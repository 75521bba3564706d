"""The house's layers, read from the code's own imports (``ast``, lazy imports inside functions included).

``schemas`` imports nothing of ours; ``workers`` and ``topologies`` import only
``schemas``; ``infertide`` may import all of them. Nothing imports upwards, so
there is no cycle between the top packages either (checked on its own, too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "workers", "topologies", "infertide")
ALLOWED = {
    "schemas": set(),
    "workers": {"schemas"},
    "topologies": {"schemas"},
    "infertide": {"schemas", "workers", "topologies"},
}


def _imported_modules(tree: ast.AST, module_path: Path) -> list[tuple[str, int]]:
    """Every module named by an import anywhere in the tree (top level, functions, conditionals)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module_path.relative_to(ROOT).with_suffix("").parts[:-node.level]
                out.append((".".join([*base, node.module or ""]).strip("."), node.lineno))
            elif node.module:
                out.append((node.module, node.lineno))
    return out


def package_imports() -> dict[str, dict[str, list[str]]]:
    """``{package: {imported top package: ["file:line", ...]}}`` over our four packages."""
    edges: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for module, line in _imported_modules(tree, path):
                top = module.split(".")[0]
                if top in PACKAGES and top != package:
                    edges[package].setdefault(top, []).append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path:
                walk(nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, [start])
    return found


def test_the_walker_sees_lazy_and_relative_imports() -> None:
    src = "import os\nfrom . import sibling\ndef f():\n    from topologies.app import x\n    import workers.base\n"
    mods = [m for m, _ in _imported_modules(ast.parse(src), ROOT / "infertide" / "mod.py")]
    assert mods == ["os", "infertide", "topologies.app", "workers.base"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_upward_or_sideways_import(package: str) -> None:
    bad = {top: where for top, where in package_imports()[package].items() if top not in ALLOWED[package]}
    assert not bad, (f"{package} may import only {sorted(ALLOWED[package]) or 'nothing of ours'}, "
                     f"but imports {bad}; move the shared piece down into a package both may import")


def test_no_cycle_between_top_packages() -> None:
    edges = {p: set(targets) for p, targets in package_imports().items()}
    assert _cycles(edges) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"], ["b", "c", "a", "b"],
                                                             ["c", "a", "b", "c"]]
