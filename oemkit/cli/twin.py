"""`oemkit twin`: a unit's twin (the rehearsal box) as libvirt sees it (oemkit/twin/domain.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oemkit.cli.common import JsonOpt, emit_json, fail, load_catalog_or_fail

app = typer.Typer(help="A unit's twin, the rehearsal box it boots on.", no_args_is_help=True)


@app.command("xml")
def xml_command(
    ctx: typer.Context,
    target: Annotated[
        Path, typer.Argument(help="A built unit (OUT/<serial> from `oemkit image build`), or a UNIT.json.")
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="The twin of another catalog model (rehearse a wrong box).")
    ] = None,
    accel: Annotated[str, typer.Option("--accel", help="auto (kvm when /dev/kvm is usable), kvm or tcg.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Print the unit's twin as a libvirt domain XML: the boot device as the model has it, SMBIOS, NICs at the
    catalog's PCI addresses, datastore disks, OVMF Secure Boot with the enrolled store, a TPM — as `oemkit boot` defines
    it, its files being volumes of the libvirt host's oemkit-twins pool. Exit 2 on input that cannot be read."""
    import shutil

    from oemkit.errors import OemkitError, UnreadableInput
    from oemkit.image.tools import PATH
    from oemkit.twin import accel as accel_mod
    from oemkit.twin import appliance, domain, session

    if accel not in ("auto", "kvm", "tcg"):
        fail(OemkitError(f"--accel must be auto, kvm or tcg, not {accel!r}"), as_json=as_json)
    catalog = load_catalog_or_fail(ctx, as_json)
    notes: list[str] = []
    try:
        if model is not None and catalog.get(model) is None:
            raise UnreadableInput(f"--model {model!r} is not in the catalog", hint="oemkit catalog list")
        if target.is_dir():  # a built unit: the config is read from the image's own partition, as `oemkit boot` does
            for tool in ("qemu-img", "mcopy"):
                if shutil.which(tool, path=PATH) is None:
                    raise OemkitError(f"{tool} is not installed: it reads the image", hint="bash scripts/setup.sh")
            built = appliance.load(target)
            cfg = session.parse_unit(built.config, f"{built.image} (config partition)")
            made_for = (built.serial, str(built.manifest.get("model") or cfg.model))
            run = session.prepare_config(cfg, built.config, str(built.image), catalog, model, None,
                                         session.host_memory_mib(), box=made_for)  # fmt: skip
            image = domain.volume_name(built.serial, "image.raw")
            notes.append(f"the boot disk is an overlay on {image}, the image uploaded to the libvirt host's "
                         "oemkit-twins pool: `oemkit boot` makes both, and removes them after")  # fmt: skip
        else:
            run = session.prepare(target, catalog, model, None, host_mib=session.host_memory_mib())
            notes.append("a unit config, no image yet: `oemkit image build` makes the image the boot disk overlays")
        box = catalog.get(run.twin.model_id)
        assert box is not None  # prepare_config found it
        device = appliance.boot_device(box)
        if accel == "auto":
            accel = "kvm" if accel_mod.kvm_usable() else "tcg"
        paths = domain.default_paths(run.twin, device)
        xml = domain.domain_xml(
            run.twin,
            device,
            paths,
            domain_type="kvm" if accel == "kvm" else "qemu",
            memory_mib=run.memory_mib,
            oem_strings=run.oem_strings(poweroff=True),  # as `oemkit boot`: power off after the ready line
        )
    except (OemkitError, ValueError) as exc:
        fail(exc, as_json=as_json)
    notes = [*run.twin.notes, device.what, *domain.domain_notes(run.twin), *notes]
    name = domain.domain_name(run.twin.serial)
    if as_json:
        emit_json({"name": name, "model": run.twin.model_id, "serial": run.twin.serial, "xml": xml, "notes": notes})
        return
    sys.stdout.write(xml)
    for note in notes:  # on stderr: the XML alone goes to stdout (`oemkit twin xml X > twin.xml`)
        print(f"oemkit twin xml: note: {note}", file=sys.stderr)
