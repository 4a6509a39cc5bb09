"""The identity index: which model a box is, answerable without importing pydantic or YAML.

`catalog identify` runs once per unit on a build line, thousands of times. Validating the whole catalog each time
costs more than the answer, so the identity rules of a validated catalog are kept as JSON (catalog/cache.py).
This module is the index itself and its JSON form: standard library only, on purpose, and it imports nothing
else of the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypervisor_core.identity import IdentitySpec, SmbiosIdentity, fold

INDEX_FORMAT = 1


@dataclass(frozen=True)
class Identification:
    model_id: str | None
    reason: str  # why this model, or why none


class IdentityIndex:
    def __init__(self, rules: list[tuple[str, IdentitySpec]]) -> None:
        self.rules = sorted(rules)
        self._by_name: dict[tuple[str, str], list[tuple[str, IdentitySpec]]] = {}
        for model_id, spec in self.rules:
            for vendor in spec.manufacturers:
                for name in spec.product_names:
                    self._by_name.setdefault((fold(vendor), fold(name)), []).append((model_id, spec))

    def identify(self, box: SmbiosIdentity) -> Identification:
        """The one model this box is, or None with the reason. Never a guess: exactly one model's identity rule
        (the same rule first boot applies) must accept the box."""
        name = box.model_name
        if name is not None:
            candidates = self._by_name.get((fold(box.sys_vendor), fold(name)), [])
        else:  # only a machine type to go by (a bare "7X06CTO1WW" product name)
            mt = box.machine_type
            candidates = [(i, s) for i, s in self.rules if mt and mt in s.machine_types]
        accepted = [i for i, s in candidates if s.mismatch(box) is None]
        if len(accepted) == 1:
            how = f"machine type {box.machine_type}" if name is None else f"product {name!r}"
            return Identification(accepted[0], f"{box.sys_vendor} {how} is {accepted[0]}")
        if len(accepted) > 1:  # the catalog loader refuses overlapping rules; this is a hand-made index
            return Identification(None, f"ambiguous: {', '.join(accepted)} all match")
        if candidates:
            return Identification(None, candidates[0][1].mismatch(box) or "no match")
        what = name or box.product_name or box.machine_type or "unknown product"
        return Identification(None, f"{box.sys_vendor or 'unknown vendor'} {what} is not in the catalog")

    def to_json(self) -> dict[str, object]:
        return {
            "format": INDEX_FORMAT,
            "rules": [
                {
                    "id": i,
                    "manufacturers": s.manufacturers,
                    "product_names": s.product_names,
                    "machine_types": s.machine_types,
                }
                for i, s in self.rules
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> IdentityIndex:
        if data.get("format") != INDEX_FORMAT:
            raise ValueError("index format")
        return cls(
            [
                (r["id"], IdentitySpec(tuple(r["manufacturers"]), tuple(r["product_names"]), tuple(r["machine_types"])))
                for r in data["rules"]
            ]
        )
