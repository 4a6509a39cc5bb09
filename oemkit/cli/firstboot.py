"""`oemkit facts from-dmi` and `oemkit firstboot preview|run`: rehearse a unit's first boot at the factory."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oemkit.cli.output import EXIT_NO, EXIT_OK, emit_json, fail

if TYPE_CHECKING:
    from hypervisor_core.facts import Facts

facts_app = typer.Typer(help="Hardware facts as first boot reads them.", no_args_is_help=True)
firstboot_app = typer.Typer(help="Preview or run a unit's first boot (the real agent).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
PubOpt = Annotated[Path, typer.Option("--pubkey", help="The factory's signing.pub.")]
FactsOpt = Annotated[
    Path | None, typer.Option("--facts", help="A dmidecode dump, a sysfs-shaped folder, or a facts JSON file.")
]


def _catalog(ctx: typer.Context):
    from oemkit.catalog.store import load_catalog

    return load_catalog((ctx.obj or {}).get("catalog_dir"))


@facts_app.command("probe")
def probe_command(
    root: Annotated[Path, typer.Argument(help="A root to read (/ on a real box, or a from-dmi tree).")] = Path("/"),
) -> None:
    """Print the facts first boot reads from ROOT, as the FACTS.json that --facts accepts."""
    from hypervisor_core.facts import probe

    emit_json(probe(root).to_dict())


@facts_app.command("from-dmi")
def from_dmi(
    ctx: typer.Context,
    dump: Annotated[Path, typer.Argument(help="A dmidecode text dump of the server.")],
    serial: Annotated[str, typer.Option("--serial", help="The unit's serial (dumps usually mask theirs).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to create the tree in.")],
    disks: Annotated[
        str | None, typer.Option("--disks", help="Data disks, e.g. sata:ssd:960x2,nvme:1920x4 (default: 2 SSDs).")
    ] = None,
) -> None:
    """Build a sysfs/procfs tree of the server the dump describes: SMBIOS, CPUs, memory, NICs at the catalog's
    PCI addresses, disks, boot device, TPM/Secure Boot. First boot reads it exactly as it reads a real box."""
    from oemkit.dmi import read_report
    from oemkit.errors import OemkitError
    from oemkit.facts_tree import build_tree, parse_disks

    try:
        report = read_report(dump)
        specs = parse_disks(disks) if disks is not None else None
    except OemkitError as exc:
        fail(exc, as_json=False)
    catalog = _catalog(ctx)
    found = catalog.identify(report.identity)
    if found.model_id is None:
        fail(OemkitError(f"not a catalog model: {found.reason}", file=str(dump)), as_json=False, code=EXIT_NO)
    from oemkit.profile.check import SERIAL

    if not SERIAL.match(serial):
        fail(OemkitError(f"serial {serial!r} is not 3-32 letters, digits and '-'"), as_json=False, code=EXIT_NO)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail(OemkitError("exists and is not an empty folder", file=str(output)), as_json=False, code=EXIT_NO)
    try:
        build_tree(output, report, catalog.get(found.model_id), serial, specs)
    except OSError as exc:
        fail(OemkitError(f"cannot write: {exc.strerror}", file=str(exc.filename or output)), as_json=False)
    sys.stdout.write(f"{output}: {found.model_id}, serial {serial}\n")


def _load_facts(ctx: typer.Context, path: Path, serial: str) -> Facts:
    """DUMP → a temporary tree (with the config's serial, since dumps mask theirs); DIR → probe; file → JSON."""
    from hypervisor_core.facts import load_facts, probe

    if path.is_dir() or path.suffix == ".json":
        try:
            return load_facts(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            from oemkit.errors import UnreadableInput

            raise UnreadableInput(f"not a facts file or folder: {type(exc).__name__}: {exc}", file=str(path)) from None
    from oemkit.dmi import read_report
    from oemkit.errors import OemkitError
    from oemkit.facts_tree import build_tree

    report = read_report(path)
    catalog = _catalog(ctx)
    found = catalog.identify(report.identity)
    if found.model_id is None:
        raise OemkitError(f"not a catalog model: {found.reason}", file=str(path))
    with tempfile.TemporaryDirectory() as tmp:
        build_tree(Path(tmp), report, catalog.get(found.model_id), report.identity.product_serial or serial)
        return probe(Path(tmp))


def _read_inputs(unit: Path, pubkey: Path, as_json: bool) -> tuple[bytes, bytes, str]:
    from hypervisor_core import config
    from oemkit.errors import UnreadableInput

    try:
        raw = unit.read_bytes()
        public = config.read_public_key(pubkey.read_text(errors="replace"))
    except OSError as exc:
        fail(UnreadableInput(f"cannot read: {exc.strerror}", file=exc.filename), as_json=as_json)
    except config.ConfigError as exc:
        fail(UnreadableInput(str(exc), file=str(pubkey)), as_json=as_json)
    try:
        serial = json.loads(raw).get("serial", "")
    except (ValueError, AttributeError):
        serial = ""
    return raw, public, serial if isinstance(serial, str) else ""


@firstboot_app.command("preview")
def preview(
    ctx: typer.Context,
    unit: Annotated[Path, typer.Argument(help="The sealed UNIT.json.")],
    pubkey: PubOpt,
    facts: Annotated[Path, typer.Option("--facts", help="A dmidecode dump, a sysfs-shaped folder, or facts JSON.")],
    as_json: JsonOpt = False,
) -> None:
    """What first boot would do on that box, without doing it: the same checks, the same refusals, the plan."""
    from hypervisor_core import config
    from hypervisor_core.match import Refusal, match
    from hypervisor_core.plan import make_plan
    from oemkit.errors import OemkitError

    raw, public, serial = _read_inputs(unit, pubkey, as_json)
    try:
        box = _load_facts(ctx, facts, serial)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    try:
        cfg = config.load(raw, public)
        resolution = match(cfg, box)
    except (config.ConfigError, Refusal) as exc:
        if as_json:
            emit_json({"status": "REFUSED", "reason": str(exc), "plan": []})
        else:
            sys.stdout.write(f"REFUSED: {exc}\n")
        raise typer.Exit(EXIT_NO) from None
    plan = make_plan(cfg, box, resolution, "/")
    if as_json:
        emit_json(
            {
                "status": "OK",
                "model": cfg.model,
                "serial": cfg.serial,
                "warnings": list(resolution.warnings),
                "uplinks": [n.name for n in resolution.uplinks],
                "datastore": [d.name for d in resolution.datastore],
                "plan": [{"id": s.id, "kind": s.kind} for s in plan],
            }
        )
        raise typer.Exit(EXIT_OK)
    sys.stdout.write(f"{cfg.serial} ({cfg.model}) would be configured as {cfg.host.hostname}:\n")
    for w in resolution.warnings:
        sys.stdout.write(f"  warning: {w}\n")
    sys.stdout.write(
        "  uplinks: "
        + ", ".join(f"{n.name} ({n.pci_address}, {n.driver})" for n in resolution.uplinks)
        + "\n  datastore: "
        + ", ".join(f"{d.name} ({d.size_bytes >> 30} GiB)" for d in resolution.datastore)
        + "\n"
    )
    for i, step in enumerate(plan, 1):
        sys.stdout.write(f"  {i:2}. {step.id}\n")


@firstboot_app.command("run")
def run(
    ctx: typer.Context,
    unit: Annotated[Path, typer.Argument(help="The sealed UNIT.json.")],
    pubkey: PubOpt,
    root: Annotated[Path, typer.Option("--root", help="The target root the host config is written under.")],
    connect: Annotated[str, typer.Option("--connect", help="libvirt URI.")] = "test:///default",
    facts: FactsOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Run again although first boot is done.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the real first-boot agent against any libvirt URI (default: the test driver, no daemon needed).

    Exit 0: READY; 1: FAILED or refused. --json prints the report plus what libvirt holds afterwards.
    """
    from hypervisor_core import firstboot
    from oemkit.errors import OemkitError

    raw, public, serial = _read_inputs(unit, pubkey, as_json)
    try:
        box = _load_facts(ctx, facts, serial) if facts else None
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    root = root.resolve()  # libvirt pools need absolute paths
    if root == Path("/"):
        fail(OemkitError("--root / would rewrite this machine's own /etc: give a target folder"), as_json=as_json)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(OemkitError(f"cannot create: {exc.strerror}", file=str(root)), as_json=as_json)
    holder: dict[str, Any] = {}

    def open_connection() -> Any:
        import libvirt

        import hypervisor_core.backends.libvirt  # noqa: F401  (silences libvirt's stderr error printer)

        holder["conn"] = libvirt.open(connect)
        return holder["conn"]

    report = firstboot.run(
        raw, public, root, open_connection, box, force, live=False, out=sys.stderr if as_json else sys.stdout
    )
    from hypervisor_core.backends.libvirt import read_back

    conn = holder.get("conn")
    if conn is None:
        try:
            conn = open_connection()
        except Exception:  # libvirt unreachable: the report already says so
            conn = None
    held = read_back(conn) if conn is not None else None
    if as_json:
        report["libvirt"] = held
        emit_json(report)
    elif held is not None:
        _summary(held)
    raise typer.Exit(EXIT_OK if report["status"] == "READY" else EXIT_NO)


def _summary(held: dict[str, Any]) -> None:
    """What libvirt holds after the run, read back from libvirt itself, for a person."""
    from rich.table import Table
    from rich.text import Text

    from oemkit.cli.output import console

    # to stderr: on stdout the agent's OEMKIT-STATUS line stays the last line, as tools expect
    table = Table(title=f"libvirt now holds ({held['uri']})", title_justify="left")
    for col in ("kind", "name", "state", "autostart", "details"):
        table.add_column(col)
    yes = {True: "yes", False: "no"}
    for d in held["domains"]:
        table.add_row("domain", Text(d["name"]), "running" if d["running"] else "shut off", yes[d["autostart"]], "")
    for n in held["networks"]:
        table.add_row("network", Text(n["name"]), "active" if n["active"] else "inactive", yes[n["autostart"]], "")
    for p in held["pools"]:
        table.add_row(
            "pool",
            Text(p["name"]),
            "active" if p["active"] else "inactive",
            yes[p["autostart"]],
            Text(", ".join(p["volumes"])),
        )
    console(stderr=True).print(table)
