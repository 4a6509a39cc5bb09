"""Getting the Debian packages: the kernel (apt-get download + dpkg-deb -x) and the userland (mmdebstrap
--variant=extract), each cached under a key made of its inputs, and the versions that went in."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oemkit.core import cache
from oemkit.errors import OemkitError

# Build tools are looked up here, not in the caller's PATH (a sudo or cron PATH may lack /usr/sbin).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHROOT = "/usr/sbin/chroot"


class BuildError(OemkitError):
    """A build step failed (a tool, the network, the archive)."""


def run(cmd: list[str], *, what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a build tool; on failure a BuildError naming the step and the end of its stderr, never a traceback."""
    kwargs.setdefault("capture_output", True)
    env = kwargs.pop("env", None) or {**os.environ, "PATH": PATH, "LC_ALL": "C.UTF-8"}
    try:
        done = subprocess.run(cmd, env=env, check=False, **kwargs)
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} not found") from None
    if done.returncode != 0:
        err = done.stderr if isinstance(done.stderr, str) else (done.stderr or b"").decode(errors="replace")
        tail = " | ".join(line for line in err.strip().splitlines()[-4:])
        raise BuildError(f"{what} failed (exit {done.returncode}): {tail or 'no message'}")
    return done


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


def resolve_kernel(flavour: str) -> tuple[str, str]:
    """linux-image-<flavour> → the ABI package it depends on and that package's candidate version."""
    meta = f"linux-image-{flavour}"
    out = run(["apt-cache", "depends", meta], what=f"apt-cache depends {meta}", text=True).stdout
    pkg = next(
        (
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.strip().startswith(("Depends: linux-image-", "|Depends: linux-image-"))
        ),
        None,
    )
    if pkg is None:
        raise BuildError(f"{meta} depends on no linux-image package (apt-get update?)")
    policy = run(["apt-cache", "policy", pkg], what=f"apt-cache policy {pkg}", text=True).stdout
    version = next((line.split(":", 1)[1].strip() for line in policy.splitlines() if "Candidate:" in line), "")
    if not version or version == "(none)":
        raise BuildError(f"{pkg} has no installable version (apt-get update?)")
    return pkg, version


def fetch_kernel(root: Path, package: str, version: str, busybox: Path) -> Kernel:
    """The kernel package unpacked under root/kernel/<package>_<version>, with busybox depmod's index of all its
    modules; the .deb is kept in root/debs."""
    from oemkit.core import kmod

    final = root / "kernel" / f"{package}_{version}"
    kernel = Kernel(package, version, final)
    if final.is_dir():
        return kernel
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = debs / f"{package}_{version.replace(':', '%3a')}_amd64.deb"
    if not deb.is_file():
        tmp = cache.tmp_name(deb)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            run(["apt-get", "download", "-q", f"{package}={version}"], what=f"apt-get download {package}", cwd=tmp)
            got = list(tmp.glob("*.deb"))
            if len(got) != 1:
                raise BuildError(f"apt-get download {package}={version} gave {len(got)} files")
            os.replace(got[0], deb)  # complete, or not there at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with cache.building(final) as tmp:
        run(["dpkg-deb", "-x", str(deb), str(tmp)], what=f"dpkg-deb -x {deb.name}")
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


def stage_userland(root: Path, suite: str, mirrors: str, packages: tuple[str, ...]) -> Userland:
    """mmdebstrap --variant=extract of `packages` and their dependencies (no recommends), debs kept, under
    root/stage/<key>; the versions staged are listed in its .manifest."""
    final = root / "stage" / userland_key(suite, mirrors, packages)
    if not final.is_dir():
        with cache.building(final) as tmp:
            run(
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
                fields = run(["dpkg-deb", "-f", str(deb), "Package", "Version"], what="dpkg-deb -f", text=True)
                info = dict(line.split(": ", 1) for line in fields.stdout.strip().splitlines())
                versions.append(f"{info['Package']}={info['Version']}")
            (tmp / ".manifest").write_text("\n".join(sorted(versions)) + "\n")
    return Userland(final, tuple((final / ".manifest").read_text().split()))
