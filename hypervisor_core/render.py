"""libvirt XML for the objects first boot defines: networks, storage pools, volumes, domains. Pure functions.

Everything that libvirt would otherwise invent (UUIDs, MAC addresses, bridge names) is derived from the unit's
serial and the object's name, so a rerun defines byte-identical XML and "define" stays idempotent.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from xml.etree import ElementTree as ET

from hypervisor_core.config import GuestNetwork, Workload

NS = "https://oemkit.dev/xmlns/unit/v1"
_UUID_NS = uuid.UUID("6f3c1a52-8d0e-4c1b-9a51-0e5b3f7c2d10")


def object_uuid(serial: str, kind: str, name: str) -> str:
    return str(uuid.uuid5(_UUID_NS, f"{serial}/{kind}/{name}"))


def _mac(key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])  # QEMU's locally administered prefix


def mac_address(serial: str, vm: str, network: str, index: int) -> str:
    return _mac(f"{serial}/{vm}/{network}/{index}")


def bridge_mac(serial: str, network: str) -> str:
    """A NAT or isolated network's own bridge MAC: libvirt invents a random one at every define otherwise, and a
    rerun's identical definition would then count as a change."""
    return _mac(f"{serial}/network/{network}")


def bridge_name(network: str) -> str:
    """Linux interface names are at most 15 characters; keep short names readable, hash long ones."""
    name = f"ok-{network}"
    if len(name) <= 15:
        return name
    return f"ok-{network[:6]}-{hashlib.sha256(network.encode()).hexdigest()[:5]}"


def volume_name(vm: str, disk: str) -> str:
    return f"{vm}-{disk}.img"  # qcow2 or raw, as its image is; the name does not say


def _xml(root: ET.Element) -> str:
    ET.indent(root, "  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def network_xml(net: GuestNetwork, serial: str) -> str:
    root = ET.Element("network")
    ET.SubElement(root, "name").text = net.name
    ET.SubElement(root, "uuid").text = object_uuid(serial, "network", net.name)
    if net.mode == "bridge":
        # The host config builds this bridge on the management uplinks (tagged when vlan is set) at every boot.
        ET.SubElement(root, "forward", mode="bridge")
        ET.SubElement(root, "bridge", name=bridge_name(net.name))
        return _xml(root)
    if net.mode == "nat":
        ET.SubElement(root, "forward", mode="nat")
    ET.SubElement(root, "bridge", name=bridge_name(net.name), stp="on", delay="0")
    ET.SubElement(root, "mac", address=bridge_mac(serial, net.name))
    cidr = ipaddress.ip_network(net.cidr or "")
    hosts = list(cidr.hosts()) if cidr.num_addresses <= 65536 else None
    gateway = next(cidr.hosts())
    ip = ET.SubElement(root, "ip", address=str(gateway), prefix=str(cidr.prefixlen))
    if hosts and len(hosts) > 10:
        dhcp = ET.SubElement(ip, "dhcp")
        ET.SubElement(dhcp, "range", start=str(hosts[9]), end=str(hosts[-1]))
    return _xml(root)


def pool_xml(name: str, path: str, serial: str) -> str:
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "uuid").text = object_uuid(serial, "pool", name)
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "path").text = path
    return _xml(root)


def volume_xml(name: str, size_gib: int, fmt: str = "qcow2") -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="GiB").text = str(size_gib)
    ET.SubElement(root, "allocation").text = "0"
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=fmt)
    return _xml(root)


def domain_xml(vm: Workload, pool: str, serial: str, content_id: str, domain_type: str) -> str:
    root = ET.Element("domain", type=domain_type)
    ET.SubElement(root, "name").text = vm.name
    ET.SubElement(root, "uuid").text = object_uuid(serial, "domain", vm.name)
    meta = ET.SubElement(root, "metadata")
    ET.register_namespace("oemkit", NS)
    ET.SubElement(meta, f"{{{NS}}}unit", serial=serial, content_id=content_id, start_order=str(vm.start_order))
    ET.SubElement(root, "memory", unit="MiB").text = str(vm.memory_mib)
    ET.SubElement(root, "vcpu", placement="static").text = str(vm.vcpus)
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_el, "boot", dev="hd")
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if domain_type == "kvm":
        ET.SubElement(root, "cpu", mode="host-passthrough")
    ET.SubElement(root, "on_poweroff").text = "destroy"
    ET.SubElement(root, "on_reboot").text = "restart"
    ET.SubElement(root, "on_crash").text = "destroy"
    devices = ET.SubElement(root, "devices")
    for i, disk in enumerate(vm.disks):
        el = ET.SubElement(devices, "disk", type="volume", device="disk")
        ET.SubElement(el, "driver", name="qemu", type=disk.source.format if disk.source else "qcow2")
        ET.SubElement(el, "source", pool=pool, volume=volume_name(vm.name, disk.name))
        ET.SubElement(el, "target", dev=f"vd{chr(ord('a') + i)}", bus="virtio")
    for i, net in enumerate(vm.networks):
        el = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(el, "mac", address=mac_address(serial, vm.name, net, i))
        ET.SubElement(el, "source", network=net)
        ET.SubElement(el, "model", type="virtio")
        # workloads boot from their disks: no iPXE option ROM (the core does not ship one: 165 kB of its 32 MiB)
        ET.SubElement(el, "rom", enabled="no")
    serial_el = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial_el, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "memballoon", model="virtio")
    return _xml(root)
