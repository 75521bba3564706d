"""The house's layers, read from the code's own imports (``ast``, lazy imports inside functions included).

``schemas`` imports nothing of ours; ``workers`` and ``topologies`` import only
``schemas``; ``infertide`` may import all of them. Nothing imports upwards, so
there is no cycle between the top packages either (checked on its own, too).

Inside ``infertide`` the same holds one level down: ``cli`` sits on top (it may
import every other part), then ``bench``, then ``demo``, then ``local``, then
``clients``; ``settings`` and ``k8s`` import no other part. No part imports
the CLI back, and there is no cycle between the parts.
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


# infertide's parts: its subpackages and top-level modules (``infertide.settings``, ``infertide.__main__``).
INFERTIDE_ALLOWED = {
    "settings": set(),
    "k8s": set(),
    "clients": {"settings"},
    "local": {"clients", "settings"},
    "demo": {"local", "clients", "settings"},
    "bench": {"demo", "local", "clients", "settings"},
    "cli": {"bench", "demo", "local", "clients", "k8s", "settings"},
    "__main__": {"cli"},
    "__init__": set(),
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
    src = "import os\nfrom . import sibling\ndef f():\n    from topologies.host.app import x\n    import workers.base\n"
    mods = [m for m, _ in _imported_modules(ast.parse(src), ROOT / "infertide" / "mod.py")]
    assert mods == ["os", "infertide", "topologies.host.app", "workers.base"]


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


def _part(module: str) -> str | None:
    """``infertide.local.stack`` -> ``local``; ``infertide`` itself -> ``__init__``; not ours -> None."""
    parts = module.split(".")
    if parts[0] != "infertide":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def infertide_part_imports() -> dict[str, dict[str, list[str]]]:
    """``{part: {imported part: ["file:line", ...]}}`` between the parts of ``infertide``."""
    edges: dict[str, dict[str, list[str]]] = {}
    for path in sorted((ROOT / "infertide").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        part = _part(".".join(rel.parts))
        assert part is not None
        edges.setdefault(part, {})
        for module, line in _imported_modules(ast.parse(path.read_text(), filename=str(path)), path):
            target = _part(module)
            if target is not None and target != part:
                edges[part].setdefault(target, []).append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def test_every_infertide_part_has_a_layer() -> None:
    assert set(infertide_part_imports()) <= set(INFERTIDE_ALLOWED), (
        "a new part of infertide: give it a row in INFERTIDE_ALLOWED (what it may import)")


@pytest.mark.parametrize("part", sorted(INFERTIDE_ALLOWED))
def test_no_upward_import_between_infertide_parts(part: str) -> None:
    bad = {t: where for t, where in infertide_part_imports().get(part, {}).items() if t not in INFERTIDE_ALLOWED[part]}
    assert not bad, (f"infertide.{part} may import only {sorted(INFERTIDE_ALLOWED[part]) or 'no other part'} of "
                     f"infertide, but imports {bad}; move the shared piece down (cli -> bench -> demo -> local -> "
                     f"clients)")


def test_no_cycle_between_infertide_parts() -> None:
    edges = {p: set(targets) for p, targets in infertide_part_imports().items()}
    assert _cycles(edges) == []


def test_the_part_walker_sees_what_the_cli_imports() -> None:
    edges = infertide_part_imports()
    assert {"local", "demo", "bench"} <= set(edges["cli"])
    assert _part("infertide.local.stack") == "local" and _part("infertide") == "__init__" and _part("ray") is None


# topologies' wings: the app host on top, then the route engine, then its pure parts (rollout, video) and the
# folded state; ``metrics`` and
# ``kafka_settings`` are shared by all three and import no wing.
TOPOLOGIES_ALLOWED = {
    "host": {"engine", "state", "rollout", "video", "metrics", "kafka_settings", "transactions"},
    "engine": {"state", "rollout", "video", "metrics", "kafka_settings", "transactions"},
    "rollout": {"state", "metrics"},  # pure: variant split, shadow queue, comparison fold
    "video": {"state", "metrics"},  # pure: trackers per stream, lines and zones, their window fold
    "state": {"metrics", "kafka_settings", "transactions"},
    "metrics": set(),
    "kafka_settings": set(),
    "transactions": set(),  # librdkafka's transactional error codes and bounded calls, shared by engine and state
    "__init__": set(),
}


def topologies_wing_imports() -> dict[str, dict[str, list[str]]]:
    """``{wing: {imported wing: ["file:line", ...]}}`` between the wings of ``topologies``."""
    edges: dict[str, dict[str, list[str]]] = {}
    for path in sorted((ROOT / "topologies").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        wing = rel[1] if len(rel) > 1 else "__init__"
        edges.setdefault(wing, {})
        for module, line in _imported_modules(ast.parse(path.read_text(), filename=str(path)), path):
            parts = module.split(".")
            if parts[0] == "topologies" and len(parts) > 1 and parts[1] != wing:
                edges[wing].setdefault(parts[1], []).append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def test_topologies_wings_import_downwards() -> None:
    edges = topologies_wing_imports()
    assert set(edges) <= set(TOPOLOGIES_ALLOWED), "a new wing of topologies: give it a row in TOPOLOGIES_ALLOWED"
    bad = {w: {t: where for t, where in targets.items() if t not in TOPOLOGIES_ALLOWED[w]} for w, targets in edges.items()}
    assert not any(bad.values()), f"topologies' wings import host -> engine -> state only: {bad}"
    assert _cycles({w: set(t) for w, t in edges.items()}) == []
