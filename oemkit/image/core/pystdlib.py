"""Python in the core: the stdlib modules the agent really imports, compiled to sourceless .pyc at the source's
path by the staged interpreter itself.

The set is measured, not listed: the staged python3.11 (in a chroot) imports every hypervisor_core module and
everything the agent's source imports anywhere (also inside functions), then follows the imports written inside
the functions of every stdlib module so loaded (argparse imports textwrap only to print help or an error), until
nothing new loads; sys.modules is the answer. Following only what loads at import time missed textwrap, and
`--bogus` then died with ImportError instead of a usage line. Sourceless .pyc at the old .py path import fine
(also from dist-packages for `python3 -m hypervisor_core`); getpath() needs the lib/python3.11/os.pyc landmark
and a lib-dynload/ folder; Debian builds pyexpat, _socket, _struct and the hashes into python3.11."""

from __future__ import annotations

import ast
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from oemkit.image.core.recipe import PY, PY_NEVER
from oemkit.image.tools import CHROOT, BuildError, run_tool

AGENT_PACKAGE = "hypervisor_core"
AGENT_DEST = "/usr/lib/python3/dist-packages"
STDLIB = f"/usr/lib/{PY}"
SCANNED = (f"{STDLIB}/", "/usr/lib/python3/dist-packages/libvirt")  # sources whose lazy imports are followed
# The stdlib and the libvirt binding are compiled as `python -OO` would (no docstrings, no asserts: -0.26 MB
# compressed; CPython's own test suite runs under -OO). The agent keeps its asserts: it runs as it was tested.
# A sourceless .pyc is loaded whatever the interpreter's -O level, so the core runs plain `python3`.
LIBRARY_OPTIMIZE = 2
CHROOT_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}

PROBE = r"""
import ast, importlib, importlib.util, json, pkgutil, sys
imports, agent = json.loads(sys.argv[1]), sys.argv[2]
prefixes, never = tuple(json.loads(sys.argv[3])), set(json.loads(sys.argv[4]))

def attempt(name):
    if name.split(".")[0] in never or name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except Exception:  # another platform's module, a name that is not a submodule: not needed here
        pass

sys.path.insert(0, agent)
import hypervisor_core
for info in pkgutil.walk_packages(hypervisor_core.__path__, "hypervisor_core."):
    if not info.name.endswith("__main__"):  # importing __main__ would run the agent
        importlib.import_module(info.name)
for module, names in imports:
    importlib.import_module(module)
    for name in names:  # `from a import b`: b may be a submodule
        attempt(f"{module}.{name}")

def lazy_imports(name, path):
    # every import in the module's source, also inside functions (argparse imports textwrap only to print help),
    # but not in its `if __name__ == "__main__":` self-test
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    tree = ast.parse(open(path, "rb").read())
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "__main__" in ast.dump(stmt.test):
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Import):
                yield from (a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                try:
                    base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                except ImportError:
                    continue
                yield base
                yield from (f"{base}.{a.name}" for a in node.names if a.name != "*")

scanned = set()
while True:
    todo = [(n, m.__file__) for n, m in list(sys.modules.items())
            if n not in scanned and (getattr(m, "__file__", None) or "").endswith(".py")
            and m.__file__.startswith(prefixes)]
    if not todo:
        break
    for name, path in todo:
        scanned.add(name)
        for wanted in lazy_imports(name, path):
            attempt(wanted)
files = {n: m.__file__ for n, m in sys.modules.items() if getattr(m, "__file__", None)}
print(json.dumps({n: f for n, f in sorted(files.items()) if not f.startswith(agent)}))
"""

COMPILE = r"""
import json, py_compile, sys
for src, dst, shown, level in json.load(open(sys.argv[1])):
    py_compile.compile(src, cfile=dst, dfile=shown, doraise=True, optimize=level,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def source_imports(package: Path) -> list[tuple[str, list[str]]]:
    """Every absolute import in the package's source, wherever it is (module level or inside a function),
    except the package's own: (module, names imported from it)."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault(alias.name, set())
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.setdefault(node.module, set()).update(a.name for a in node.names if a.name != "*")
    return [
        (m, sorted(names)) for m, names in sorted(found.items()) if m.split(".")[0] not in (AGENT_PACKAGE, "__future__")
    ]


