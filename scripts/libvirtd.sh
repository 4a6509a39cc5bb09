#!/usr/bin/env bash
# Make a local libvirtd (qemu:///system) available for the tests that define and start real domains.
# Idempotent: installs what is missing, configures once, starts the daemons only if they are not running.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh
sudo=""
[[ "$(id -u)" == 0 ]] || sudo="sudo"

packages=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libxml2-utils qemu-system-x86 qemu-utils dnsmasq-base
          iptables ovmf swtpm swtpm-tools)
ensure_packages "${packages[@]}"

# QEMU as root: with the default libvirt-qemu user, /dev/kvm (root-only in containers) is usable for the
# capability probe but not for guests, the cached capabilities never validate, and every define re-probes QEMU
# (30-70 s each, measured here).
conf=/etc/libvirt/qemu.conf
if ! grep -q '^# oemkit: qemu as root' "$conf"; then
    printf '\n# oemkit: qemu as root\nuser = "root"\ngroup = "root"\n' | $sudo tee -a "$conf" >/dev/null
    restart=1
fi

running() { pgrep -x "$1" >/dev/null; }
running virtlogd || $sudo virtlogd -d
if running libvirtd && [[ "${restart:-0}" == 1 ]]; then
    $sudo kill "$(pgrep -x libvirtd)"
    for _ in $(seq 50); do running libvirtd || break; sleep 0.1; done
fi
running libvirtd || $sudo libvirtd -d
for _ in $(seq 100); do
    [[ -S /var/run/libvirt/libvirt-sock ]] && virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
    sleep 0.2
done
echo "libvirtd: did not come up" >&2
exit 1
