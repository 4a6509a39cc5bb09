"""Seal units: a checked profile + site + serial → a signed UnitConfig (the agent's own type), for one unit or for
every row of an order — through the very same `seal_unit`.

Same inputs → same bytes: the content id is SHA-256 over the config's canonical JSON, the Ed25519 signature
covers everything but itself, and nothing in it depends on the time or the machine.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypervisor_core import config as unit
from oemkit.catalog.schema import HardwareModel
from oemkit.catalog.store import Catalog
from oemkit.problems import Problem
from oemkit.profile.check import Checked, check
from oemkit.profile.layers import Origin
from oemkit.profile.schema import hostname_problem, serial_problem
from oemkit.seal.keys import raw_public
from oemkit.seal.unitconfig import Blueprint, blueprint

COMMAND_LINE = ("(command line)", 1, 1)


@dataclass(frozen=True)
class Request:
    """One unit to seal: its serial, the catalog model when the profile has several, and where it was asked for
    (the command line, or a row of an order) so that a problem with it points there."""

    serial: str
    model_id: str | None = None
    where: tuple[str, int, int] = COMMAND_LINE
    what: str = "--model"  # how the person names the model there
    path: str = "unit"  # what a problem with the request is about, in its location


@dataclass
class Compiled:
    serial: str
    problems: list[Problem]
    config: unit.UnitConfig | None = None
    document: dict[str, Any] = field(default_factory=dict)  # config's canonical form, as signed

    def text(self) -> str:
        """The file as written: sorted keys, two-space indent, newline at the end — byte-stable."""
        assert self.config is not None
        return json.dumps(self.document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def sign(cfg: unit.UnitConfig, key: Ed25519PrivateKey) -> tuple[unit.UnitConfig, dict[str, Any]]:
    """The config with its content id and the Ed25519 signature over its canonical form, and that form."""
    body = cfg.to_dict()  # the content id leaves the seal out; the signature covers all but itself
    body["content_id"] = unit.content_id(body)
    body["signed_by"] = unit.key_id(raw_public(key))
    body["signature"] = "ed25519:" + base64.b64encode(key.sign(unit.signed_bytes(body))).decode()
    sealed = replace(cfg, content_id=body["content_id"], signed_by=body["signed_by"], signature=body["signature"])
    return sealed, body


@dataclass
class Sealer:
    """Seals units with one key against one catalog; remembers each (checked profile, model) blueprint, so an
    order of thousands of units builds each only once."""

    key: Ed25519PrivateKey
    catalog: Catalog
    _blueprints: dict[tuple[int, str], tuple[Checked, Blueprint]] = field(default_factory=dict)

    def _blueprint(self, checked: Checked, model: HardwareModel) -> Blueprint:
        key = (id(checked), model.id)  # the Checked is kept with it: its id cannot be reused meanwhile
        if key not in self._blueprints:
            res = checked.resolved
            assert res.profile is not None and res.site is not None
            self._blueprints[key] = (checked, blueprint(res.profile, res.site, model))
        return self._blueprints[key][1]

    def seal_unit(self, checked: Checked, request: Request) -> Compiled:
        res = checked.resolved
        if res.errors or res.profile is None or res.site is None:
            return Compiled(request.serial, res.errors or res.problems)
        p = res.profile

        def fail(message: str, where: Origin | tuple[str, int, int], path: str) -> Compiled:
            if isinstance(where, Origin):
                where = (where.file, where.line, where.column)
            return Compiled(request.serial, [Problem(*where, path, message)])

        why = serial_problem(request.serial)
        if why:
            return fail(why, request.where, request.path)
        # which model: a problem with the request points where the request was made (an order's row), or, on the
        # command line, at the profile's models
        model_where, model_path = (
            (res.where(("models",)), "models") if request.where == COMMAND_LINE else (request.where, request.path)
        )
        model_id = request.model_id or (p.models[0] if len(p.models) == 1 else None)
        if model_id is None:
            return fail(f"the profile targets {', '.join(p.models)}: say which with {request.what}", model_where,
                        model_path)  # fmt: skip
        if model_id not in p.models:
            message = f"model {model_id} is not one of this profile's models ({', '.join(p.models)})"
            return fail(message, model_where, model_path)
        model = self.catalog.get(model_id)
        assert model is not None  # lint has checked every model the profile lists
        try:
            plan = self._blueprint(checked, model)
            why = hostname_problem(plan.hostname(request.serial))
            if why:
                return fail(why, res.where(("host", "hostname")), "host.hostname")
            cfg = plan.unit(request.serial)
        except (ValueError, unit.ConfigError) as exc:  # the agent's own invariants refuse it: say so, seal nothing
            return fail(f"the sealed config would be refused on the box: {exc}", res.where(()), "(document)")
        sealed, document = sign(cfg, self.key)
        return Compiled(request.serial, [], sealed, document)


def compile_unit(
    profile: Path,
    site: Path,
    serial: str,
    key: Ed25519PrivateKey,
    catalog: Catalog,
    model_id: str | None = None,
    unit_file: Path | None = None,
) -> Compiled:
    """Check the profile with its site (and unit overlay), then seal it for `serial`."""
    checked = check(profile, site, serial, catalog.root, unit_file, catalog=catalog)
    return Sealer(key, catalog).seal_unit(checked, Request(serial, model_id))