def _agent_files(agent: Path) -> list[Path]:
    return sorted(p for p in agent.rglob("*") if p.is_file() and "__pycache__" not in p.relative_to(agent).parts)


@dataclass
class PythonSet:
    modules: dict[str, str] = field(default_factory=dict)  # module name -> file in the staged root
    stdlib_pyc: dict[str, Path] = field(default_factory=dict)  # image path -> compiled file
    extensions: list[str] = field(default_factory=list)  # .so files in the staged root (ELF closure)
    agent: dict[str, Path] = field(default_factory=dict)  # image path -> compiled file (or a data file)


class _ChrootTmp:
    """A private folder under the staged root's /tmp holding the agent copy and the compiler's output."""

    def __init__(self, stage: Path, agent: Path) -> None:
        self.host = stage / "tmp" / f"oemkit-py-{os.getpid()}"
        self.inside = f"/tmp/{self.host.name}"
        shutil.rmtree(self.host, ignore_errors=True)
        (self.host / "agent").mkdir(parents=True)
        shutil.copytree(agent, self.host / "agent" / AGENT_PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))

    def python(self, stage: Path, *args: str, what: str) -> str:
        cmd = [CHROOT, str(stage), f"/usr/bin/{PY}", "-B", *args]
        return run_tool(cmd, what=what, text=True, env=CHROOT_ENV).stdout

    def remove(self) -> None:
        shutil.rmtree(self.host, ignore_errors=True)


def build_python(stage: Path, agent: Path, seeds: tuple[str, ...], work: Path) -> PythonSet:
    """Measure the agent's module set in the staged Python and compile it (and the agent) to .pyc under work."""
    if not (agent / "__init__.py").is_file():
        raise BuildError(f"{agent} is not the {AGENT_PACKAGE} package")
    imports: list[tuple[str, list[str]]] = [(s, []) for s in seeds] + source_imports(agent)
    tmp = _ChrootTmp(stage, agent)
    try:
        args = [json.dumps(imports), f"{tmp.inside}/agent", json.dumps(SCANNED), json.dumps(PY_NEVER)]
        out = tmp.python(stage, "-c", PROBE, *args, what="the Python import probe")
        result = PythonSet(modules=json.loads(out))
        jobs: list[tuple[str, str, str, int]] = []
        targets: dict[str, tuple[str, str]] = {}  # image path -> (kind, path under the compiler's output)
        for name, path in result.modules.items():
            if path.endswith(".py"):
                dest = path[:-3] + ".pyc"
                jobs.append((path, f"{tmp.inside}/out{dest}", path, LIBRARY_OPTIMIZE))
                targets[dest] = ("stdlib", dest)
            elif path.endswith(".so"):
                result.extensions.append(path)
            else:
                raise BuildError(f"Python module {name} comes from {path}, neither source nor extension")
        for src in _agent_files(agent):
            rel = src.relative_to(agent.parent).as_posix()
            if src.suffix == ".py":
                dest = f"{AGENT_DEST}/{rel[:-3]}.pyc"
                jobs.append((f"{tmp.inside}/agent/{rel}", f"{tmp.inside}/out{dest}", f"{AGENT_DEST}/{rel}", 0))
                targets[dest] = ("agent", dest)
            else:
                result.agent[f"{AGENT_DEST}/{rel}"] = src
        (tmp.host / "jobs.json").write_text(json.dumps(jobs))
        tmp.python(stage, "-c", COMPILE, f"{tmp.inside}/jobs.json", what="compiling .pyc")
        shutil.rmtree(work / "pyc", ignore_errors=True)
        shutil.copytree(tmp.host / "out", work / "pyc")
    finally:
        tmp.remove()
    for dest, (kind, rel) in sorted(targets.items()):
        (result.stdlib_pyc if kind == "stdlib" else result.agent)[dest] = work / "pyc" / rel.lstrip("/")
    if f"{STDLIB}/os.pyc" not in result.stdlib_pyc:
        raise BuildError(f"the probe did not report {STDLIB}/os.py: Python would not find its home in the core")
    return result
