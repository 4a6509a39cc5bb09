"""`oemkit catalog ...`: list and show hardware models, identify a box from what it reports."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oemkit.cli.output import EXIT_NO, EXIT_OK, EXIT_UNREADABLE, console, emit_json, fail

if TYPE_CHECKING:
    from oemkit.catalog.schema import HardwareModel
    from oemkit.catalog.store import Catalog

app = typer.Typer(
    help="The hardware catalog: real vendor server models and how to recognise them.",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def _load(ctx: typer.Context, as_json: bool) -> Catalog:
    from oemkit.catalog.store import load_catalog
    from oemkit.problems import ProblemsError

    try:
        return load_catalog((ctx.obj or {}).get("catalog_dir"))
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
        "bmc": f"{m.bmc.version}",
    }


@app.command("list")
def list_models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List every model in the catalog."""
    cat = _load(ctx, as_json)
    rows = [_summary(m) for m in cat]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"Hardware catalog ({len(rows)} models)", title_justify="left")
    for col in ("id", "vendor", "family", "model", "form", "CPU", "DIMMs", "NICs", "BMC"):
        table.add_column(col, no_wrap=col == "id")
    for r in rows:
        cpu = f"{r['cpu_sockets']}x {r['cpu_vendor']}"
        table.add_row(
            r["id"],
            r["vendor"],
            r["family"],
            r["model"],
            r["form_factor"],
            cpu,
            str(r["dimm_slots"]),
            str(r["nic_ports"]),
            r["bmc"],
        )
    console().print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="ID", help="A model id, e.g. dell-poweredge-r650.")],
    as_json: JsonOpt = False,
) -> None:
    """Show everything the catalog knows about one model."""
    cat = _load(ctx, as_json)
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

    out = console()
    out.print(f"[bold]{m.vendor} {m.family} {m.model}[/bold]  ({m.id}, {m.generation or '-'}, {m.form_factor})")
    out.print(f"[dim]{file}[/dim]")
    ident = m.identity
    mts = f"; machine types {', '.join(ident.machine_types)}" if ident.machine_types else ""
    out.print(f"SMBIOS: {' | '.join(ident.manufacturers)} / {' | '.join(ident.product_names)}{mts}")
    out.print(
        f"CPU: {m.cpu.sockets} x {', '.join(m.cpu.families)} (up to {m.cpu.max_cores_per_socket} cores, "
        f"{m.cpu.virtualization})"
    )
    supported = f", supported {m.memory.supported_max_gib} GiB" if m.memory.supported_max_gib else ""
    out.print(f"Memory: {m.memory.dimm_slots} {m.memory.type} slots, addressable {m.memory.max_gib} GiB{supported}")
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
        nics.add_row(
            p.id, kind, f"{speed} {p.media}", p.driver, p.controller, p.pci_address or "-", p.smbios_designation or "-"
        )
    out.print(nics)
    bays = "; ".join(f"{b.count} x {b.size} {'/'.join(b.interfaces)}" for b in m.storage.bays)
    out.print(f"Storage: {', '.join(m.storage.controllers)}; bays {bays}")
    for b in m.boot_devices:
        caps = f" ({', '.join(str(c) for c in b.capacities_gib)} GiB)" if b.capacities_gib else ""
        out.print(f"Boot device: {b.name} [{b.kind}]{caps}{' RAID1' if b.raid1 else ''}")
    fw = m.firmware
    out.print(
        f"BMC: {m.bmc.kind} ({m.bmc.version}), Redfish {'yes' if m.bmc.redfish else 'no'}; firmware: "
        f"UEFI {'yes' if fw.uefi else 'no'}, legacy BIOS {'yes' if fw.legacy_bios else 'no'}, "
        f"Secure Boot {'yes' if fw.secure_boot else 'no'}, TPM {fw.tpm}"
    )
    out.print("Sources: " + "; ".join(s.dmi or s.doc or "" for s in m.sources))


@app.command("identify")
def identify(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A dmidecode text dump, or a folder shaped like /sys/class/dmi/id.")],
    as_json: JsonOpt = False,
) -> None:
    """Tell which catalog model a box is, from what it reports about itself.

    Only the content is read, never the file name. Exit 0: identified; 1: not in the catalog; 2: unreadable input.
    """
    from oemkit.dmi import read_report
    from oemkit.errors import OemkitError

    try:
        report = read_report(path)
    except OemkitError as exc:
        fail(exc, as_json=as_json, code=EXIT_UNREADABLE)
    found = _load(ctx, as_json).identify(report.identity)
    box = report.identity
    if as_json:
        emit_json(
            {
                "model": found.model.id if found.model else None,
                "vendor": box.sys_vendor,
                "product": box.product_name,
                "serial": box.product_serial,
                "cpu_sockets_populated": report.cpu_sockets_populated,
                "memory_gib": report.memory_gib,
                "virtualization": report.virtualization,
                "reason": found.reason,
            }
        )
    elif found.model:
        typer.echo(found.model.id)
    else:
        typer.echo(f"not in the catalog: {found.reason}", err=True)
    raise typer.Exit(EXIT_OK if found.model else EXIT_NO)
