"""In-guest self-test of the core prototype: SMBIOS, NICs, disks, libvirt (define network/pool/domain)."""
import json
import os
import sys
import time
import xml.etree.ElementTree as ET


def up():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


T = {"python_start": up()}


def read(p, default=None):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return default


def pci_of(devpath):
    """PCI address (dddd:bb:ss.f) nearest to a sysfs device path."""
    real = os.path.realpath(devpath)
    addr = None
    for comp in real.split("/"):
        if len(comp) == 12 and comp[4] == ":" and comp[7] == ":" and comp[10] == ".":
            addr = comp
    return addr


res = {}
res["dmi"] = {k: read(f"/sys/class/dmi/id/{k}") for k in (
    "sys_vendor", "product_name", "product_serial", "product_uuid", "product_sku", "product_family",
    "board_vendor", "board_name", "chassis_vendor", "chassis_serial", "bios_vendor")}
nics = []
for n in sorted(os.listdir("/sys/class/net")):
    if n == "lo" or not os.path.isdir(f"/sys/class/net/{n}"):
        continue
    d = f"/sys/class/net/{n}"
    nics.append({"name": n, "mac": read(f"{d}/address"), "pci": pci_of(f"{d}/device"),
                 "driver": os.path.basename(os.path.realpath(f"{d}/device/driver"))})
res["nics"] = nics


def vpd80(d):
    """Unit serial number of a SCSI disk from VPD page 0x80."""
    try:
        with open(f"{d}/device/vpd_pg80", "rb") as f:
            b = f.read()
        return b[4:4 + b[3]].decode().strip()
    except OSError:
        return None

disks = []
for b in sorted(os.listdir("/sys/block")):
    d = f"/sys/block/{b}"
    if b.startswith(("loop", "ram")):
        continue
    disks.append({"name": b, "bytes": int(read(f"{d}/size", "0")) * 512, "pci": pci_of(f"{d}/device"),
                  "serial": read(f"{d}/serial") or vpd80(d),
                  "model": read(f"{d}/device/model"), "bus": "scsi" if b.startswith(("sd", "sr")) else "virtio-blk"})
res["disks"] = disks
res["dev_kvm"] = os.path.exists("/dev/kvm")
T["facts"] = up()

import libvirt  # noqa: E402

T["import_libvirt"] = up()
conn = libvirt.open("qemu:///system")
T["open"] = up()
caps = ET.fromstring(conn.getCapabilities())
dtypes = sorted({d.get("type") for d in caps.findall("./guest/arch[@name='x86_64']/domain")})
res["libvirt"] = {"version": conn.getLibVersion(), "uri": conn.getURI(), "x86_64_domain_types": dtypes,
                  "hypervisor_version": conn.getVersion()}
T["caps"] = up()

net = conn.networkDefineXML("<network><name>mgmt</name><bridge name='br-mgmt'/></network>")
pool = conn.storagePoolDefineXML("<pool type='dir'><name>datastore</name><target><path>/var/lib/libvirt/images"
                                 "</path></target></pool>")
vtype = "kvm" if "kvm" in dtypes else "qemu"
dom_xml = f"""<domain type='{vtype}'>
  <name>proto-vm</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <sysinfo type='smbios'><system><entry name='manufacturer'>oemkit</entry></system></sysinfo>
  <os><type arch='x86_64' machine='pc'>hvm</type><smbios mode='sysinfo'/></os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='scsi' model='virtio-scsi'/>
    <interface type='network'><source network='mgmt'/><model type='virtio'/></interface>
    <serial type='pty'/>
  </devices>
</domain>"""
dom = conn.defineXMLFlags(dom_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
res["defined"] = {"domain": dom.name(), "uuid": dom.UUIDString(), "type": vtype,
                  "networks": conn.listDefinedNetworks(), "pools": conn.listDefinedStoragePools()}
T["define"] = up()

if "core.start=1" in read("/proc/cmdline", ""):
    # Optional: actually start a nested domain (no NIC, so no bridge/dnsmasq needed), then destroy it.
    x = dom_xml.replace("<name>proto-vm</name>", "<name>proto-start</name>")
    x = x.replace("<interface type='network'><source network='mgmt'/><model type='virtio'/></interface>", "")
    d2 = conn.defineXML(x)
    try:
        d2.create()
        time.sleep(2)
        res["started"] = {"state": d2.state()[0], "running": d2.state()[0] == libvirt.VIR_DOMAIN_RUNNING}
        d2.destroy()
    except libvirt.libvirtError as e:
        res["started"] = {"error": str(e)}
    T["start"] = up()

try:  # the agent's modules load from sourceless .pyc (hypervisor_core is only in the core when built with --agent)
    import importlib
    import pkgutil
    import hypervisor_core
    names = sorted(i.name for i in pkgutil.walk_packages(hypervisor_core.__path__, "hypervisor_core.")
                   if not i.name.endswith("__main__"))
    for n in names:
        importlib.import_module(n)
    res["agent_modules"] = len(names)
except ImportError as e:
    res["agent_modules"] = f"ImportError: {e}"
T["agent_import"] = up()
res["uptime"] = T
print("OEMKIT-PROTO-OK " + json.dumps(res, sort_keys=True), flush=True)
