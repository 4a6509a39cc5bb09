"""`oemkit catalog ...`: list and show hardware models, identify a box from what it reports."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oemkit.cli.common import (
    EXIT_NO,
    EXIT_OK,
    EXIT_UNREADABLE,
    JsonOpt,
    catalog_dir,
    console,
    emit_json,
    fail,
    load_catalog_or_fail,
)

if TYPE_CHECKING:
    from oemkit.catalog.index import IdentityIndex
    from oemkit.catalog.schema import HardwareModel

app = typer.Typer(
    help="The hardware catalog: real vendor server models and how to recognise them.",
    no_args_is_help=True,
)


def _identity_index(ctx: typer.Context, as_json: bool) -> IdentityIndex:
    """The cached identity rules: no pydantic, no YAML on the hot path of a build line."""
    from oemkit.catalog.cache import load_index
    from oemkit.problems import ProblemsError

    try:
        return load_index(catalog_dir(ctx))
    except ProblemsError as exc:
        fail(exc, as_json=as_json)


def _summary(m: HardwareModel) -> dict[str, Any]:
    return {
        "id": m.id,
        "vendor": m.vendor,
        "family": m.family,
        "model": m.model,
        "generation": m.generation,
        "form_factor": m.form_factor,
        "cpu_sockets": m.cpu.sockets,
        "cpu_vendor": m.cpu.vendor,
        "dimm_slots": m.memory.dimm_slots,
        "nic_ports": len(m.nics),
        "bmc": m.bmc.version if m.bmc else None,
    }


@app.command("list")
def list_models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List every model in the catalog."""
    cat = load_catalog_or_fail(ctx, as_json)
    rows = [_summary(m) for m in cat]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"Hardware catalog ({len(rows)} models)", title_justify="left")
    for col in ("id", "form", "CPU", "DIMMs", "NICs", "BMC"):
        table.add_column(col, no_wrap=True)
    from rich.text import Text

    for r in rows:
        cells = (
            r["id"],
            r["form_factor"],
            f"{r['cpu_sockets']}x {r['cpu_vendor']}",
            str(r["dimm_slots"]),
            str(r["nic_ports"]),
            r["bmc"] or "none",
        )
        table.add_row(*(Text(c) for c in cells))
    console().print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="ID", help="A model id, e.g. dell-poweredge-r650.")],
    as_json: JsonOpt = False,
) -> None:
    """Show everything the catalog knows about one model."""
    cat = load_catalog_or_fail(ctx, as_json)
    model = cat.get(model_id)
    if model is None:
        from oemkit.errors import OemkitError

        close = difflib.get_close_matches(model_id, cat.ids, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `oemkit catalog list`"
        fail(OemkitError(f"no model {model_id!r} in the catalog", hint=hint), as_json=as_json, code=EXIT_NO)
    if as_json:
        emit_json(model.model_dump(mode="json"))
        return
    _render_model(model, str(cat.file_of(model_id)))


def _render_model(m: HardwareModel, file: str) -> None:
    from rich.table import Table
    from rich.text import Text

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    ident, fw = m.identity, m.firmware
    mts = f"; machine types {', '.join(ident.machine_types)}" if ident.machine_types else ""
    supported = f", vendor maximum {m.memory.supported_max_gib} GiB" if m.memory.supported_max_gib else ""
    bays = "; ".join(f"{b.count} x {b.size} {'/'.join(b.interfaces)}" for b in m.storage.bays)
    boot = [
        f"{b.name} ({b.kind}{', ' + '/'.join(str(c) for c in b.capacities_gib) + ' GiB' if b.capacities_gib else ''}"
        f"{', RAID1' if b.raid1 else ''})"
        for b in m.boot_devices
    ]
    bmc = f"{m.bmc.kind} ({m.bmc.version}), Redfish {yes(m.bmc.redfish)}" if m.bmc else "none"
    facts = [
        ("SMBIOS", f"{' | '.join(ident.manufacturers)} / {' | '.join(ident.product_names)}{mts}"),
        (
            "CPU",
            f"{m.cpu.sockets} x {', '.join(m.cpu.families)}, up to {m.cpu.max_cores_per_socket} cores, "
            f"{m.cpu.virtualization}",
        ),
        ("Memory", f"{m.memory.dimm_slots} {m.memory.type} slots, up to {m.memory.max_gib} GiB{supported}"),
        ("Storage", f"{', '.join(m.storage.controllers)}; bays {bays}"),
        ("Boot devices", "; ".join(boot) or "none"),
        ("BMC", bmc),
        (
            "Firmware",
            f"UEFI {yes(fw.uefi)}, legacy BIOS {yes(fw.legacy_bios)}, Secure Boot {yes(fw.secure_boot)}, TPM {fw.tpm}",
        ),
        ("Sources", "; ".join(s.dmi or s.doc or "" for s in m.sources)),
        ("File", file),
    ]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in facts:
        grid.add_row(key, Text(value))  # Text: catalog strings are data, never rich markup
    out = console()
    out.print(Text(f"{m.vendor} {m.family} {m.model}  ({m.id}, {m.generation or '-'}, {m.form_factor})", "bold"))
    out.print(grid)
    nics = Table(
        "port",
        "kind",
        "speed",
        "driver",
        "controller",
        "PCI",
        "SMBIOS designation",
        title="NIC ports",
        title_justify="left",
    )
    for p in m.nics:
        speed = f"{p.speed_mbps // 1000} GbE" if p.speed_mbps >= 1000 else f"{p.speed_mbps} Mb"
        kind = p.kind + (" (option)" if p.optional else "")
        cells = (
            p.id,
            kind,
            f"{speed} {p.media}",
            p.driver,
            p.controller,
            ", ".join(a for a in (p.pci_address, *p.alt_pci_addresses) if a) or "-",
            p.smbios_designation or "-",
        )
        nics.add_row(*(Text(c) for c in cells))
    out.print(nics)


@app.command("identify")
def identify(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A dmidecode text dump, or a folder shaped like /sys/class/dmi/id.")],
    as_json: JsonOpt = False,
) -> None:
    """Tell which catalog model a box is, from what it reports about itself.

    Only the content is read, never the file name. Exit 0: identified; 1: not in the catalog; 2: unreadable input.
    """
    from oemkit.errors import OemkitError
    from oemkit.hardware.dmi import read_report

    try:
        report = read_report(path)
    except OemkitError as exc:
        fail(exc, as_json=as_json, code=EXIT_UNREADABLE)
    found = _identity_index(ctx, as_json).identify(report.identity)
    box = report.identity
    if as_json:
        emit_json(
            {
                "model": found.model_id,
                "vendor": box.sys_vendor,
                "product": box.product_name,
                "serial": box.product_serial,
                "cpu_sockets_populated": report.cpu_sockets_populated,
                "memory_gib": report.memory_gib,
                "virtualization": report.virtualization,
                "reason": found.reason,
            }
        )
    elif found.model_id:
        typer.echo(found.model_id)
    else:
        typer.echo(f"not in the catalog: {found.reason}", err=True)
    raise typer.Exit(EXIT_OK if found.model_id else EXIT_NO)
