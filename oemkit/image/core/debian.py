"""Getting the Debian packages: one mmdebstrap --variant=extract of the userland and the kernel from the recipe's
mirrors (cached under a key made of its inputs, with the versions that went in), and the kernel unpacked with the
index of its modules. A cached stage keeps its versions until `--refresh` resolves them again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from oemkit.image import buildcache
from oemkit.image.core import kmod
from oemkit.image.tools import BuildError, run_tool


@dataclass(frozen=True)
class Kernel:
    package: str  # linux-image-6.1.0-56-amd64
    version: str  # 6.1.192-2
    root: Path  # the extracted package, with a full modules.dep

    @property
    def abi(self) -> str:
        return self.package[len("linux-image-") :]

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.abi}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.abi

    def __str__(self) -> str:
        return f"{self.package}={self.version}"


def staged_kernel(userland: Userland, flavour: str) -> tuple[str, str, Path]:
    """The kernel package mmdebstrap staged for linux-image-<flavour> (from the recipe's mirrors, resolved with the
    userland, never from this host's apt sources): its name, version and .deb."""
    suffix = f"-{flavour}"
    found = [
        p.split("=", 1)
        for p in userland.packages
        if p.startswith("linux-image-") and p.split("=", 1)[0].endswith(suffix) and p[12:13].isdigit()
    ]
    if len(found) != 1:
        raise BuildError(f"the stage holds {len(found)} kernel packages for linux-image-{flavour}, expected one")
    package, version = found[0]
    deb = userland.root / "var/cache/apt/archives" / f"{package}_{version.replace(':', '%3a')}_amd64.deb"
    if not deb.is_file():
        raise BuildError(f"the stage has no {deb.name}")
    return package, version, deb


def fetch_kernel(root: Path, package: str, version: str, deb: Path, busybox: Path) -> Kernel:
    """The kernel package (a .deb the userland stage fetched) unpacked under root/kernel/<package>_<version>, with
    busybox depmod's index of all its modules."""
    final = root / "kernel" / f"{package}_{version}"
    kernel = Kernel(package, version, final)
    if final.is_dir():
        return kernel
    with buildcache.building(final) as tmp:
        run_tool(["dpkg-deb", "-x", str(deb), str(tmp)], what=f"dpkg-deb -x {deb.name}")
        kmod.depmod(busybox, tmp, package[len("linux-image-") :])
        if not (tmp / "boot" / f"vmlinuz-{kernel.abi}").is_file():
            raise BuildError(f"{deb.name} has no boot/vmlinuz-{kernel.abi}")
    return kernel


@dataclass(frozen=True)
class Userland:
    root: Path  # the extracted packages
    packages: tuple[str, ...]  # name=version of every package staged, sorted


def userland_key(suite: str, mirrors: str, packages: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps([suite, mirrors, sorted(packages)]).encode()).hexdigest()[:16]


def stage_userland(root: Path, suite: str, mirrors: str, packages: tuple[str, ...], refresh: bool = False) -> Userland:
    """mmdebstrap --variant=extract of `packages` and their dependencies (no recommends), debs kept, under
    root/stage/<key>; the versions staged are listed in its .manifest."""
    final = root / "stage" / userland_key(suite, mirrors, packages)
    old = final.with_name(final.name + ".old")
    if refresh and final.is_dir():  # the mirrors' current versions (security updates); the old stage until then
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    try:
        _stage(final, suite, mirrors, packages)
    except BaseException:
        if old.is_dir() and not final.is_dir():
            os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return Userland(final, tuple((final / ".manifest").read_text().split()))


def _stage(final: Path, suite: str, mirrors: str, packages: tuple[str, ...]) -> None:
    if not final.is_dir():
        with buildcache.building(final) as tmp:
            run_tool(
                [
                    "mmdebstrap",
                    "--quiet",
                    "--mode=root",
                    "--variant=extract",
                    '--aptopt=APT::Install-Recommends "false"',
                    "--skip=essential/unlink,cleanup/apt/cache",
                    "--include=" + ",".join(packages),
                    suite,
                    str(tmp),
                    "-",
                ],
                what="mmdebstrap",
                input=mirrors.encode(),
            )
            versions = []
            for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):
                fields = run_tool(["dpkg-deb", "-f", str(deb), "Package", "Version"], what="dpkg-deb -f", text=True)
                info = dict(line.split(": ", 1) for line in fields.stdout.strip().splitlines())
                versions.append(f"{info['Package']}={info['Version']}")
            (tmp / ".manifest").write_text("\n".join(sorted(versions)) + "\n")
