"""What one `oemkit serve` needs to know: the database, the admin token's SHA-256, the per-unit rate limits. The CLI
builds it once; uvicorn's worker processes (--workers N) get it back from the environment, where only the token's
hash travels, never the token."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MAX_BODY = 64 * 1024  # the contract's bound on a request body, in bytes
MIN_ADMIN_TOKEN = 16  # characters: a shorter admin token could be guessed, so the service refuses to start with it
DEFAULT_ENROL_RATE = "10/minute"  # per unit: a box enrols once; this only slows guessing at a serial's token
DEFAULT_REPORT_RATE = "60/minute"  # per unit: a box back from days offline sends its spool, then a report a boot
LAST_REPORTS = 20  # reports `GET /v1/units/{serial}` lists, newest first
REFRESH_SECONDS = 30  # the fleet page reloads itself this often
ENV = "OEMKIT_SERVE_SETTINGS"  # the CLI → uvicorn worker hand-over (JSON)


def default_db_url() -> str:
    """SQLite in ${XDG_DATA_HOME:-~/.local/share}/oemkit/serve.db: data, not cache (it holds the fleet's history)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return "sqlite:///" + str(Path(base, "oemkit", "serve.db"))


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Settings:
    db_url: str
    admin_token_sha256: bytes = field(repr=False)  # the only form of the admin token the service keeps
    enrol_rate: str = DEFAULT_ENROL_RATE
    report_rate: str = DEFAULT_REPORT_RATE
    refresh_seconds: int = REFRESH_SECONDS

    @classmethod
    def with_token(cls, db_url: str, token: str, **options: str | int) -> Settings:
        return cls(db_url, token_digest(token), **options)  # type: ignore[arg-type]

    def to_env(self) -> str:
        return json.dumps(
            {
                "db_url": self.db_url,
                "admin_token_sha256": self.admin_token_sha256.hex(),
                "enrol_rate": self.enrol_rate,
                "report_rate": self.report_rate,
                "refresh_seconds": self.refresh_seconds,
            }
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        raw = environ.get(ENV)
        if not raw:
            raise RuntimeError(f"${ENV} is not set: start the service with `oemkit serve`")
        data = json.loads(raw)
        return cls(
            db_url=str(data["db_url"]),
            admin_token_sha256=bytes.fromhex(data["admin_token_sha256"]),
            enrol_rate=str(data["enrol_rate"]),
            report_rate=str(data["report_rate"]),
            refresh_seconds=int(data["refresh_seconds"]),
        )
