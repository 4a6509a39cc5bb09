"""Kernel modules: the closure of the wanted modules over the kernel's modules.dep, and the subset's own depmod.

The Debian kernel package ships no modules.dep (its postinst makes one), so busybox's depmod — the same one the
core's modprobe reads with — writes it for the whole tree once per kernel, and again for the shipped subset,
together with the modules.alias that coldplug (`modprobe` on every sysfs modalias) needs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from oemkit.errors import OemkitError

KEPT_INDEXES = ("modules.builtin", "modules.order", "modules.builtin.modinfo")


class ModuleError(OemkitError):
    """A wanted module is neither loadable nor built in, or an index is missing."""


def module_name(path: str) -> str:
    """kernel/net/8021q/8021q.ko(.xz) → 8021q; dashes and underscores are the same to modprobe."""
    return Path(path).name.split(".ko", 1)[0].replace("-", "_")


def norm(name: str) -> str:
    return name.replace("-", "_")


@dataclass
class ModuleTree:
    """lib/modules/<abi> of a kernel: module → path and dependencies, and the built-in names."""

    root: Path
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)  # relative path -> relative paths
    by_name: dict[str, str] = field(default_factory=dict)
    builtin: frozenset[str] = frozenset()

    @classmethod
    def load(cls, root: Path) -> ModuleTree:
        try:
            dep_text = (root / "modules.dep").read_text()
            builtin_text = (root / "modules.builtin").read_text()
        except OSError as exc:
            raise ModuleError(f"cannot read the kernel's module index: {exc.strerror}", file=exc.filename) from None
        tree = cls(root, builtin=frozenset(module_name(line) for line in builtin_text.split()))
        for line in dep_text.splitlines():
            path, _, rest = line.partition(":")
            if path:
                tree.deps[path] = tuple(rest.split())
                tree.by_name[module_name(path)] = path
        return tree


@dataclass(frozen=True)
class ModuleSet:
    files: tuple[str, ...]  # every module file to ship (relative paths, sorted)
    loadable: frozenset[str]  # asked-for names that are modules
    builtin: frozenset[str]  # asked-for names built into the kernel


def resolve(tree: ModuleTree, wanted: Iterable[str]) -> ModuleSet:
    """The wanted modules and everything they depend on; a name that is neither a module nor built in is an
    error naming every such name (the recipe or the catalog asks for a driver this kernel does not have)."""
    files: set[str] = set()
    loadable, builtin, missing = set(), set(), []
    for name in wanted:
        n = norm(name)
        if n in tree.by_name:
            loadable.add(n)
            todo = [tree.by_name[n]]
            while todo:
                path = todo.pop()
                if path not in files:
                    files.add(path)
                    todo.extend(tree.deps.get(path, ()))
        elif n in tree.builtin:
            builtin.add(n)
        else:
            missing.append(name)
    if missing:
        raise ModuleError(
            f"kernel modules neither loadable nor built into {tree.root.name}: {', '.join(sorted(missing))}"
        )
    return ModuleSet(tuple(sorted(files)), frozenset(loadable), frozenset(builtin))


def depmod(busybox: Path, base: Path, abi: str) -> None:
    """busybox depmod over base/lib/modules/abi (writes modules.dep, modules.alias, modules.symbols)."""
    done = subprocess.run([str(busybox), "depmod", "-b", str(base), abi], capture_output=True, text=True)
    if done.returncode != 0:
        raise ModuleError(f"busybox depmod failed: {done.stderr.strip()[-300:]}", file=str(base))


def install(tree: ModuleTree, files: Iterable[str], base: Path, abi: str, busybox: Path) -> Path:
    """Copy `files` and the kernel's kept indexes into base/lib/modules/abi and index them; returns that folder.
    Refuses a result without modules.alias: coldplug would then load nothing."""
    dest = base / "lib" / "modules" / abi
    shutil.rmtree(dest, ignore_errors=True)
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree.root / rel, dest / rel)
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT_INDEXES:
        if (tree.root / name).exists():
            shutil.copyfile(tree.root / name, dest / name)
    depmod(busybox, base, abi)
    for name in ("modules.dep", "modules.alias"):
        if not (dest / name).is_file():
            raise ModuleError(f"depmod wrote no {name}", file=str(dest))
    if files and not (dest / "modules.alias").read_text().strip():
        raise ModuleError("modules.alias is empty: coldplug would load no driver", file=str(dest))
    return dest
