"""The appliance side stays small: hypervisor_core imports only the standard library and libvirt, never oemkit."""

from __future__ import annotations

import ast
import subprocess
import sys

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
