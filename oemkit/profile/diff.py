"""Compare two profile documents by path: what changed, old → new, whatever the key order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from oemkit.problems import format_path


@dataclass(frozen=True)
class Change:
    op: Literal["added", "removed", "changed"]
    path: str
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "path": self.path, "old": self.old, "new": self.new}


def _keyed(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def diff(a: Any, b: Any, path: tuple[str | int, ...] = ()) -> list[Change]:
    """Lists of named maps are compared by name (reordering them is no change); other lists by position."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[Change] = []
        for key in sorted(a.keys() | b.keys()):
            if key not in b:
                out.append(Change("removed", format_path((*path, key)), old=a[key]))
            elif key not in a:
                out.append(Change("added", format_path((*path, key)), new=b[key]))
            else:
                out += diff(a[key], b[key], (*path, key))
        return out
    if isinstance(a, list) and isinstance(b, list) and _keyed(a) and _keyed(b):
        named_a = {i["name"]: i for i in a}
        named_b = {i["name"]: i for i in b}
        out = []
        for name in sorted(named_a.keys() | named_b.keys()):
            label = format_path(path) + f"[name={name}]"
            if name not in named_b:
                out.append(Change("removed", label, old=named_a[name]))
            elif name not in named_a:
                out.append(Change("added", label, new=named_b[name]))
            else:
                out += [
                    Change(c.op, label + c.path[len(format_path(path)) :], c.old, c.new)
                    for c in diff(named_a[name], named_b[name], path)
                ]
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = []
        for i in range(max(len(a), len(b))):
            if i >= len(b):
                out.append(Change("removed", format_path((*path, i)), old=a[i]))
            elif i >= len(a):
                out.append(Change("added", format_path((*path, i)), new=b[i]))
            else:
                out += diff(a[i], b[i], (*path, i))
        return out
    if a != b or type(a) is not type(b):
        return [Change("changed", format_path(path), a, b)]
    return []
