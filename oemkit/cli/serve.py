"""`oemkit serve`: the provisioning service (oemkit/serve/, docs/zero-touch.md): checks its settings, migrates the
database (Alembic, `upgrade head`), then listens with uvicorn. FastAPI and SQLAlchemy are imported only here, inside
the command: `oemkit --help` and every other command start without them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from oemkit.cli.common import EXIT_NO, EXIT_UNREADABLE
from oemkit.serve.settings import (
    DEFAULT_ENROL_RATE,
    DEFAULT_REPORT_RATE,
    ENV,
    MIN_ADMIN_TOKEN,
    Settings,
    default_db_url,
)


def _fail(message: str, code: int = EXIT_UNREADABLE) -> NoReturn:
    sys.stderr.write(f"oemkit: error: {message}\n")
    raise typer.Exit(code)


def serve_command(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL: sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB "
            "(default: SQLite in ${XDG_DATA_HOME:-~/.local/share}/oemkit/serve.db).",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8080,
    admin_token_env: Annotated[
        str, typer.Option("--admin-token-env", help="The environment variable holding the admin token.")
    ] = "OEMKIT_ADMIN_TOKEN",
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="Serve HTTPS: the server certificate (PEM; oemkit keys service-cert)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The server certificate's private key (PEM).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes.")] = 1,
    enrol_rate: Annotated[str, typer.Option("--enrol-rate", help="Enrolments a unit may try (N/minute).")] = (
        DEFAULT_ENROL_RATE
    ),
    report_rate: Annotated[str, typer.Option("--report-rate", help="Reports a unit may send (N/minute).")] = (
        DEFAULT_REPORT_RATE
    ),
    openapi: Annotated[bool, typer.Option("--openapi", help="Print the OpenAPI document (JSON) and exit.")] = False,
) -> None:
    """Run the provisioning service: units enrol and report READY/FAILED; the fleet page (/) shows them per site.

    The admin token (API: Bearer; fleet page: the Basic password) is read from $OEMKIT_ADMIN_TOKEN (--admin-token-env)
    and only its SHA-256 is kept. Exit 2: bad settings (no admin token, a bad --db URL, unreadable TLS files);
    1: the database could not be migrated.
    """
    if openapi:
        from oemkit.serve.app import openapi_json

        sys.stdout.write(openapi_json())
        return
    token = os.environ.pop(admin_token_env, "")  # gone from the environment: worker processes never see it
    if not token:
        _fail(f"no admin token: set ${admin_token_env} to a long random secret (e.g. the output of "
              "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)")  # fmt: skip
    if len(token) < MIN_ADMIN_TOKEN:
        _fail(f"the admin token in ${admin_token_env} is too short: use at least {MIN_ADMIN_TOKEN} random characters")
    if (tls_cert is None) != (tls_key is None):
        _fail("--tls-cert and --tls-key go together")
    import ssl

    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from oemkit.serve import migrate
    from oemkit.serve.db import DatabaseUrlError, normalise_url
    from oemkit.serve.httpproto import BoundedHttpTools
    from oemkit.serve.ratelimit import parse_rate

    if tls_cert is not None and tls_key is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            _fail(f"cannot use {tls_cert} with {tls_key}: {exc}")
    for rate in (enrol_rate, report_rate):
        try:
            parse_rate(rate)
        except ValueError as exc:
            _fail(str(exc))
    url = db or default_db_url()
    try:
        parsed = normalise_url(url)
    except DatabaseUrlError as exc:
        _fail(str(exc))
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        folder = Path(parsed.database or "").expanduser().resolve().parent
        if db is None:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # only the default's folder is ours to make
        elif not folder.is_dir():
            _fail(f"no folder {folder} for the SQLite database")
    url = parsed.render_as_string(hide_password=False)
    try:
        before = migrate.current(url)
        migrate.upgrade(url)
    except SQLAlchemyError as exc:
        _fail(f"database {shown}: {type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"[:500], EXIT_NO)
    if before != migrate.head():
        sys.stderr.write(f"oemkit serve: database schema {before or '(empty)'} → {migrate.head()}\n")
    settings = Settings.with_token(url, token, enrol_rate=enrol_rate, report_rate=report_rate)
    os.environ[ENV] = settings.to_env()  # for the factory below, in this process or in each worker
    scheme = "https" if tls_cert else "http"
    where = f"[{host}]" if ":" in host else host
    sys.stderr.write(f"oemkit serve: listening on {scheme}://{where}:{port}/ (fleet page /, API /v1, /healthz); "
                     f"database {shown}; {workers} worker(s)\n")  # fmt: skip
    sys.stderr.flush()
    uvicorn.run(
        "oemkit.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        server_header=False,
        log_level="info",
        http=BoundedHttpTools,  # httptools with a bound on a request's head (httpproto.py); named, not "auto": a
        loop="uvloop",  # missing one fails at start instead of silently halving the rate
    )
