"""`oemkit keys`: the factory's keys — the Ed25519 config-signing key, the Secure Boot PK/KEK/db, and an OVMF
variable store with them enrolled."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from oemkit.cli.common import JsonOpt, emit_json, fail

app = typer.Typer(help="The factory's keys: config signing and Secure Boot.", no_args_is_help=True)


@app.command("init")
def keys_init(
    folder: Annotated[Path, typer.Option("--dir", help="Where to write signing.key (0600) and signing.pub.")],
    secure_boot: Annotated[
        bool,
        typer.Option(
            "--secure-boot",
            help="Also create the Secure Boot PK, KEK and db (DIR/secureboot/; keys 0600, .crt PEM, .cer DER), "
            "beside an existing signing key.",
        ),
    ] = False,
    organisation: Annotated[
        str, typer.Option("--org", help="The organisation named in the Secure Boot certificates.")
    ] = "oemkit factory",
) -> None:
    """Create the factory's keys. An existing key is never overwritten: with --secure-boot an existing signing key
    is kept (and said so), existing Secure Boot keys are refused."""
    from oemkit.errors import OemkitError
    from oemkit.seal.keys import init_keys

    try:
        if secure_boot and (folder / "signing.key").exists():
            sys.stderr.write(f"{folder / 'signing.key'}: kept (the config-signing key exists)\n")
        else:
            for path in init_keys(folder):
                sys.stdout.write(f"{path}\n")
        if secure_boot:
            from oemkit.seal.secureboot import ROLES, init_secure_boot

            sb = init_secure_boot(folder, organisation)
            for role in ROLES:
                sys.stdout.write(f"{sb.key(role)}\n{sb.cert(role)}\n{sb.cert(role, der=True)}\n")
            sys.stdout.write(f"{sb.folder / 'owner.guid'}\n")
    except OemkitError as exc:
        fail(exc, as_json=False)
    except OSError as exc:
        fail(OemkitError(f"cannot create keys: {exc.strerror}", file=str(folder)), as_json=False)


@app.command("enroll-vars")
def enroll_vars(
    output: Annotated[Path, typer.Option("--output", "-o", help="The OVMF variable store to write (VARS.fd).")],
    folder: Annotated[Path, typer.Option("--dir", help="The keys folder (with secureboot/).")] = Path("keys"),
    template: Annotated[
        Path | None, typer.Option("--template", help="The empty variable store [default: Debian's OVMF_VARS_4M.fd].")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing VARS.fd.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write an OVMF variable store with the factory's PK, KEK and db enrolled and Secure Boot on (no Microsoft
    keys): what a twin boots with. Checked after writing. Exit 0 written, 2 bad input or a tool missing."""
    from oemkit.errors import OemkitError
    from oemkit.seal import firmware_vars, secureboot

    try:
        keys = secureboot.load(folder)
        prints = firmware_vars.enroll(keys, template or firmware_vars.OVMF_VARS_TEMPLATE, output, force=force)
    except OemkitError as exc:
        fail(exc, as_json=as_json)
    except OSError as exc:
        fail(OemkitError(f"{exc.strerror}", file=exc.filename), as_json=as_json)
    if as_json:
        emit_json({"vars": str(output), "owner": keys.owner, "sha256": prints, "secure_boot": True})
    else:
        sys.stdout.write(f"{output}: PK, KEK, db enrolled (owner {keys.owner}), Secure Boot on\n")


@app.command("service-ca")
def service_ca(
    folder: Annotated[Path, typer.Option("--dir", help="Where to write service-ca.key (0600) and service-ca.pem.")],
    organisation: Annotated[str, typer.Option("--org", help="The organisation named in the CA.")] = "oemkit factory",
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing CA (boxes pinning the old one stop trusting the service)."),
    ] = False,
) -> None:
    """Create the provisioning service's TLS CA. Its service-ca.pem goes into the profile's
    management.phone_home.ca_pem: the boxes trust that CA for the service and nothing else."""
    from oemkit.errors import OemkitError
    from oemkit.seal.tlsca import init_ca

    try:
        issued = init_ca(folder, organisation, force=force)
    except OemkitError as exc:
        fail(exc, as_json=False)
    sys.stdout.write(f"{issued.key}\n{issued.cert}\n")


@app.command("service-cert")
def service_cert(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for server.key (0600) and server.pem.")],
    hosts: Annotated[
        list[str], typer.Option("--host", help="A DNS name or IP address the boxes reach the service by (repeat).")
    ],
    folder: Annotated[Path, typer.Option("--dir", help="The folder holding the service CA.")] = Path("keys"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing server key and certificate.")] = False,
) -> None:
    """Issue the service's TLS certificate from the service CA (for `oemkit serve --tls-cert/--tls-key`)."""
    from oemkit.errors import OemkitError
    from oemkit.seal.tlsca import issue_server

    try:
        issued = issue_server(folder, output, hosts, force=force)
    except OemkitError as exc:
        fail(exc, as_json=False)
    sys.stdout.write(f"{issued.key}\n{issued.cert}\n")
