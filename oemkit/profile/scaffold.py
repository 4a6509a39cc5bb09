"""`profile init`: a commented profile for one catalog model that validates as written."""

from __future__ import annotations

import secrets

from oemkit.catalog.schema import HardwareModel
from oemkit.hardware.disks import main_interface

_CRYPT64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def locked_hash() -> str:
    """A well-formed SHA-512 crypt string with a random digest: no password matches it, so nothing ships with a
    known default password, and the scaffold still validates until the author puts the real hash in."""
    salt = "".join(secrets.choice(_CRYPT64) for _ in range(16))
    digest = "".join(secrets.choice(_CRYPT64) for _ in range(86))
    return f"$6${salt}${digest}"


def scaffold(model: HardwareModel, name: str) -> str:
    ports = [p for p in model.nics if not p.optional] or model.nics
    uplinks = ports[:2]
    bays = max(model.storage.bays, key=lambda b: b.count)
    interface = main_interface(model)  # what `facts from-dmi` and the twin give a box of this model by default
    two = len(uplinks) > 1
    select = "\n".join(
        f"        - {{port: {p.id}}}    # {p.controller}, {p.speed_mbps} Mb/s {p.media}" for p in uplinks
    )
    return f"""\
# Appliance profile for {model.vendor} {model.family} {model.model} ({model.id}).
# Reference: docs/profile-reference.md. Check it with: oemkit profile validate THIS_FILE
# Editor support: oemkit profile schema > oemkit-profile.schema.json, then point your YAML plugin at it.
apiVersion: oemkit/v1
kind: ApplianceProfile
metadata:
  name: {name}
  description: Describe what this appliance is for
models: [{model.id}]

host:
  hostname: "{name[:12]}-{{site}}-{{serial}}"   # placeholders: {{site}}, {{serial}}, {{model}}
  # timezone: Europe/Berlin               # usually set per site, in profiles/sites/*.yaml
  ntp: [0.pool.ntp.org, 1.pool.ntp.org]
  dns:
    servers: [9.9.9.9]

network:
  management:
    uplinks:
      select:                             # rules in order of preference; ports by catalog id
{select}
      count: {len(uplinks)}
{"    bond: active-backup" if two else "    # bond: active-backup              # needed when count > 1"}
    # vlan: 100
    # address: dhcp                       # or {{address: 10.0.0.10/24, gateway: 10.0.0.1}}; usually per site
  guest:
    - {{name: lan, mode: bridge}}           # guests on the site LAN (add vlan: N to tag)

storage:
  # {model.id} bays: {bays.count} x {bays.size} ({", ".join(bays.interfaces)})
  datastore: {{interface: {interface}, count: 1}}
  layout: single                          # mirror / raid10 / stripe need 2 / 4 / 2 disks

security:
  admins:
    - name: admin
      # a random hash that matches no password: replace it (mkpasswd -m yescrypt) or use ssh_keys
      password_hash: "{locked_hash()}"
  ssh: true
  lockdown: normal
  require_secure_boot: {"true" if model.firmware.secure_boot else "false"}
  require_tpm: {"true" if model.firmware.tpm == "2.0" else "false"}

branding:
  oem_name: Your Company
  product: Your Appliance
  # support_url: https://support.example.com
  # banner: |
  #   Text shown on the console above the fixed "powered by oemkit core" line

workloads:
  vms: []                                 # e.g. - {{name: app, vcpus: 2, memory_mib: 4096, networks: [lan]}}

firstboot:
  on_hardware_mismatch: halt
  timeout_seconds: 900
"""
