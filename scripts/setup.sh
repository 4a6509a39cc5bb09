#!/usr/bin/env bash
# Set up oemkit on a fresh Debian 12 machine: system packages, a virtual environment in .venv, the package.
#   bash scripts/setup.sh          runtime only (enough for the demo)
#   bash scripts/setup.sh --dev    plus the test tools
# Idempotent and quick when everything is already there, so CI and people can run it every time.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh

lock=requirements.lock
[[ "${1:-}" == "--dev" ]] && lock=requirements-dev.lock

# libvirt-python builds from source: it needs libvirt's headers, pkg-config and a compiler.
packages=(gcc pkg-config libvirt-dev)
# oemkit core build: mmdebstrap stages the Debian packages; xz and zstd compress the initrd parts.
packages+=(mmdebstrap xz-utils zstd)
# oemkit boot: QEMU runs the core on a unit's twin; mkfs.ext4 makes its state disk.
packages+=(qemu-system-x86 e2fsprogs)
# The appliance: OVMF (the variable store template of keys enroll-vars, the twin's UEFI firmware); the UKI from
# systemd-boot's stub (objcopy), signed by osslsigncode and checked by sbverify; its ESP and GPT by mtools,
# dosfstools and gdisk, without root or loop devices.
packages+=(ovmf systemd-boot-efi binutils osslsigncode sbsigntool mtools dosfstools gdisk)
# The appliance's twin: its TPM 2.0 (swtpm), the image behind a throwaway overlay (qemu-img).
packages+=(swtpm swtpm-tools qemu-utils)
# The provisioning service's tests (--dev) run on PostgreSQL too: pg_virtualenv (postgresql-common) starts a
# throw-away cluster of the server (postgresql-15) for the test session.
[[ "$lock" == requirements-dev.lock ]] && packages+=(postgresql-common postgresql-15)
# The tests' other real parts (--dev): a real browser reads the fleet page (chromium); busybox's udhcpc leases an
# address from dnsmasq across two network namespaces (the core's DHCP client, tested on this machine).
[[ "$lock" == requirements-dev.lock ]] && packages+=(chromium busybox dnsmasq-base)
python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
python3 - <<'PY' 2>/dev/null || packages+=(python3-dev)
import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
PY
ensure_packages "${packages[@]}"

[[ -x .venv/bin/python ]] || python3 -m venv .venv
# Install the exact versions of the lock, then the project itself without re-resolving.
stamp=".venv/.installed-$(sha256sum "$lock" pyproject.toml | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$lock"
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# `oemkit boot` and `oemkit burnin` run twins through libvirt (and the tests define real domains): a local libvirtd.
bash scripts/libvirtd.sh
echo "setup: ready ($(.venv/bin/oemkit --version))" >&2
