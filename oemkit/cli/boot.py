"""`oemkit boot OUT/<serial>`: boot a built appliance image as its box boots it — OVMF with Secure Boot and the
factory's keys, a TPM, on the virtual twin of its hardware under QEMU — and report what the agent inside said,
checking the PCR 15 it measured against the factory's prediction. `oemkit boot UNIT.json --core COREDIR` is the
developer mode: the core's kernel booted directly, the config on a CD. Exit 0 READY, 1 FAILED (or a PCR 15 that
does not match), 2 bad input, 3 timeout, 4 libvirt could not run the twin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oemkit.cli.common import EXIT_NO, EXIT_OK, JsonOpt, emit_json, fail, load_catalog_or_fail

EXIT_TIMEOUT = 3
EXIT_INFRA = 4  # the twin could not be run: libvirt unreachable or refusing it (not the unit's first boot)


def boot_command(
    ctx: typer.Context,
    target: Annotated[
        Path,
        typer.Argument(help="A built unit (OUT/<serial> from `oemkit image build`), or a UNIT.json with --core."),
    ],
    core: Annotated[
        Path | None, typer.Option("--core", help="Developer mode: boot this core's kernel directly with UNIT.json.")
    ] = None,
    vars_fd: Annotated[
        Path,
        typer.Option("--vars", help="The OVMF variable store with the factory's keys (`oemkit keys enroll-vars`)."),
    ] = Path("keys/VARS.fd"),
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
    connect: Annotated[
        str, typer.Option("--connect", "-c", help="The libvirt URI the twin runs on (a burn-in host: qemu+ssh://…).")
    ] = "qemu:///system",
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the twin defined (shut off) with its volumes, to look at it.")
    ] = False,
    plain_qemu: Annotated[
        bool, typer.Option("--qemu", help="Developer mode: run the twin as a plain QEMU process, not through libvirt.")
    ] = False,
    box: Annotated[
        Path | None,
        typer.Option(
            "--box",
            help="Keep the twin's boot overlay, disks, NVRAM and TPM in this folder (made if "
            "missing); a later boot with the same folder powers the same box on again.",
        ),
    ] = None,
    service: Annotated[
        int | None,
        typer.Option(
            "--service",
            help="Forward the unit's phone-home address to this port on 127.0.0.1 (a provisioning service: `oemkit "
            "serve`); plain QEMU twin (--qemu) only. The URL's host must be in 10.0.2.0/24 (docs/zero-touch.md).",
        ),
    ] = None,
    log: Annotated[Path | None, typer.Option("--log", help="Write the console, with host timestamps, here.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --log file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Boot a built unit's appliance image (or, with --core, a core with UNIT.json) on its model's twin (SMBIOS, NICs
    at the catalog's PCI addresses, datastore disks) and print the agent's OEMKIT-STATUS result."""
    import tempfile

    from oemkit.errors import OemkitError, UnreadableInput
    from oemkit.outputs import check_new
    from oemkit.twin import accel as accel_mod
    from oemkit.twin import appliance, session

    if accel not in ("auto", "kvm", "tcg"):
        fail(OemkitError(f"--accel must be auto, kvm or tcg, not {accel!r}"), as_json=as_json)
    catalog = load_catalog_or_fail(ctx, as_json)
    built = None
    forward: str | None = None
    via: dict = {}
    try:
        if log is not None:
            check_new(log, force)  # before the boot, not after minutes of it
        if state_disk is not None:
            session.check_state_disk(state_disk)
        if core is None and target.is_dir():  # with --core, TARGET is a UNIT.json (read_input refuses a folder)
            if state_disk is not None:
                raise OemkitError("--state-disk is for UNIT.json with --core (developer mode), not a built unit")
            if box is not None and not plain_qemu:
                raise OemkitError("--box is for the plain QEMU twin (--qemu); through libvirt, --keep keeps it")
            if service is not None and not plain_qemu:
                raise OemkitError("--service needs the plain QEMU twin (--qemu): libvirt's QEMU sandbox forbids the "
                                  "per-connection forwarder")  # fmt: skip
            appliance.require_tools()
            built = appliance.load(target)
            if not vars_fd.is_file():
                raise UnreadableInput("no OVMF variable store", file=str(vars_fd), hint="oemkit keys enroll-vars")
            cfg = session.parse_unit(built.config, f"{built.image} (config partition)")
            made_for = (built.serial, str(built.manifest.get("model") or cfg.model))
            run = session.prepare_config(cfg, built.config, str(built.image), catalog, as_model, disks,
                                         session.host_memory_mib(), box=made_for)  # fmt: skip
            kernel = None
            if service is not None:
                if cfg.phone_home is None:
                    raise OemkitError("--service: this unit's profile has no management.phone_home to forward")
                from oemkit.twin.service import guestfwd

                forward = guestfwd(cfg.phone_home.url, service)
        else:
            if service is not None:
                raise OemkitError("--service is for a built unit (OUT/<serial>)")
            if core is None:
                raise OemkitError("a UNIT.json boots with --core COREDIR; a built unit is its OUT/<serial> folder")
            if box is not None:
                raise OemkitError("--box is for a built unit; with --core, --state-disk keeps the state")
            run = session.prepare(target, catalog, as_model, disks, host_mib=session.host_memory_mib())
            if not (core / "vmlinuz").is_file():
                raise OemkitError("not a core: vmlinuz is missing (build one with `oemkit core build`)", file=str(core))
            kernel = core / "vmlinuz"
        session.require_qemu()  # before the KVM probe, which runs QEMU
        why = "asked for"
        if accel == "auto":
            if kernel is not None:
                accel, why = accel_mod.detect(kernel)
            elif not accel_mod.kvm_usable():
                accel, why = "tcg", "/dev/kvm is missing or not accessible"
            else:  # whether KVM runs the core's kernel here is asked of that kernel, from inside the image's UKI
                assert built is not None
                with tempfile.TemporaryDirectory(prefix="oemkit-boot-") as tmp:
                    accel, why = accel_mod.detect(appliance.kernel_of(built, Path(tmp) / "vmlinuz"))
        say = (lambda text: None) if as_json else (lambda text: print(text, file=sys.stderr))
        what = f"appliance image {built.image}" if built else "core (direct kernel boot)"
        say(f"oemkit boot: {run.twin.serial} ({run.unit.model}) on a {run.twin.model_id} twin, {what}, {accel} ({why})")
        for note in run.twin.notes:
            say(f"oemkit boot: note: {note}")
        echo = None if as_json else (lambda line: print("  | " + line, file=sys.stderr))
        if built is not None:
            model = catalog.get(run.twin.model_id)
            assert model is not None  # prepare_config found it
            device = appliance.boot_device(model)
            say(f"oemkit boot: {device.what}")
            if box is not None:
                shape = {"bus": device.bus, "mirror": device.mirror, "size": device.size,
                         "disks": [[d.interface, d.size_gib] for d in run.twin.disks]}  # fmt: skip
                session.check_box(box, target, shape)
            if plain_qemu:
                result = session.boot_image(run, built.image, vars_fd, image_format=built.fmt, boot=device,
                                            accel=accel, timeout=timeout, log=log, echo=echo, force=force,
                                            box=box, guestfwd=forward)  # fmt: skip
            else:
                from oemkit.outputs import open_stream
                from oemkit.twin import virt

                say(f"oemkit boot: through libvirt at {connect}")
                logf = open_stream(log, force=force) if log else None
                try:
                    done = virt.boot(run, built, device, vars_fd, uri=connect, timeout=timeout, keep=keep, log=logf,
                                     domain_type="kvm" if accel == "kvm" else "qemu", echo=echo,
                                     note=lambda text: say(f"oemkit boot: {text}"))  # fmt: skip
                except virt.TwinError as exc:
                    fail(exc, as_json=as_json, code=EXIT_INFRA)
                finally:
                    if logf:
                        logf.close()
                result = done.result
                via = {"connect": connect, "domain": done.name, "disk_sha256": done.disk_sha256,
                       "cleaned": done.cleaned, "kept": keep}  # fmt: skip
        else:
            assert core is not None
            result = session.boot(
                run, core, accel=accel, timeout=timeout, log=log, state_disk=state_disk, echo=echo, force=force
            )
    except (OemkitError, ValueError, OSError) as exc:
        fail(exc, as_json=as_json)
    doc = {**result.to_dict(), "accel": accel, "twin": run.twin.model_id, **via}
    match = None
    if built is not None:
        match = appliance.pcr15_matches(built.pcr15_expected, result.pcr15)
        doc |= {"image": str(built.image), "pcr15_expected": built.pcr15_expected, "pcr15_match": match}
    if as_json:
        emit_json(doc)
    else:
        split = doc["boot"]
        times = ", ".join(f"{k} {v:.1f} s" for k, v in split.items() if v is not None)
        bank = f", bank {result.bank}" if result.bank else ""
        sys.stdout.write(f"{result.status}: {run.twin.serial} {result.reason or ''}".rstrip() + f" ({times}{bank})\n")
        for failure in result.core_failures:
            sys.stdout.write(f"  a boot before failed in the core and rebooted: {failure}\n")
        if match is False:
            sys.stdout.write(f"  PCR 15 MISMATCH: the box measured {result.pcr15}, the factory predicted "
                             f"{built.pcr15_expected if built else None}: this image carries a config it was not "
                             "built with\n")  # fmt: skip
    if match is False:
        raise typer.Exit(EXIT_NO)
    if result.status == "READY":
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_TIMEOUT if result.status == "TIMEOUT" else EXIT_NO)
