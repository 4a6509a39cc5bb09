"""The schema, exported: JSON Schema for editors and the Markdown reference in docs/ (generated: it cannot drift)."""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel

from oemkit.profile.schema import API_VERSION, ApplianceProfile, SiteOverlay, UnitOverlay

KINDS: dict[str, type[BaseModel]] = {"profile": ApplianceProfile, "site": SiteOverlay, "unit": UnitOverlay}


def _partial(schema: dict[str, Any]) -> dict[str, Any]:
    """Every object optional at every depth: what an overlay's `overrides` may hold."""
    out = copy.deepcopy(schema)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("required", None)
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(out)
    return out


def json_schema(kind: str) -> dict[str, Any]:
    """JSON Schema (2020-12) with additionalProperties: false everywhere, as YAML language servers use it."""
    model = KINDS[kind]
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://oemkit.dev/schema/{API_VERSION.split('/')[-1]}/{kind}.json"
    if kind in ("site", "unit"):
        profile = ApplianceProfile.model_json_schema()
        partial = _partial({k: v for k, v in profile.items() if k != "$defs"})
        for key in ("apiVersion", "kind"):
            partial["properties"].pop(key, None)
        schema.setdefault("$defs", {}).update(_partial(profile.get("$defs", {})))
        schema["properties"]["overrides"] = {**partial, "description": "Profile values, deep-merged onto it."}
    return schema


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "const" in prop:
        return json.dumps(prop["const"])
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " \\| ".join(_type(p, defs) for p in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    return str(prop.get("type", "any"))


def _constraints(prop: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
    ):
        if key in prop:
            value = f"`{prop[key]}`" if key == "pattern" else prop[key]
            parts.append(f"{label} {value}")
    for sub in prop.get("anyOf", []):
        parts.append(_constraints(sub))
    return "; ".join(p for p in parts if p)


def _rows(schema: dict[str, Any], defs: dict[str, Any], prefix: str, seen: set[str]) -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        req = "yes" if name in required else ("site" if prop.get("x-site-value") else "")
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        desc = (prop.get("description") or "").replace("|", "\\|").replace("\n", " ")
        recorded = prop.get("x-recorded-only")
        if isinstance(recorded, dict):  # sealed, but the appliance does not act on it yet
            desc += f" **Recorded only, not acted on yet:** {recorded['today']}."
        extra = _constraints(prop)
        rows.append(
            f"| `{path}` | {_type(prop, defs)} | {req} | {default} | {desc}{' (' + extra + ')' if extra else ''} |"
        )
        for ref in _refs(prop):
            if ref not in seen:
                sub = defs[ref]
                item = (
                    "[]"
                    if prop.get("type") == "array" or any(p.get("type") == "array" for p in prop.get("anyOf", []))
                    else ""
                )
                rows += _rows(sub, defs, path + item, seen | {ref})
    return rows


def _refs(prop: dict[str, Any]) -> list[str]:
    out = []
    for candidate in (
        prop,
        prop.get("items", {}),
        *prop.get("anyOf", []),
        *[p.get("items", {}) for p in prop.get("anyOf", [])],
    ):
        if isinstance(candidate, dict) and "$ref" in candidate:
            out.append(candidate["$ref"].rsplit("/", 1)[-1])
    return out


def reference_markdown() -> str:
    lines = [
        f"# Profile reference ({API_VERSION})",
        "",
        "Generated from `oemkit/profile/schema/v1.py` by `oemkit profile schema --format markdown`; a test fails",
        "when this page and the schema disagree, so it cannot drift. Required: `yes`; `site`: may be left out of a",
        "base profile, but the site overlay must then set it. Unknown keys are errors everywhere. **Recorded only**:",
        "sealed into the unit config, but the appliance does not act on it yet (validation warns when a profile asks",
        "for more than what the box does today).",
        "",
    ]
    for kind, title in (
        ("profile", "ApplianceProfile (profiles/*.yaml)"),
        ("site", "SiteOverlay (profiles/sites/*.yaml)"),
        ("unit", "UnitOverlay (per unit, from an order)"),
    ):
        schema = KINDS[kind].model_json_schema()
        defs = schema.get("$defs", {})
        lines += [
            f"## {title}",
            "",
            (schema.get("description") or "").strip(),
            "",
            "| key | type | required | default | description |",
            "|---|---|---|---|---|",
        ]
        lines += _rows(schema, defs, "", set())
        lines.append("")
    return "\n".join(lines)
