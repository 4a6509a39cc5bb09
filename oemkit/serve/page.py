"""The fleet page: one server-rendered HTML document, per site a table of its units. Jinja2 with autoescaping on
(a failure reason is whatever a box sent: it is text, never markup), no script, no external asset; it reloads itself
with <meta http-equiv="refresh">. The Content-Security-Policy forbids everything the page does not use."""

from __future__ import annotations

import datetime as dt

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from oemkit import __version__
from oemkit.serve.schemas import Fleet

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=PackageLoader("oemkit.serve", "templates"),
    autoescape=select_autoescape(["html"], default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _short(value: str | None, keep: int = 16) -> str:
    if not value:
        return "—"
    return value if len(value) <= keep else value[:keep] + "…"


_env.filters["when"] = _when
_env.filters["short"] = _short


def render(fleet: Fleet, *, refresh_seconds: int, now: dt.datetime) -> str:
    return _env.get_template("fleet.html").render(
        fleet=fleet, refresh_seconds=refresh_seconds, now=now, version=__version__
    )
