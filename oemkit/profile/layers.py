"""Merge layers (base profile → site overlay → unit) and remember which file and line set every value.

Rules (documented in docs/profiles.md):
- maps deep-merge: a key in the later layer replaces or merges into the same key of the earlier one;
- lists replace, except lists whose items are all maps with a `name` — those merge item by item by name
  (same name: deep-merge; new name: appended in the later layer's order);
- `null` in a later layer removes the key (a site can drop, say, a VLAN the base profile set).
Each merged value keeps the origin (file, line, column) of the layer that last set it, so an error in the merged
result points at the line that caused it, not at line 1. A removed key leaves a tombstone with the origin of its
`null`: a required key a site removed, or a rule it broke by removing one, is blamed on the site's line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oemkit.yamlio import Document

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Origin:
    file: str
    line: int
    column: int
    layer: int = 0  # 0 base profile, 1 site overlay, 2 unit


class _Removed:
    def __repr__(self) -> str:
        return "REMOVED"


REMOVED = _Removed()  # the value of a key a later layer set to null


@dataclass
class Traced:
    """A value of a layer's tree with the place that set it."""

    value: Any  # dict[str, Traced] | list[Traced] | scalar
    origin: Origin


def annotate(doc: Document, prefix: Path_ = (), layer: int = 0) -> Traced | None:
    """The subtree of `doc` at `prefix` as Nodes carrying their origin; None if the prefix is not there."""
    data: Any = doc.data
    for part in prefix:
        in_map = isinstance(data, dict) and isinstance(part, str) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_map or in_list):
            return None
        data = data[part]
    return _annotate(doc, data, prefix, layer)


def _annotate(doc: Document, data: Any, path: Path_, layer: int) -> Traced:
    line, col = doc.locate(path)
    origin = Origin(doc.file, line, col, layer)
    if isinstance(data, dict):
        return Traced({k: _annotate(doc, v, (*path, k), layer) for k, v in data.items()}, origin)
    if isinstance(data, list):
        return Traced([_annotate(doc, v, (*path, i), layer) for i, v in enumerate(data)], origin)
    return Traced(data, origin)


def duplicate_names(node: Traced, path: Path_ = ()) -> list[tuple[Path_, Origin, str, int]]:
    """Items of a named list that share a name, in one layer: (path, where, name, index of the first).
    Found per layer because merging by name would otherwise fold the two silently into one."""
    found: list[tuple[Path_, Origin, str, int]] = []
    if isinstance(node.value, dict):
        for key, child in node.value.items():
            found += duplicate_names(child, (*path, key))
    elif isinstance(node.value, list):
        if _keyed(node.value):
            first: dict[str, int] = {}
            for i, item in enumerate(node.value):
                name = item.value["name"].value
                if name in first:
                    found.append(((*path, i, "name"), item.value["name"].origin, name, first[name]))
                first.setdefault(name, i)
        for i, item in enumerate(node.value):
            found += duplicate_names(item, (*path, i))
    return found


def _keyed(items: list[Traced]) -> bool:
    return bool(items) and all(
        isinstance(n.value, dict) and "name" in n.value and isinstance(n.value["name"].value, str) for n in items
    )


def merge(base: Traced, over: Traced) -> Traced:
    """`over` merged onto `base` (neither is modified)."""
    if isinstance(base.value, dict) and isinstance(over.value, dict):
        out = dict(base.value)
        for key, node in over.value.items():
            if node.value is None:
                if key in out:
                    out[key] = Traced(REMOVED, node.origin)
            elif key in out and out[key].value is not REMOVED:
                out[key] = merge(out[key], node)
            else:
                out[key] = node
        return Traced(out, base.origin)
    if isinstance(base.value, list) and isinstance(over.value, list) and _keyed(base.value) and _keyed(over.value):
        merged = {n.value["name"].value: n for n in base.value}
        order = list(merged)
        for node in over.value:
            name = node.value["name"].value
            if name in merged:
                merged[name] = merge(merged[name], node)
            else:
                merged[name] = node
                order.append(name)
        return Traced([merged[name] for name in order], over.origin)
    return over


def flatten(node: Traced) -> tuple[Any, dict[Path_, Origin]]:
    """Plain data and path → origin of every value (removed keys are in neither: see `removals`)."""
    origins: dict[Path_, Origin] = {}

    def walk(n: Traced, path: Path_) -> Any:
        origins[path] = n.origin
        if isinstance(n.value, dict):
            return {k: walk(v, (*path, k)) for k, v in n.value.items() if v.value is not REMOVED}
        if isinstance(n.value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(n.value)]
        return n.value

    return walk(node, ()), origins


def removals(node: Traced, path: Path_ = ()) -> dict[Path_, Origin]:
    """path → where a later layer removed it (its `null`), for every key removed from the merged tree."""
    found: dict[Path_, Origin] = {}
    if isinstance(node.value, dict):
        for key, child in node.value.items():
            found.update({(*path, key): child.origin} if child.value is REMOVED else removals(child, (*path, key)))
    elif isinstance(node.value, list):
        for i, item in enumerate(node.value):
            found.update(removals(item, (*path, i)))
    return found


def locate_latest(origins: dict[Path_, Origin], path: Path_) -> Origin:
    """Where the value at `path` was last changed: for a map or list assembled from several layers, the line in
    the latest layer that set something inside it (a site that breaks a cross-field rule is pointed at)."""
    own = locate(origins, path)
    n = len(path)
    inside = [o for p, o in origins.items() if p[:n] == tuple(path)]
    if not inside:
        return own
    latest = max(o.layer for o in inside)
    if own.layer == latest:
        return own
    return min((o for o in inside if o.layer == latest), key=lambda o: (o.line, o.column))


def locate(origins: dict[Path_, Origin], path: Path_) -> Origin:
    """Where `path` was set, or its nearest ancestor (a missing key is not in any file)."""
    p = tuple(path)
    while p:
        if p in origins:
            return origins[p]
        p = p[:-1]
    return origins[()]
