"""`oemkit register`: a built, burned-in unit made known to the provisioning service, its one-time enrolment token
written onto its config partition — the last step before the unit ships (docs/zero-touch.md).

Order matters for a crash or a refusal half-way: the service learns the token's hash first, the image gets the
token after. A failure before the service answered changes nothing; one after it leaves a service expecting a token
the image does not carry yet, which registering again mends (the service replaces an unenrolled unit's hash).

The service is the one the unit's signed config names (`management.phone_home.url`), reached through the CA that
config pins, so the factory checks the very chain the box will. Another `--server` is for a factory-side address
of the same service (a different host name, a proxy), checked with its own `--ca` or else the system's CAs. The
admin token goes only over https (or http to this machine's loopback), and never follows a redirect."""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypervisor_core import config
from oemkit.errors import OemkitError, UnreadableInput
from oemkit.image.appliance import disk, enrolment, layout, manifest, qcow2

TIMEOUT_S = 30
MAX_ANSWER = 64 << 10
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class ServiceError(OemkitError):
    """The service could not be reached or answered nonsense (nothing written onto the image)."""


class ServiceRefused(ServiceError):
    """The service answered and said no (nothing written onto the image)."""


@dataclass(frozen=True)
class Registered:
    serial: str
    server: str
    replaced: bool  # the service already knew this unit (not yet enrolled): its token was replaced
    token_file_sha256: str


def unit_config(unit_dir: Path, m: dict) -> config.UnitConfig:
    """The unit config on the image's config partition, as the manifest records it (the image verified before)."""
    name = manifest.image_name(m["format"])
    with tempfile.TemporaryDirectory(prefix="oemkit-register-") as tmp:
        image = unit_dir / name
        guest = qcow2.guest_raw(image, Path(tmp) / "guest.raw") if m["format"] == "qcow2" else image
        dest = Path(tmp) / "unit.json"
        if not disk.fat_read(guest, layout.CONFIG.start, "/unit.json", dest):
            raise UnreadableInput("no /unit.json on the config partition", file=str(image))
        raw = dest.read_bytes()
    if hashlib.sha256(raw).hexdigest() != m["unit_config"]["sha256"]:
        raise UnreadableInput("the config partition's unit.json is not the one the manifest records", file=str(image))
    try:
        return config.load(raw, None)  # the bytes the factory built (verified above); the box checks the signature
    except config.ConfigError as exc:
        raise UnreadableInput(f"the unit config: {exc}", file=str(image)) from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error here: urllib would follow it as a GET and carry the admin token to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise urllib.error.HTTPError(req.full_url, code, f"redirected to {newurl}: not followed", headers, fp)


def _opener(url: str, ca_pem: str | None) -> urllib.request.OpenerDirector:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ServiceError(f"{url}: not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise ServiceError(f"{url}: the admin token never crosses a network in clear (https://, or http:// to this "
                           "machine's loopback only)")  # fmt: skip
    # only the pinned CA when one is given, as on the box (create_default_context(cadata=) adds no system CAs)
    ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    return urllib.request.build_opener(_NoRedirects(), urllib.request.HTTPSHandler(context=ctx))


def post(server: str, path: str, body: dict[str, Any], admin_token: str, ca_pem: str | None) -> tuple[int, dict]:
    """POST JSON to the service; (status, answer). ServiceError when it cannot be reached or answers nonsense."""
    url = server.rstrip("/") + path
    request = urllib.request.Request(
        url,
        data=json.dumps(body, sort_keys=True).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin_token}"},
        method="POST",
    )
    try:
        with _opener(url, ca_pem).open(request, timeout=TIMEOUT_S) as answer:
            status, raw = answer.status, answer.read(MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(MAX_ANSWER) if exc.fp is not None else b""
        if 300 <= status < 400:
            raise ServiceError(f"the provisioning service at {url} answered a redirect ({status}): not followed, "
                               "so the admin token stays here; give the service's own URL") from None  # fmt: skip
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise ServiceError(f"cannot reach the provisioning service at {url}: {reason}") from None
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {"detail": raw[:200].decode(errors="replace")}
    return status, doc if isinstance(doc, dict) else {"detail": str(doc)[:200]}


def register(unit_dir: Path, admin_token: str, server: str | None = None, ca_pem: str | None = None) -> Registered:
    """Register the unit in `unit_dir` with its provisioning service and write its enrolment token."""
    m = enrolment.check_unit(unit_dir)
    cfg = unit_config(unit_dir, m)
    phone = cfg.phone_home
    if phone is None:
        raise enrolment.RegisterRefused(
            "this unit's profile has no management.phone_home: the box would never enrol or report",
            file=str(unit_dir),
        )
    url = server or phone.url
    pinned = ca_pem if server else phone.ca_pem
    token = enrolment.new_token()
    body = {
        "serial": cfg.serial,
        "model": cfg.model,
        "site": cfg.site,
        "profile": cfg.profile,
        "content_id": cfg.content_id,
        "core_id": m["core_id"],
        "pcr15_expected": m["pcr15_expected"],
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "branding": {
            "oem_name": cfg.branding.oem_name,
            "product": cfg.branding.product,
            "support_url": cfg.branding.support_url,
        },
    }
    status, answer = post(url, "/v1/units", body, admin_token, pinned)
    if status not in (200, 201):
        detail = answer.get("detail", "")
        raise ServiceRefused(f"the provisioning service refused {cfg.serial} (HTTP {status}): {detail}",
                           file=str(unit_dir))  # fmt: skip
    if answer.get("serial") != cfg.serial:  # a 200 from something that is not the service: no token on the image
        raise ServiceError(f"{url} answered {status} without naming {cfg.serial}: not the provisioning service?",
                           file=str(unit_dir))  # fmt: skip
    new = enrolment.write_token(unit_dir, m, token, url)
    return Registered(cfg.serial, url, status == 200, new["enrolment"]["token_file_sha256"])
