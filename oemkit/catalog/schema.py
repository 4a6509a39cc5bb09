"""The hardware catalog schema: one YAML file per real vendor server model, strict (unknown keys are errors)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hypervisor_core.facts import PCI_ADDRESS  # the catalog's addresses are compared with what the box reports
from hypervisor_core.identity import IdentitySpec

MODEL_ID = r"^(dell|hpe|lenovo)-[a-z0-9]+(?:-[a-z0-9]+)*$"
PORT_ID = r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*$"


class _Strict(BaseModel):
    # strict: "yes" is not true and "4" is not 4 here either — the catalog reads YAML as the profiles do
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, strict=True)


class Identity(_Strict):
    """What the machine writes into SMBIOS, exactly as the real machine reports it."""

    manufacturers: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="System manufacturer spellings this model reports (`Dell Inc.`, `HPE`, `LENOVO`)."
    )
    product_names: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        description="Product names without the Lenovo/IBM `-[MTM]-` suffix, e.g. `ThinkSystem SR650`.",
    )
    machine_types: list[Annotated[str, Field(pattern=r"^[0-9A-Z]{4}$")]] = Field(
        default_factory=list, description="Lenovo/IBM 4-character machine types (`7X06`); empty for other vendors."
    )
    family: str | None = Field(None, description="SMBIOS type 1 Family, where the vendor fills it in.")
    sku_example: str | None = Field(None, description="A real SKU Number string, for reference only.")

    def spec(self) -> IdentitySpec:
        return IdentitySpec(tuple(self.manufacturers), tuple(self.product_names), tuple(self.machine_types))


class Cpu(_Strict):
    sockets: int = Field(ge=1, le=8, description="CPU sockets on the board (SMBIOS type 4 count).")
    vendor: Literal["intel", "amd"]
    virtualization: Literal["vmx", "svm"]
    families: list[str] = Field(min_length=1, description="Processor families the model ships with.")
    max_cores_per_socket: int = Field(ge=1, le=256)

    @model_validator(mode="after")
    def _extension_matches_vendor(self) -> Cpu:
        if (self.vendor, self.virtualization) not in {("intel", "vmx"), ("amd", "svm")}:
            raise ValueError(
                f"{self.vendor} CPUs have {'vmx' if self.vendor == 'intel' else 'svm'}, not {self.virtualization}"
            )
        return self


class Memory(_Strict):
    type: Literal["DDR3", "DDR4", "DDR5"]
    dimm_slots: int = Field(ge=1, le=96, description="DIMM slots (SMBIOS type 16 Number Of Devices, summed).")
    max_gib: int = Field(
        ge=1,
        description=(
            "Most memory the platform takes: the larger of what the firmware declares (SMBIOS type 16 Maximum "
            "Capacity, summed) and the vendor's documented maximum."
        ),
    )
    supported_max_gib: int | None = Field(
        None, ge=1, description="The vendor's documented largest configuration, where it differs."
    )


class NicPort(_Strict):
    id: str = Field(pattern=PORT_ID, description="Stable port id first-boot rules refer to: LOM1, OCP-1, SLOT2-1.")
    kind: Literal["lom", "ndc", "flexlom", "ocp", "mezz", "pcie"] = Field(
        description=(
            "lom: on the board; ndc: Dell (rack) network daughter card; flexlom: HPE FlexibleLOM; "
            "ocp: OCP 3.0 card; mezz: a vendor mezzanine / OCP 2.0 slot; pcie: adapter in a PCIe slot."
        )
    )
    speed_mbps: int = Field(ge=10, description="Link speed in Mbit/s.")
    media: Literal["rj45", "sfp", "sfp+", "sfp28", "qsfp28"] = "rj45"
    driver: str = Field(pattern=r"^[a-z0-9_]+$", description="Linux kernel driver.")
    controller: str = Field(description="The Ethernet controller, e.g. `Broadcom BCM5720`.")
    smbios_designation: str | None = Field(None, description="Type 41 Reference Designation for embedded ports.")
    pci_address: str | None = Field(None, pattern=PCI_ADDRESS, description="PCI address the real machine reports.")
    alt_pci_addresses: list[Annotated[str, Field(pattern=PCI_ADDRESS)]] = Field(
        default_factory=list,
        description="Other addresses real units report for this port (bus numbers move with what else is fitted).",
    )
    optional: bool = Field(False, description="A factory option not on every unit (OCP/FlexibleLOM cards).")


class Bays(_Strict):
    count: int = Field(ge=0)
    size: Literal["2.5in", "3.5in", "E3.S", "none"]
    interfaces: list[Literal["sata", "sas", "nvme"]]


class Storage(_Strict):
    controllers: list[str] = Field(min_length=1, description="RAID/HBA options, e.g. `PERC H755`.")
    bays: list[Bays] = Field(min_length=1, description="Front/rear bay configurations the model is sold with.")


class BootDevice(_Strict):
    kind: Literal["idsdm", "sd", "boss", "m2", "usb", "microsd", "nvme"]
    name: str
    capacities_gib: list[int] = Field(default_factory=list)
    raid1: bool = False
    host_raid: bool = Field(
        False,
        description="Mirrored by the host's software RAID (Intel VROC), not a controller: the OS sees each drive, "
        "and the core (no mdadm) cannot assemble the mirror, so no state may live on it.",
    )


class Bmc(_Strict):
    kind: Literal["iDRAC", "iLO", "XCC", "IMM", "BMC"]
    version: str
    redfish: bool


class SmbiosQuirk(_Strict):
    """A type 41 on-board device entry the firmware reports that is not real hardware (a BIOS template leftover)."""

    onboard_device: str = Field(description="Its Reference Designation, as reported.")
    pci_address: str | None = Field(None, pattern=PCI_ADDRESS)
    reason: str = Field(min_length=10, description="How we know it is not real.")


class Firmware(_Strict):
    uefi: bool
    legacy_bios: bool
    secure_boot: bool
    tpm: Literal["none", "1.2", "2.0"] = Field(description="Highest TPM the model supports (often an option).")


class Source(_Strict):
    dmi: str | None = Field(None, description="A sample dump, relative to the samples folder.")
    doc: str | None = Field(None, description="A public document: title and, if known, its address.")

    @model_validator(mode="after")
    def _one(self) -> Source:
        if (self.dmi is None) == (self.doc is None):
            raise ValueError("a source is either `dmi:` or `doc:`")
        return self


class HardwareModel(_Strict):
    """One real vendor server model."""

    apiVersion: Literal["oemkit/v1"]
    kind: Literal["HardwareModel"]
    id: str = Field(pattern=MODEL_ID, description="`<vendor>-<family>-<model>`: dell-poweredge-r650.")
    vendor: Literal["Dell", "HPE", "Lenovo"]
    family: str
    model: str
    generation: str | None = None
    form_factor: Literal["rack-1u", "rack-2u", "tower", "micro-tower"]
    identity: Identity
    cpu: Cpu
    memory: Memory
    nics: list[NicPort] = Field(min_length=1)
    storage: Storage
    boot_devices: list[BootDevice] = Field(default_factory=list)
    bmc: Bmc | None = Field(description="The management controller; null for a model that has none.")
    firmware: Firmware
    sources: list[Source] = Field(min_length=1)
    smbios_quirks: list[SmbiosQuirk] = Field(default_factory=list)
    notes: str | None = None

    @field_validator("nics")
    @classmethod
    def _unique_ports(cls, ports: list[NicPort]) -> list[NicPort]:
        seen: set[str] = set()
        addresses: dict[str, str] = {}
        for p in ports:
            if p.id in seen:
                raise ValueError(f"port id {p.id} appears twice")
            seen.add(p.id)
            for a in (p.pci_address, *p.alt_pci_addresses):
                if a and a in addresses:
                    raise ValueError(f"ports {addresses[a]} and {p.id} both claim PCI address {a}")
                if a:
                    addresses[a] = p.id
        return ports

    @model_validator(mode="after")
    def _id_names_the_model(self) -> HardwareModel:
        # Scripts rely on the id being derived from vendor, family and model; catch a copy-paste that forgot one.
        expected = "-".join(
            re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") for s in (self.vendor, self.family, self.model)
        )
        if self.id != expected:
            raise ValueError(f"id must be {expected!r} (vendor-family-model), not {self.id!r}")
        return self
