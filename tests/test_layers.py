"""The house rules of docs/design.md ("Packages and the rules they keep"), checked on the source.

Every module of graphgt is parsed and every import it makes, at the top or inside a function, is
read; an import from a package that the rules forbid fails here with the file and line.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1] / "graphgt"

#: the unit of the rules: graphgt's subpackages and its top-level modules
GROUND = {"errors", "spec", "io", "pages"}

#: package -> packages (of graphgt, or third-party top-level names) it must never import
NEVER: Dict[str, Set[str]] = {
    **{g: {"config", "data", "nn", "pe", "eval", "train", "app", "cli"} for g in GROUND},
    "nn": {"data", "train", "cli", "config", "app", "omegaconf", "hydra"},
    "pe": {"data", "train", "cli", "config", "app", "eval", "omegaconf", "hydra"},
    "data": {"nn", "train", "eval", "config", "app", "cli", "omegaconf", "hydra"},
    "eval": {"data", "nn", "train", "config", "app", "cli"},
    "train": {"config", "cli", "app", "omegaconf", "hydra"},
    "config": {"data", "nn", "pe", "eval", "train", "app", "cli"},
    "app": {"cli"},
}


def _unit(module: str) -> str:
    """``graphgt.data.store.core`` -> ``data``; ``graphgt.app`` -> ``app``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "graphgt"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports() -> List[Tuple[str, str, int]]:
    """``(importing module, imported module, line)`` for every import in graphgt's source."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(name, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against the package
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                out.append((name, target, node.lineno))
                # "from graphgt.data import store" imports the module graphgt.data.store too
                out += [(name, f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return out


def _graphgt_edges() -> Dict[str, Set[str]]:
    edges: Dict[str, Set[str]] = defaultdict(set)
    for src, dst, _ in imports():
        if dst.startswith("graphgt.") and _unit(src) != _unit(dst):
            edges[_unit(src)].add(_unit(dst))
    return edges


def test_the_parser_sees_imports():
    """The rules are read from real imports (a test that could not fail would prove nothing)."""
    found = {(src, dst) for src, dst, _ in imports()}
    assert ("graphgt.app", "graphgt.train") in found
    assert ("graphgt.data.store.pe", "graphgt.pe.base") in found
    assert ("graphgt.nn.model", "graphgt.spec") in found


@pytest.mark.parametrize("package", sorted(NEVER))
def test_forbidden_imports(package):
    bad = []
    for src, dst, line in imports():
        if _unit(src) != package:
            continue
        top = dst.split(".")[0]
        unit = _unit(dst) if top == "graphgt" else top
        if unit in NEVER[package] and not (top == "graphgt" and unit == package):
            bad.append(f"{src} line {line}: imports {dst}")
    assert not bad, f"{package} must never import {sorted(NEVER[package])}:\n  " + "\n  ".join(bad)


def test_no_package_cycles():
    edges = _graphgt_edges()
    state: Dict[str, int] = {}
    path: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("package cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_train_never_reads_a_dictconfig():
    hits = [f"{p.relative_to(ROOT.parent)}:{i}" for p in sorted((ROOT / "train").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if "DictConfig" in line]
    assert not hits, "train/ must not mention DictConfig: " + ", ".join(hits)


def test_design_doc_lists_the_same_dependencies():
    """docs/design.md's package table lists, for each package, exactly the graphgt packages it imports."""
    text = (ROOT.parent / "docs" / "design.md").read_text()
    start = text.index("<!-- package-imports -->")
    end = text.index("<!-- /package-imports -->")
    documented: Dict[str, Set[str]] = {}
    for line in text[start:end].splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] and not set(cells[0]) <= {"-"} and cells[0] != "package":
            documented[cells[0]] = {c.strip().strip("`") for c in cells[1].split(",") if c.strip() not in ("", "—")}
    actual = {unit: deps for unit, deps in _graphgt_edges().items() if unit != "graphgt"}
    for unit in set(documented) | set(actual):
        assert documented.get(unit, set()) == actual.get(unit, set()), \
            f"docs/design.md says {unit} imports {sorted(documented.get(unit, set()))}, the code imports " \
            f"{sorted(actual.get(unit, set()))}"
