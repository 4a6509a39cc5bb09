"""The schema's own markers, read back from the pydantic models: one marker drives validation, the JSON Schema
and the generated reference.

- `x-site-value`: a base profile may leave the field to its site overlays; still unset after the merge, an error.
- `x-recorded-only`: sealed into the unit config but not yet acted on by the appliance; a value other than the
  inert one gets a warning saying what the box does today instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

Path_ = tuple[str | int, ...]


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _fields(model: type[BaseModel], data: Any, path: Path_ = ()) -> Iterator[tuple[Path_, dict[str, Any], Any]]:
    """(path, schema extras, value or None) of every field of `model` that `data` reaches (nested models only
    where the data has a mapping)."""
    if not isinstance(data, dict):
        return
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        yield (*path, name), extra, data.get(name)
        sub = _submodel(info.annotation)
        if sub is not None and isinstance(data.get(name), dict):
            yield from _fields(sub, data[name], (*path, name))


def unset_site_values(model: type[BaseModel], data: Any) -> list[Path_]:
    """Paths of fields marked x-site-value that are unset in `data`."""
    return [path for path, extra, value in _fields(model, data) if extra.get("x-site-value") and value is None]


def recorded_only(model: type[BaseModel], data: Any) -> list[tuple[Path_, str]]:
    """(path, what the box does today) for each field marked x-recorded-only that `data` sets to a value that asks
    for more than that."""
    out = []
    for path, extra, value in _fields(model, data):
        marker = extra.get("x-recorded-only")
        if isinstance(marker, dict) and path[-1] in data_keys(data, path) and value != marker["inert"]:
            out.append((path, str(marker["today"])))
    return out


def data_keys(data: Any, path: Path_) -> set[str | int]:
    """The keys present at the parent of `path` (a default the author never wrote is not "set")."""
    for part in path[:-1]:
        data = data.get(part) if isinstance(data, dict) else None
    return set(data) if isinstance(data, dict) else set()
