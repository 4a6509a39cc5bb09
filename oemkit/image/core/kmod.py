"""Kernel modules: the closure of the wanted modules over the kernel's modules.dep and their soft dependencies,
the firmware they name, and the subset's own depmod.

The Debian kernel package ships no modules.dep (its postinst makes one), so busybox's depmod — the same one the
core's modprobe reads with — writes it for the whole tree once per kernel, and again for the shipped subset,
together with the modules.alias that coldplug (`modprobe` on every sysfs modalias) needs. Busybox's modprobe
ignores soft dependencies (`MODULE_SOFTDEP("pre: crc32c")`, read here from each module's .modinfo), so the
closure ships them and the init loads the `pre:` ones first (pre_softdeps); firmware a module names
(`MODULE_FIRMWARE`) is shipped when the stage has it and listed as missing otherwise."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from oemkit.errors import OemkitError
from oemkit.image.core import elf

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
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # exact alias -> module names

    @classmethod
    def load(cls, root: Path) -> ModuleTree:
        try:
            dep_text = (root / "modules.dep").read_text()
            builtin_text = (root / "modules.builtin").read_text()
        except OSError as exc:
            raise ModuleError(f"cannot read the kernel's module index: {exc.strerror}", file=exc.filename) from None
        tree = cls(root, builtin=frozenset(module_name(line) for line in builtin_text.split()))
        alias_path = root / "modules.alias"
        for line in alias_path.read_text().splitlines() if alias_path.is_file() else ():
            words = line.split()
            if len(words) == 3 and words[0] == "alias" and not any(c in words[1] for c in "*?["):
                tree.aliases[words[1]] = (*tree.aliases.get(words[1], ()), norm(words[2]))
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
    pre_softdeps: tuple[str, ...] = ()  # modules some shipped module wants loaded before it, in closure order
    unresolved_softdeps: tuple[str, ...] = ()  # soft dependencies no module provides (built in, or absent)
    firmware: tuple[str, ...] = ()  # firmware files the shipped modules may request (lib/firmware/...)


def modinfo(data: bytes) -> list[tuple[str, str]]:
    """The key=value pairs of a module's .modinfo section, in order."""
    section = elf.section(data, ".modinfo") or b""
    pairs = (item.decode(errors="replace").partition("=") for item in section.split(b"\0") if item)
    return [(k, v) for k, _, v in pairs]


def softdeps(text: str) -> dict[str, list[str]]:
    """`pre: a b post: c` -> {"pre": ["a", "b"], "post": ["c"]}."""
    out: dict[str, list[str]] = {"pre": [], "post": []}
    where = None
    for word in text.split():
        if word in ("pre:", "post:"):
            where = word[:-1]
        elif where is not None:
            out[where].append(word)
    return out


def resolve(tree: ModuleTree, wanted: Iterable[str]) -> ModuleSet:
    """The wanted modules, everything they depend on and their soft dependencies (a soft dependency may be an
    alias: every module providing it is shipped); a wanted name that is neither a module nor built in is an error
    naming every such name (the recipe or the catalog asks for a driver this kernel does not have)."""
    files: dict[str, None] = {}
    loadable, builtin, missing = set(), set(), []
    pre: dict[str, None] = {}
    unresolved: set[str] = set()
    firmware: set[str] = set()

    def add(path: str) -> None:
        todo = [path]
        while todo:
            path = todo.pop()
            if path in files:
                continue
            files[path] = None
            todo.extend(tree.deps.get(path, ()))
            for key, value in modinfo((tree.root / path).read_bytes()):
                if key == "firmware":
                    firmware.add(value)
                elif key == "softdep":
                    soft = softdeps(value)
                    for name in soft["pre"] + soft["post"]:
                        providers = [m for m in tree.aliases.get(name, (norm(name),)) if m in tree.by_name]
                        if not providers:
                            unresolved.add(name)
                        todo.extend(tree.by_name[m] for m in providers)
                        if name in soft["pre"]:
                            pre.update(dict.fromkeys(providers))

    for name in wanted:
        n = norm(name)
        if n in tree.by_name:
            loadable.add(n)
            add(tree.by_name[n])
        elif n in tree.builtin:
            builtin.add(n)
        else:
            missing.append(name)
    if missing:
        raise ModuleError(
            f"kernel modules neither loadable nor built into {tree.root.name}: {', '.join(sorted(missing))}"
        )
    return ModuleSet(
        tuple(sorted(files)),
        frozenset(loadable),
        frozenset(builtin),
        tuple(pre),
        tuple(sorted(unresolved)),
        tuple(sorted(firmware)),
    )


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
