"""`oemkit facts probe|from-dmi` and `oemkit firstboot preview|run`: rehearse a unit's first boot at the factory."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oemkit.cli.common import EXIT_NO, EXIT_OK, JsonOpt, console, emit_json, fail, load_catalog_or_fail

if TYPE_CHECKING:
    from hypervisor_core.actions import Action
    from hypervisor_core.facts import Facts

facts_app = typer.Typer(help="Hardware facts as first boot reads them.", no_args_is_help=True)
firstboot_app = typer.Typer(help="Preview or run a unit's first boot (the real agent).", no_args_is_help=True)
PubOpt = Annotated[Path, typer.Option("--pubkey", help="The factory's signing.pub.")]
FactsOpt = Annotated[
    Path | None, typer.Option("--facts", help="A dmidecode dump, a sysfs-shaped folder, or a facts JSON file.")
]


@facts_app.command("probe")
def probe_command(
    root: Annotated[Path, typer.Argument(help="A root to read (/ on a real box, or a from-dmi tree).")] = Path("/"),
) -> None:
    """Print the facts first boot reads from ROOT, as the FACTS.json that --facts accepts.

    Every file under ROOT is read bounded and only if it is a regular file: a FIFO or a device where a value
    should be is a fact that cannot be read (null), as an unreadable file on a real box is."""
    from hypervisor_core.facts import probe
    from oemkit.errors import UnreadableInput

    if not root.is_dir():
        fail(
            UnreadableInput("not a folder: give the root of a box or of a from-dmi tree", file=str(root)), as_json=False
        )
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
    from oemkit.errors import OemkitError, OutputRefused
    from oemkit.hardware.disks import parse_disks
    from oemkit.hardware.dmi import read_report
    from oemkit.hardware.facts_tree import create_tree
    from oemkit.profile.schema import serial_problem

    try:
        report = read_report(dump)
        specs = parse_disks(disks) if disks is not None else None
    except OemkitError as exc:
        fail(exc, as_json=False)
    catalog = load_catalog_or_fail(ctx, False)
    found = catalog.identify(report.identity)
    model = catalog.get(found.model_id) if found.model_id else None
    if model is None:
        fail(OemkitError(f"not a catalog model: {found.reason}", file=str(dump)), as_json=False, code=EXIT_NO)
    why = serial_problem(serial)
    if why:
        fail(OemkitError(why), as_json=False, code=EXIT_NO)
    # a tree is only ever created, never replaced (no --force: that would delete a folder): like any refused
    # output, exit 2 with nothing written
    if output.is_symlink() and not output.exists():
        fail(OutputRefused("a symbolic link to nothing", file=str(output)), as_json=False)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        why = "exists and is not an empty folder: from-dmi only fills a new or empty one"
        fail(OutputRefused(why, file=str(output)), as_json=False)
    try:
        create_tree(output, report, model, serial, specs)
    except OSError as exc:
        fail(OemkitError(f"cannot write: {exc.strerror}", file=str(exc.filename or output)), as_json=False)
    sys.stdout.write(f"{output}: {model.id}, serial {serial}\n")


def _read_inputs(unit: Path, pubkey: Path, as_json: bool, *, strict: bool) -> tuple[bytes, bytes, str]:
    """The unit config's bytes, the factory key and the unit's serial (for a dump that masks its own). Both files
    are read once, bounded, and only if they are regular files (exit 2 otherwise). strict: a config that is not a
    JSON document the agent reads at all (not UTF-8, not JSON, too deep, a lone surrogate) is unreadable input
    too, exit 2; otherwise (`run`) the agent itself refuses it and reports, as on the box."""
    from hypervisor_core import config
    from oemkit.errors import UnreadableInput
    from oemkit.inputs import read_input

    try:
        raw = read_input(unit, "unit config", config.MAX_BYTES)
        key = read_input(pubkey, "public key")
    except UnreadableInput as exc:
        fail(exc, as_json=as_json)
    try:
        public = config.read_public_key(key.decode(errors="replace"))
    except config.ConfigError as exc:
        fail(UnreadableInput(str(exc), file=str(pubkey)), as_json=as_json)
    try:
        serial = config.parse(raw).get("serial", "")
    except config.UnreadableConfig as exc:
        if strict:
            fail(UnreadableInput(str(exc), file=str(unit)), as_json=as_json)
        serial = ""
    except config.ConfigError:  # JSON, but not an object: load refuses it with the reason
        serial = ""
    return raw, public, serial if isinstance(serial, str) else ""


def _facts(ctx: typer.Context, path: Path, serial: str, as_json: bool) -> Facts:
    from oemkit.errors import OemkitError
    from oemkit.hardware.facts import facts_of

    try:
        return facts_of(path, load_catalog_or_fail(ctx, as_json), serial)
    except OemkitError as exc:
        fail(exc, as_json=as_json)


@firstboot_app.command("preview")
def preview(
    ctx: typer.Context,
    unit: Annotated[Path, typer.Argument(help="The sealed UNIT.json.")],
    pubkey: PubOpt,
    facts: Annotated[Path, typer.Option("--facts", help="A dmidecode dump, a sysfs-shaped folder, or facts JSON.")],
    plan_details: Annotated[
        bool, typer.Option("--plan", help="Every action with all its parameters (the libvirt XML included).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """What first boot would do on that box, without doing it: the same checks, the same refusals, the plan.

    Exit 0: the box would be configured; 1: refused (wrong box, bad config); 2: unreadable input.
    """
    from hypervisor_core import config
    from hypervisor_core.match import Refusal, match
    from hypervisor_core.plan import make_plan
    from oemkit.errors import UnreadableInput

    raw, public, serial = _read_inputs(unit, pubkey, as_json, strict=True)
    box = _facts(ctx, facts, serial, as_json)
    try:
        cfg = config.load(raw, public)
        bound = match(cfg, box)
    except config.UnreadableConfig as exc:  # _read_inputs parsed it already; kept so the contract never depends on it
        fail(UnreadableInput(str(exc), file=str(unit)), as_json=as_json)
    except (config.ConfigError, Refusal) as exc:
        if as_json:
            emit_json({"status": "REFUSED", "reason": str(exc), "plan": []})
        else:
            sys.stdout.write(f"REFUSED: {exc}\n")
        raise typer.Exit(EXIT_NO) from None
    plan = make_plan(cfg, box, bound, "/")
    if as_json:
        steps = [_action_json(a) if plan_details else {"id": a.id, "kind": a.kind} for a in plan]
        emit_json(
            {"status": "OK", "model": cfg.model, "serial": cfg.serial, "warnings": list(bound.warnings),
             "uplinks": [n.name for n in bound.uplinks], "datastore": [d.name for d in bound.datastore],
             "plan": steps}
        )  # fmt: skip
        raise typer.Exit(EXIT_OK)
    out = [f"{cfg.serial} ({cfg.model}) would be configured as {cfg.host.hostname}:"]
    out += [f"  warning: {w}" for w in bound.warnings]
    out.append("  uplinks: " + ", ".join(f"{n.name} ({n.pci_address}, {n.driver})" for n in bound.uplinks))
    out.append("  datastore: " + ", ".join(f"{d.name} ({d.size_bytes >> 30} GiB)" for d in bound.datastore))
    for i, action in enumerate(plan, 1):
        out.append(f"  {i:2}. {action.id}" + (f" — {action.describe()}" if plan_details else ""))
        if plan_details:
            out += _param_lines(action.params(), " " * 6)
    sys.stdout.write("\n".join(out) + "\n")


def _action_json(action: Action) -> dict[str, Any]:
    return {"id": action.id, "kind": action.kind, "description": action.describe(), "args": action.params()}


def _param_lines(params: dict[str, Any], pad: str) -> list[str]:
    """Parameters for a person: one per line, JSON values; text of several lines (libvirt XML) as a block."""
    lines = []
    for key, value in params.items():
        if isinstance(value, str) and "\n" in value:
            lines.append(f"{pad}{key}: |")
            lines += [f"{pad}  {line}" for line in value.rstrip("\n").splitlines()]
        else:
            lines.append(f"{pad}{key}: {json.dumps(value, ensure_ascii=False)}")
    return lines


@firstboot_app.command("run")
def run_command(
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
    from hypervisor_core.backends import libvirt as lv
    from hypervisor_core.firstboot import first_boot
    from oemkit.errors import OemkitError

    raw, public, serial = _read_inputs(unit, pubkey, as_json, strict=False)
    box = _facts(ctx, facts, serial, as_json) if facts else None
    root = root.resolve()  # libvirt pools need absolute paths
    if root == Path("/"):
        fail(OemkitError("--root / would rewrite this machine's own /etc: give a target folder"), as_json=as_json)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(OemkitError(f"cannot create: {exc.strerror}", file=str(root)), as_json=as_json)
    opened: list[Any] = []

    def open_connection() -> Any:
        opened.append(lv.connect(connect))
        return opened[-1]

    out = sys.stderr if as_json else sys.stdout
    report = first_boot(raw, public, root, open_connection, box, force=force, live=False, out=out)
    if not opened:
        with contextlib.suppress(Exception):  # libvirt unreachable: the report already says so
            open_connection()
    held = lv.read_back(opened[0]) if opened else None
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
