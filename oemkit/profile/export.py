"""The schema, exported: JSON Schema for editors and the Markdown reference in docs/ (generated: it cannot drift)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from oemkit.profile.schema import API_VERSION, ApplianceProfile, SiteOverlay, UnitOverlay

KINDS: dict[str, type[BaseModel]] = {"profile": ApplianceProfile, "site": SiteOverlay, "unit": UnitOverlay}


_ANNOTATIONS = ("title", "description", "default", "examples")
_NULL: dict[str, Any] = {"type": "null"}


def _ref_name(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """`prop`, or null: in an overlay, null removes the key from what the layers below set. One type or null is
    written as a list of types, so an editor says "5000 is greater than the maximum of 4094", not "not valid under
    any of the given schemas"."""
    branches = prop.get("anyOf", [])
    if len(branches) == 2 and branches[1] == _NULL and isinstance(branches[0].get("type"), str):
        prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **branches[0]}  # pydantic's `X | None`
    elif prop.get("type") == "null" or _NULL in branches:
        return prop
    elif branches:
        return {**prop, "anyOf": [*branches, _NULL]}
    if isinstance(prop.get("type"), str) and "$ref" not in prop:  # one type: its keywords leave null alone
        out = {**prop, "type": [prop["type"], "null"]}
        if "const" in prop:
            out["enum"] = [out.pop("const"), None]
        elif "enum" in prop:
            out["enum"] = [*prop["enum"], None]
        return out
    notes = {k: v for k, v in prop.items() if k in _ANNOTATIONS or k.startswith("x-")}
    return {**notes, "anyOf": [{k: v for k, v in prop.items() if k not in notes}, _NULL]}


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """`prop` without its null branch (and without its null default)."""
    branches = [b for b in prop.get("anyOf", []) if b != _NULL]
    if "anyOf" not in prop or len(branches) == len(prop["anyOf"]):
        return prop
    rest = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**rest, **branches[0]} if len(branches) == 1 else {**rest, "anyOf": branches}


def _reachable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with only the $defs it refers to (directly or through other $defs)."""
    defs, keep, todo = schema.get("$defs", {}), set(), [{k: v for k, v in schema.items() if k != "$defs"}]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            name = _ref_name(node)
            if name and name not in keep:
                keep.add(name)
                todo.append(defs[name])
            todo += node.values()
        elif isinstance(node, list):
            todo += node
    if defs:
        schema["$defs"] = {k: v for k, v in defs.items() if k in keep}
    return schema


class _Overrides:
    """The JSON Schema of an overlay's `overrides`, following the merge (profile/layers.py) rather than the model:

    - a mapping deep-merges, so no key is required in it, and a key the profile may leave out may be null (null
      removes it; its default applies) — a required key may not (removing it leaves the profile without it), nor
      a site value (`x-site-value`: every unit needs one; validate says "removed (null) here");
    - a list whose items have a `name` merges item by item, so an item needs only its name;
    - any other list replaces the profile's, so its items are checked in full.
    Profile $defs keep their names (full, for replaced lists); their overlay forms are `<Name>Override`."""

    def __init__(self, profile: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = profile.get("$defs", {})
        self.out: dict[str, Any] = {}

    def ref(self, name: str) -> dict[str, Any]:
        key = f"{name}Override"
        if key not in self.out:
            self.out[key] = {}  # reserved first: a recursive $ref ends here
            self.out[key] = self.mapping(self.defs[name], keyed=self._keyed(name))
        return {"$ref": f"#/$defs/{key}"}

    def _keyed(self, name: str) -> bool:
        return "name" in self.defs[name].get("required", [])

    def value(self, prop: dict[str, Any]) -> dict[str, Any]:
        name = _ref_name(prop)
        if name:
            return {**prop, **self.ref(name)}
        if "anyOf" in prop:
            return {**prop, "anyOf": [self.value(p) for p in prop["anyOf"]]}
        item = _ref_name(prop.get("items", {}))
        if prop.get("type") == "array" and item and self._keyed(item):
            return {**prop, "items": {**prop["items"], **self.ref(item)}}
        return prop  # a scalar, or a list that replaces: checked in full

    def mapping(self, schema: dict[str, Any], keyed: bool = False) -> dict[str, Any]:
        required = set(schema.get("required", []))
        out = {k: v for k, v in schema.items() if k != "required"}
        if keyed:
            out["required"] = ["name"]
        props = {}
        for key, prop in schema.get("properties", {}).items():
            prop = self.value(prop)
            if key not in required:
                prop = _not_null(prop) if prop.get("x-site-value") else _nullable(prop)
            props[key] = prop
        out["properties"] = props
        return out


def json_schema(kind: str) -> dict[str, Any]:
    """JSON Schema (2020-12) with additionalProperties: false everywhere, as YAML language servers use it. It accepts
    what `oemkit profile validate` accepts of one document (types as strict: "4" is not 4, "yes" is not true), less
    what only Python checks (addresses, host names, time zones) and what needs the catalog or the other layers."""
    model = KINDS[kind]
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://oemkit.dev/schema/{API_VERSION.split('/')[-1]}/{kind}.json"
    if kind in ("site", "unit"):
        profile = ApplianceProfile.model_json_schema()
        overrides = _Overrides(profile)
        top = overrides.mapping({k: v for k, v in profile.items() if k != "$defs"})
        for key in ("apiVersion", "kind"):
            top["properties"].pop(key, None)
        description = "Profile values, deep-merged onto it; null removes a value (its default applies)."
        schema["properties"]["overrides"] = {**top, "description": description}
        defs = schema.setdefault("$defs", {})
        clash = (set(profile.get("$defs", {})) | set(overrides.out)) & set(defs)
        assert not clash, f"$defs of {model.__name__} and ApplianceProfile share names: {sorted(clash)}"
        defs.update(profile.get("$defs", {}))
        defs.update(overrides.out)
        _reachable(schema)
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
