"""Compile one unit: profile + site + serial → a sealed, signed UnitConfig (schema oemkit.unit/v1).

Everything the factory can resolve is resolved here (host name, site values, branding, workloads, the expected
SMBIOS identity); what only the box can answer stays a rule (which NIC is the uplink, which disks form the
datastore), with the catalog's knowledge of each candidate port attached. Same inputs → same bytes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypervisor_core import config as unit
from oemkit import __version__
from oemkit.catalog.schema import HardwareModel
from oemkit.catalog.store import Catalog
from oemkit.keys import raw_public
from oemkit.problems import Problem
from oemkit.profile.check import Checked, check
from oemkit.profile.lint import port_matches, render_hostname
from oemkit.profile.schema_v1 import ApplianceProfile


@dataclass
class Compiled:
    serial: str
    problems: list[Problem]
    document: dict[str, Any] | None = None

    def text(self) -> str:
        """The file as written: sorted keys, two-space indent, newline at the end — byte-stable."""
        return json.dumps(self.document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _port_ref(port: Any, model: HardwareModel) -> dict[str, Any]:
    addresses = [a for a in (port.pci_address, *port.alt_pci_addresses) if a]
    ref: dict[str, Any] = {"id": port.id, "pci_addresses": addresses, "driver": port.driver}
    if not addresses:
        siblings = [n for n in model.nics if not n.pci_address and not n.alt_pci_addresses and n.driver == port.driver]
        ref |= {"position": siblings.index(port), "of": len(siblings)}
    return ref


def _uplinks(p: ApplianceProfile, model: HardwareModel) -> dict[str, Any]:
    rules = []
    for rule in p.network.management.uplinks.select:
        ports = [_port_ref(n, model) for n in model.nics if port_matches(rule, n)]
        rules.append({"ports": ports, "min_speed_mbps": rule.min_speed_mbps, "link": rule.link})
    known = sorted(a for n in model.nics for a in (n.pci_address, *n.alt_pci_addresses) if a)
    return {"rules": rules, "count": p.network.management.uplinks.count, "model_addresses": known}


def build_document(p: ApplianceProfile, model: HardwareModel, site_code: str, serial: str) -> dict[str, Any]:
    mgmt = p.network.management
    address = (
        {"mode": "dhcp"}
        if mgmt.address == "dhcp"
        else {"mode": "static", "address": mgmt.address.address, "gateway": mgmt.address.gateway}
    )
    data = p.model_dump(mode="json")
    return {
        "schema": unit.SCHEMA,
        "serial": serial,
        "model": model.id,
        "site": site_code,
        "profile": p.metadata.name,
        "compiled_by": f"oemkit {__version__}",
        "identity": {
            "manufacturers": list(model.identity.manufacturers),
            "product_names": list(model.identity.product_names),
            "machine_types": list(model.identity.machine_types),
        },
        "host": {
            "hostname": render_hostname(p.host.hostname, site_code, serial, model.id),
            "timezone": p.host.timezone,
            "ntp": list(p.host.ntp),
            "dns": data["host"]["dns"],
        },
        "management": {"uplinks": _uplinks(p, model), "address": address, "bond": mgmt.bond, "vlan": mgmt.vlan},
        "networks": data["network"]["guest"],
        "storage": {"datastore": data["storage"]["datastore"], "layout": p.storage.layout, "pool": p.storage.pool},
        "security": data["security"],
        "branding": data["branding"],
        "workloads": data["workloads"]["vms"],
        "firstboot": data["firstboot"],
        "phone_home": data["management"]["phone_home"],
    }


def seal(document: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """Add the content id and the Ed25519 signature over everything else."""
    doc = {k: v for k, v in document.items() if k not in ("content_id", "signed_by", "signature")}
    doc["content_id"] = unit.content_id(doc)
    doc["signed_by"] = unit.key_id(raw_public(key))
    doc["signature"] = "ed25519:" + base64.b64encode(key.sign(unit.signed_bytes(doc))).decode()
    unit.from_dict(doc)  # the agent's own strict reader must accept what we wrote
    return doc


def compile_unit(
    profile: Path,
    site: Path,
    serial: str,
    key: Ed25519PrivateKey,
    catalog: Catalog,
    model_id: str | None = None,
    unit_file: Path | None = None,
) -> Compiled:
    checked: Checked = check(profile, site, serial, catalog.root, unit_file, catalog=catalog)
    res = checked.resolved
    if res.errors or res.profile is None or res.site is None:
        return Compiled(serial, res.errors or res.problems)
    p = res.profile
    if model_id is None and len(p.models) > 1:
        return Compiled(
            serial,
            [
                _problem(
                    res,
                    ("models",),
                    f"the profile targets {', '.join(p.models)}: "
                    "say which with --model (or a model column in the order)",
                )
            ],
        )
    model_id = model_id or p.models[0]
    if model_id not in p.models:
        return Compiled(serial, [_problem(res, ("models",), f"{model_id} is not one of this profile's models")])
    model = catalog.get(model_id)
    assert model is not None  # lint has checked every listed model exists
    try:
        document = seal(build_document(p, model, res.site.site.code, serial), key)
    except unit.ConfigError as exc:
        return Compiled(serial, [_problem(res, (), f"the sealed config would be refused on the box: {exc}")])
    return Compiled(serial, [], document)


def _problem(res: Any, path: tuple[str, ...], message: str) -> Problem:
    from oemkit.problems import format_path
    from oemkit.profile.layers import locate

    o = locate(res.origins, path)
    return Problem(o.file, o.line, o.column, format_path(path), message)
