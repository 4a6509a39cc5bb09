"""`oemkit boot UNIT.json --core COREDIR`: boot a built core with a unit's sealed config on the virtual twin of its
hardware under QEMU and report what the agent inside said. Exit 0 READY, 1 FAILED, 2 bad input, 3 timeout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oemkit.cli.common import EXIT_NO, EXIT_OK, JsonOpt, emit_json, fail, load_catalog_or_fail

EXIT_TIMEOUT = 3


def boot_command(
    ctx: typer.Context,
    unit: Annotated[Path, typer.Argument(help="The unit's sealed config (UNIT.json from `oemkit compile`).")],
    core: Annotated[Path, typer.Option("--core", help="A core folder from `oemkit core build`.")],
    as_model: Annotated[
        str | None, typer.Option("--as-model", help="Boot on another catalog model's twin (rehearse a wrong box).")
    ] = None,
    disks: Annotated[
        str | None,
        typer.Option("--disks", help="Data disks, e.g. sata:ssd:960x2 (default: what the unit's datastore rule asks)."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the status line.", min=1)] = 900,
    accel: Annotated[str, typer.Option("--accel", help="auto (detect), kvm or tcg.")] = "auto",
    state_disk: Annotated[
        Path | None,
        typer.Option("--state-disk", help="Keep the core's state on this disk image (made if missing): reboot it."),
    ] = None,
    log: Annotated[Path | None, typer.Option("--log", help="Write the console, with host timestamps, here.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --log file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Boot the core with UNIT on its model's twin (SMBIOS, NICs at the catalog's PCI addresses, datastore disks,
    the config on a CD) and print the agent's OEMKIT-STATUS result."""
    from oemkit.errors import OemkitError
    from oemkit.outputs import check_new
    from oemkit.twin import accel as accel_mod
    from oemkit.twin import session

    if accel not in ("auto", "kvm", "tcg"):
        fail(OemkitError(f"--accel must be auto, kvm or tcg, not {accel!r}"), as_json=as_json)
    catalog = load_catalog_or_fail(ctx, as_json)
    try:
        if log is not None:
            check_new(log, force)  # before the boot, not after minutes of it
        if state_disk is not None:
            session.check_state_disk(state_disk)
        run = session.prepare(unit, catalog, as_model, disks, host_mib=session.host_memory_mib())
        if not (core / "vmlinuz").is_file():
            raise OemkitError("not a core: vmlinuz is missing (build one with `oemkit core build`)", file=str(core))
        session.require_qemu()  # before the KVM probe, which runs QEMU
        why = "asked for"
        if accel == "auto":
            accel, why = accel_mod.detect(core / "vmlinuz")
        say = (lambda text: None) if as_json else (lambda text: print(text, file=sys.stderr))
        say(f"oemkit boot: {run.unit.serial} ({run.unit.model}) on a {run.twin.model_id} twin, {accel} ({why})")
        for note in run.twin.notes:
            say(f"oemkit boot: note: {note}")
        echo = None if as_json else (lambda line: print("  | " + line, file=sys.stderr))
        result = session.boot(
            run, core, accel=accel, timeout=timeout, log=log, state_disk=state_disk, echo=echo, force=force
        )
    except (OemkitError, ValueError) as exc:
        fail(exc, as_json=as_json)
    doc = {**result.to_dict(), "accel": accel, "twin": run.twin.model_id}
    if as_json:
        emit_json(doc)
    else:
        split = doc["boot"]
        times = ", ".join(f"{k} {v:.1f} s" for k, v in split.items() if v is not None)
        sys.stdout.write(f"{result.status}: {run.unit.serial} {result.reason or ''}".rstrip() + f" ({times})\n")
    if result.status == "READY":
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_TIMEOUT if result.status == "TIMEOUT" else EXIT_NO)
