"""Debian packages the core rebuilds from their own bookworm source with one declared change each
(recipe.REBUILDS): libxml2 without ICU, dnsmasq without the features libvirt never asks for.

One mmdebstrap run makes a throwaway buildd chroot from the recipe's mirrors (deb-src lines added), installs the
build dependencies, unpacks the exact source version of the package that the userland stage holds, applies the
recipe's edits here (each must match exactly as often as declared: a new Debian revision that moved the line fails
the build instead of quietly shipping ICU again), adds a changelog entry with a local version suffix and the
previous entry's date, builds, and copies the .debs out. They are unpacked into an overlay that the selector reads
before the stage, so the closure simply never reaches what the rebuilt package no longer links. Cached under
cache/rebuilt/<key>, the key made of the suite, mirrors, recipe entries and the source versions."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from oemkit.image import buildcache
from oemkit.image.core import elf
from oemkit.image.core.debian import Userland
from oemkit.image.core.recipe import REBUILDS, Rebuild
from oemkit.image.tools import BuildError, run_tool

SCRIPT = Path(__file__).resolve().parent / "files" / "rebuild.sh"
LOCAL_SUFFIX = "+oemkit1"
MAINTAINER = "oemkit core build <core-build@oemkit.invalid>"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Overlay:
    """The rebuilt packages unpacked: `root` shadows the stage; `packages` name=version replace the staged ones."""

    root: Path | None  # None: the recipe rebuilds nothing
    packages: dict[str, str]  # binary package -> its rebuilt version
    records: tuple[dict, ...]  # per rebuild: source, version, change, each .deb's name and sha256

    def apply(self, packages: tuple[str, ...]) -> tuple[str, ...]:
        """The stage's name=version list with the rebuilt packages' versions in place of the staged ones."""
        out = [f"{n}={self.packages[n]}" if n in self.packages else p for p in packages for n in [p.split("=")[0]]]
        return tuple(sorted(out))


def source_version(userland: Userland, binary: str) -> tuple[str, str]:
    """The source package and version the staged binary package was built from."""
    staged = [p.split("=", 1)[1] for p in userland.packages if p.split("=", 1)[0] == binary]
    if len(staged) != 1:
        raise BuildError(f"the recipe rebuilds {binary}, but the userland stage does not hold it")
    debs = list((userland.root / "var/cache/apt/archives").glob(f"{binary}_*.deb"))
    if len(debs) != 1:
        raise BuildError(f"the stage has {len(debs)} .debs of {binary}, expected one")
    fields = run_tool(["dpkg-deb", "-f", str(debs[0]), "Source"], what="dpkg-deb -f", text=True).stdout.strip()
    match = re.fullmatch(r"([a-z0-9][a-z0-9+.-]*)(?: \(([^)]+)\))?", fields or binary)
    if match is None:
        raise BuildError(f"{debs[0].name}: unreadable Source field {fields!r}")
    return match.group(1), match.group(2) or staged[0]


def key(suite: str, mirrors: str, wanted: list[tuple[Rebuild, str]]) -> str:
    """Everything the .debs depend on that is ours: the recipe entries, the source versions and the code that
    drives the build (this module, the edits, the script in the chroot). The buildd chroot's toolchain comes from
    the mirror at build time, as the userland does (pin a snapshot.debian.org date to rebuild an old core)."""
    code = [Path(__file__).read_bytes(), (Path(__file__).parent / "srcedit.py").read_bytes(), SCRIPT.read_bytes()]
    doc = [suite, mirrors, [[asdict(r), v] for r, v in wanted], [hashlib.sha256(c).hexdigest() for c in code]]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def rebuild(root: Path, suite: str, mirrors: str, userland: Userland, log: Callable[[str], None]) -> Overlay:
    wanted = []
    for spec in REBUILDS:
        source, version = source_version(userland, spec.binaries[0])
        if source != spec.source:
            raise BuildError(f"{spec.binaries[0]} is built from {source}, the recipe says {spec.source}")
        wanted.append((spec, version))
    if not wanted:
        return Overlay(None, {}, ())
    final = root / "rebuilt" / key(suite, mirrors, wanted)
    if not final.is_dir():
        log(f"rebuilding from source: {', '.join(f'{s.source}={v}' for s, v in wanted)} (minutes, once)")
        with buildcache.building(final) as tmp:
            _build(tmp, suite, mirrors, wanted)
            _unpack(tmp, wanted)
    doc = json.loads((final / "rebuilt.json").read_text())
    check_overlay(final / "root", userland.root)
    return Overlay(final / "root", doc["packages"], tuple(doc["records"]))


def check_overlay(overlay: Path, stage: Path) -> None:
    """The overlay shadows the stage path by path, so a folder of a rebuilt package where the stage has a link
    (merged /usr: /lib -> usr/lib) would hide the link and strand the files behind it: refused, not guessed."""
    for path in sorted(overlay.rglob("*")):
        staged = stage / path.relative_to(overlay)
        if path.is_dir() and not path.is_symlink() and staged.is_symlink():
            where = path.relative_to(overlay)
            raise BuildError(f"the rebuilt packages have a folder /{where} where the stage has a link")


def _build(tmp: Path, suite: str, mirrors: str, wanted: list[tuple[Rebuild, str]]) -> None:
    sources = mirrors + "".join(f"deb-src {line[4:]}\n" for line in mirrors.splitlines() if line.startswith("deb "))
    plan = tmp / "edits.json"
    plan.write_text(json.dumps([{"source": s.source, "edits": s.edits, "why": s.why} for s, _ in wanted]))
    inside = "/usr/local/sbin/oemkit-rebuild"
    # the build sees a fixed environment, never the caller's (DEB_BUILD_PROFILES, *FLAGS, MAKEFLAGS, tokens)
    run = f'chroot "$1" env -i PATH={CHROOT_PATH} sh {inside}'
    q = shlex.quote
    hooks = [f"copy-in {q(str(SCRIPT))} /usr/local/sbin", f'mv "$1/usr/local/sbin/{SCRIPT.name}" "$1{inside}"']
    for spec, version in wanted:
        hooks.append(f"{run} prepare {q(spec.source)} {q(version)} {q(spec.profiles)}")
    # the edits are applied from here, in Python, so a recipe line that no longer matches is a located error
    hooks.append(f'{q(sys.executable)} -m oemkit.image.core.srcedit "$1" {q(str(plan))}')
    for spec, _ in wanted:
        options = " ".join(["nocheck", "nodoc", *spec.build_options])
        hooks.append(f"{run} build {q(spec.source)} {q(options)} {q(spec.profiles)}")
    hooks.append(f"copy-out /build/out {q(str(tmp))}")
    cmd = ["mmdebstrap", "--quiet", "--mode=root", "--variant=buildd", '--aptopt=APT::Install-Recommends "false"']
    cmd += [f"--customize-hook={h}" for h in hooks]
    run_tool([*cmd, suite, "/dev/null", "-"], what="rebuilding packages from source", input=sources.encode())


def _unpack(tmp: Path, wanted: list[tuple[Rebuild, str]]) -> None:
    packages: dict[str, str] = {}
    records = []
    for spec, version in wanted:
        debs = []
        for binary in spec.binaries:
            new = f"{version}{LOCAL_SUFFIX}"
            deb = tmp / "out" / f"{binary}_{new.split(':', 1)[-1]}_amd64.deb"
            if not deb.is_file():
                raise BuildError(f"the rebuild of {spec.source} made no {deb.name}")
            run_tool(["dpkg-deb", "-x", str(deb), str(tmp / "root")], what=f"dpkg-deb -x {deb.name}")
            packages[binary] = new
            debs.append({"name": deb.name, "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()})
        records.append({"source": spec.source, "version": version, "rebuilt": f"{version}{LOCAL_SUFFIX}",
                        "why": spec.why, "edits": spec.edits, "build_options": list(spec.build_options),
                        "debs": debs})  # fmt: skip
        _check_dropped(tmp / "root", spec)
    (tmp / "rebuilt.json").write_text(json.dumps({"packages": packages, "records": records}, indent=1))
    (tmp / "edits.json").unlink()  # the .debs stay in out/: the manifest's hashes name them


def _check_dropped(root: Path, spec: Rebuild) -> None:
    """The change took: no ELF file of the rebuilt packages still links a library the rebuild exists to drop."""
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if not elf.is_elf(data[:4]):
            continue
        still = [n for n in elf.deps(data).needed if n.startswith(spec.drops)]
        if still:
            raise BuildError(f"the rebuilt {spec.source} still links {', '.join(still)} ({path.name})")
