"""`oemkit register`: make a built, burned-in unit known to the provisioning service and write its one-time
enrolment token onto its config partition (oemkit/registration.py, docs/zero-touch.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from oemkit.cli.common import EXIT_NO, EXIT_UNREADABLE, JsonOpt, emit_json, fail

ADMIN_ENV = "OEMKIT_ADMIN_TOKEN"


def admin_token(env: str, as_json: bool) -> str:
    """The admin token from the environment variable `env`: never a command-line argument (a process list and a
    shell history show those)."""
    from oemkit.errors import OemkitError

    token = os.environ.get(env, "")
    if not token:
        fail(OemkitError(f"no admin token: set the environment variable {env}"), as_json=as_json)
    return token


def register_command(
    unit_dir: Annotated[Path, typer.Argument(help="OUT/<serial>: a built unit (oemkit image build).")],
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="The service's URL as the factory reaches it (default: the unit config's phone_home.url, through "
            "the CA it pins).",
        ),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="PEM CA for an https --server (default: the system's CAs).")
    ] = None,
    admin_token_env: Annotated[
        str, typer.Option("--admin-token-env", help="The environment variable holding the admin token.")
    ] = ADMIN_ENV,
    as_json: JsonOpt = False,
) -> None:
    """Register the unit with the provisioning service and write its enrolment token beside its signed config —
    the last step before shipping, after burn-in. Registering again (before the box enrolled) replaces the token.
    Exit 0 registered, 1 refused (the image does not verify, no phone home, the service said no), 2 bad input or
    the service unreachable."""
    from oemkit import registration
    from oemkit.errors import OemkitError
    from oemkit.image.appliance.enrolment import RegisterRefused

    token = admin_token(admin_token_env, as_json)
    try:
        ca_pem = ca.read_text() if ca is not None else None
        done = registration.register(unit_dir, token, server, ca_pem)
    except RegisterRefused as exc:
        fail(exc, as_json=as_json, code=EXIT_NO)
    except registration.ServiceRefused as exc:
        fail(exc, as_json=as_json, code=EXIT_NO)
    except OemkitError as exc:
        fail(exc, as_json=as_json, code=EXIT_UNREADABLE)
    except OSError as exc:
        fail(OemkitError(f"{exc.strerror or exc}", file=exc.filename), as_json=as_json, code=EXIT_UNREADABLE)
    if as_json:
        emit_json({"serial": done.serial, "server": done.server, "replaced": done.replaced,
                   "token_file_sha256": done.token_file_sha256})  # fmt: skip
    else:
        again = " (registered again: the earlier token no longer enrols)" if done.replaced else ""
        sys.stdout.write(f"{done.serial}: registered with {done.server}; enrolment token written{again}\n")
