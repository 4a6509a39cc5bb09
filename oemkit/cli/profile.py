"""`oemkit profile ...`: author, validate, inspect and compare appliance profiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from oemkit.cli.common import EXIT_NO, EXIT_OK, EXIT_UNREADABLE, JsonOpt, app_state, emit_json, fail

app = typer.Typer(
    help="Appliance profiles: what a site's appliance must be, in YAML, layered base → site → unit.",
    no_args_is_help=True,
)
SiteOpt = Annotated[
    Path | None, typer.Option("--site", "-s", help="A site overlay (profiles/sites/*.yaml) merged onto the profile.")
]
SerialOpt = Annotated[str | None, typer.Option("--serial", help="A unit serial, to check what depends on it.")]
UnitOpt = Annotated[
    Path | None, typer.Option("--unit", help="A unit overlay (serial + per-unit overrides, e.g. from an order).")
]


def _complete_model(incomplete: str) -> list[str]:
    from oemkit.catalog import default_catalog_dir

    return sorted(
        p.parent.name + "-" + p.stem
        for p in default_catalog_dir().glob("*/*.yaml")
        if (p.parent.name + "-" + p.stem).startswith(incomplete)
    )


@app.command()
def validate(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH...", help="Profiles, or site overlays (their profile is found beside)."),
    ],
    site: SiteOpt = None,
    serial: SerialOpt = None,
    unit: UnitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check profiles: schema, merged layers, and cross-checks against the hardware catalog.

    Every problem is reported as FILE:LINE:COL: severity: PATH: message. Exit 0: valid (warnings allowed);
    1: invalid; 2: a file could not be read.
    """
    from oemkit.profile.check import check

    results = [check(p, site, serial, app_state(ctx).catalog_dir, unit) for p in paths]
    if as_json:
        emit_json([{k: v for k, v in p.to_dict().items()} for r in results for p in r.resolved.problems])
    else:
        for r in results:
            errors, warnings = r.resolved.errors, r.resolved.warnings
            for p in errors + warnings:
                sys.stdout.write(f"{p}\n")
            verdict = "unreadable" if r.unreadable else "invalid" if errors else "valid"
            counts = ", ".join(
                f"{n} {w}{'s' if n != 1 else ''}" for n, w in ((len(errors), "error"), (len(warnings), "warning")) if n
            )
            sys.stdout.write(f"{r.label}: {verdict}{' (' + counts + ')' if counts else ''}\n")
    if any(r.unreadable for r in results):
        raise typer.Exit(EXIT_UNREADABLE)
    raise typer.Exit(EXIT_NO if any(r.resolved.errors for r in results) else EXIT_OK)


