"""The seams hold: hypervisor_core imports only the standard library and libvirt, never oemkit; no module takes part
in an import cycle; only CLI commands import inside functions (for start-up time)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

ALLOWED = set(sys.stdlib_module_names) | {"libvirt", "hypervisor_core"}


def _imports(path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def test_hypervisor_core_imports_only_stdlib_and_libvirt() -> None:
    bad = [
        f"{f.relative_to(REPO)}:{line}: {mod}"
        for f in sorted((REPO / "hypervisor_core").rglob("*.py"))
        for line, mod in _imports(f)
        if mod not in ALLOWED
    ]
    assert not bad, "hypervisor_core must stay standard library + libvirt:\n" + "\n".join(bad)


def test_hypervisor_core_loads_nothing_of_the_factory() -> None:
    modules = [".".join(f.relative_to(REPO).with_suffix("").parts) for f in (REPO / "hypervisor_core").rglob("*.py")]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules if not m.endswith("__main__"))
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'oemkit','pydantic','yaml','typer','rich'})\n"
        + "print(','.join(bad))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert run.stdout.strip() == ""


# ------------------------------------------------------------------------------------------- the import graph
PACKAGES = ("oemkit", "hypervisor_core")
# Imports inside functions outside the CLI, each with its reason; anything else belongs at the top of its module.
LAZY_ALLOWED = {
    ("oemkit.catalog.cache", "oemkit.catalog.store"): "pydantic and YAML only when the identity cache misses",
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for f in sorted((REPO / package).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def _edges(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module of ours, imported inside a function) for every import in the file, TYPE_CHECKING too."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names if a.name.split(".")[0] in PACKAGES)
            elif isinstance(child, ast.ImportFrom) and (child.module or "").split(".")[0] in PACKAGES:
                for a in child.names:  # `from a import b` imports a.b when b is a module of ours
                    target = f"{child.module}.{a.name}"
                    found.append((target if target in known else str(child.module), in_function))
            visit(child, nested)

    visit(tree, False)
    return [(t, lazy) for t, lazy in found if t != name]


def test_no_import_cycles() -> None:
    known = _modules()
    graph = {name: sorted({t for t, _ in _edges(name, path, known)}) for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan: every strongly connected component of more than one module
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, []):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert cycles == [], "import cycles (module-level, inside functions and TYPE_CHECKING alike): " + str(cycles)


def test_lazy_imports_only_in_the_cli() -> None:
    """Imports inside functions buy start-up time for CLI commands; elsewhere they hide a module's dependencies."""
    known = _modules()
    lazy = {
        (name, target)
        for name, path in known.items()
        if not name.startswith("oemkit.cli")
        for target, in_function in _edges(name, path, known)
        if in_function
    }
    assert sorted(lazy - set(LAZY_ALLOWED)) == []
    assert sorted(set(LAZY_ALLOWED) - lazy) == [], "an allowed lazy import that no longer exists: drop it"