@app.command()
def show(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="PROFILE", help="A profile.")],
    site: SiteOpt = None,
    serial: SerialOpt = None,
    unit: UnitOpt = None,
    origin: Annotated[bool, typer.Option("--origin", help="Say which file and line set each value.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the merged, resolved profile (base → site → unit) exactly as compile will see it."""
    from oemkit.profile.check import check

    r = check(path, site, serial, app_state(ctx).catalog_dir, unit)
    if r.resolved.errors or r.resolved.profile is None:
        if as_json:
            emit_json({"problems": [p.to_dict() for p in r.resolved.problems]})
        for p in r.resolved.errors:
            sys.stderr.write(f"{p}\n")
        raise typer.Exit(EXIT_UNREADABLE if r.unreadable else EXIT_NO)
    from oemkit.problems import format_path
    from oemkit.profile.show import annotated_yaml

    res = r.resolved
    assert res.profile is not None  # refused above
    data = res.profile.model_dump(mode="json", exclude_none=True)
    origins = {format_path(k): f"{o.file}:{o.line}:{o.column}" for k, o in res.origins.items() if k}
    unit_info: dict[str, Any] = {}
    if res.site is not None:
        unit_info["site"] = res.site.site.model_dump(mode="json", exclude_none=True)
    if res.site is not None and res.unit is not None:
        unit_info["serial"] = res.unit.serial
        unit_info["hostname"] = res.profile.host.render(res.site.site.code, res.unit.serial, res.profile.models[0])
    if as_json:
        out = {"profile": data, "origins": origins} if origin else dict(data)
        if unit_info:
            out["resolved"] = unit_info
        emit_json(out)
        return
    import yaml

    from oemkit.yaml12 import Dumper

    text = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=110)
    if origin:
        text = annotated_yaml(data, r.resolved.origins)
    header = f"# {r.label}\n"
    if unit_info:
        header += "".join(f"# {k}: {json.dumps(v)}\n" for k, v in unit_info.items())
    sys.stdout.write(header + text)


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="The old document.")],
    b: Annotated[Path, typer.Argument(help="The new document.")],
    as_json: JsonOpt = False,
) -> None:
    """Changes from A to B by path (old → new), whatever the key order. Exit 0: same; 1: different; 2: unreadable."""
    from oemkit.errors import OemkitError
    from oemkit.profile.diff import diff as compare
    from oemkit.yamlio import load_file

    try:
        old, new = load_file(a).data, load_file(b).data
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    changes = compare(old, new)
    if as_json:
        emit_json([c.to_dict() for c in changes])
    else:
        sign = {"added": "+", "removed": "-", "changed": "~"}
        for c in changes:
            if c.op == "changed":
                sys.stdout.write(f"~ {c.path}: {json.dumps(c.old)} → {json.dumps(c.new)}\n")
            else:
                value = c.new if c.op == "added" else c.old
                sys.stdout.write(f"{sign[c.op]} {c.path}: {json.dumps(value)}\n")
        if not changes:
            sys.stdout.write("no changes\n")
    raise typer.Exit(EXIT_NO if changes else EXIT_OK)


@app.command()
def schema(
    kind: Annotated[str, typer.Option("--kind", help="profile, site or unit.")] = "profile",
    fmt: Annotated[str, typer.Option("--format", help="json (JSON Schema) or markdown (the reference).")] = "json",
) -> None:
    """Print the JSON Schema editors use (additionalProperties: false), or the Markdown reference."""
    from oemkit.profile.export import KINDS, json_schema, reference_markdown

    if kind not in KINDS or fmt not in ("json", "markdown"):
        sys.stderr.write("oemkit: error: --kind is profile, site or unit; --format is json or markdown\n")
        raise typer.Exit(EXIT_UNREADABLE)
    if fmt == "markdown":
        sys.stdout.write(reference_markdown())
    else:
        emit_json(json_schema(kind))


@app.command()
def init(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Catalog model id.", autocompletion=_complete_model)],
    name: Annotated[str, typer.Option("--name", help="Profile name (metadata.name).")] = "my-appliance",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUTPUT.")] = False,
) -> None:
    """Write a commented profile for MODEL that validates as it is, to edit from there.

    Exit 0: written; 1: no such model; 2: a bad --name, or OUTPUT exists (without --force) or is not a regular
    file — nothing written."""
    import difflib
    import re

    from oemkit.cli.common import load_catalog_or_fail
    from oemkit.errors import OemkitError
    from oemkit.outputs import check_new, write_output
    from oemkit.profile.scaffold import scaffold
    from oemkit.profile.schema import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, name):
        fail(
            OemkitError(
                f"--name {name!r} is not a profile name: lowercase letters, digits and '-', up to 31, "
                "starting with a letter"
            ),
            as_json=False,
            code=EXIT_UNREADABLE,
        )
    if output is not None:
        try:
            check_new(output, force)  # before any work
        except OemkitError as exc:
            fail(exc, as_json=False)
    catalog = load_catalog_or_fail(ctx, False)
    hw = catalog.get(model)
    if hw is None:
        close = difflib.get_close_matches(model, catalog.ids, n=1, cutoff=0.5)
        fail(
            OemkitError(
                f"no model {model!r} in the catalog",
                hint=f"did you mean {close[0]}?" if close else "see `oemkit catalog list`",
            ),
            as_json=False,
            code=EXIT_NO,
        )
    text = scaffold(hw, name)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_output(output, text, force=force)
    except OemkitError as exc:
        fail(exc, as_json=False)
    sys.stderr.write(f"wrote {output}; check it with: oemkit profile validate {output}\n")
