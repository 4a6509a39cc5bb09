"""`profile show --origin`: the merged profile as YAML with `# file:line` after every value a layer set."""

from __future__ import annotations

import json
from typing import Any

import yaml

from oemkit.profile.layers import Origin
from oemkit.yaml12 import Dumper

Path_ = tuple[str | int, ...]


def _scalar(value: Any) -> str:
    if isinstance(value, str) and "\n" in value:
        return json.dumps(value)  # one line, so the origin comment stays beside it
    text = yaml.dump(value, Dumper=Dumper, default_flow_style=True, width=10_000)  # quoted as YAML 1.2 needs
    return text.strip().removesuffix("...").strip()


def _filled(value: Any) -> bool:
    return isinstance(value, (dict, list)) and bool(value)


class _Annotator:
    def __init__(self, origins: dict[Path_, Origin]) -> None:
        self.origins = origins
        self.lines: list[str] = []

    def where(self, path: Path_) -> str:
        o = self.origins.get(path)
        return f"  # {o.file}:{o.line}" if o else "  # (default)"

    def value(self, v: Any, path: Path_, indent: int, lead: str) -> None:
        """`lead` (a "key:" or nothing) and the value at `indent` spaces."""
        pad = " " * indent
        if isinstance(v, dict) and v:
            if lead:
                self.lines.append(f"{pad}{lead}")
                indent += 2
            self.mapping(v, path, indent)
        elif isinstance(v, list) and v:
            self.lines.append(f"{pad}{lead}")
            for i, item in enumerate(v):
                self.item(item, (*path, i), pad)
        else:
            self.lines.append(f"{pad}{lead} {_scalar(v)}{self.where(path)}")

    def mapping(self, v: dict[str, Any], path: Path_, indent: int) -> None:
        pad = " " * indent
        for key, sub in v.items():
            if _filled(sub):
                self.value(sub, (*path, key), indent, f"{key}:")
            else:
                self.lines.append(f"{pad}{key}: {_scalar(sub)}{self.where((*path, key))}")

    def item(self, item: Any, path: Path_, pad: str) -> None:
        """One list item: a mapping starts with "- " on its first key; anything else is "- value"."""
        if not (isinstance(item, dict) and item):
            self.lines.append(f"{pad}  - {_scalar(item)}{self.where(path)}")
            return
        for n, (key, sub) in enumerate(item.items()):
            prefix = f"{pad}  - " if n == 0 else f"{pad}    "
            if not _filled(sub):
                self.lines.append(f"{prefix}{key}: {_scalar(sub)}{self.where((*path, key))}")
                continue
            self.lines.append(f"{prefix}{key}:")
            if isinstance(sub, dict):
                self.mapping(sub, (*path, key), len(pad) + 6)
            else:
                self.lines += [f"{pad}      - {_scalar(x)}{self.where((*path, key, j))}" for j, x in enumerate(sub)]


def annotated_yaml(data: Any, origins: dict[Path_, Origin]) -> str:
    """YAML with `# file:line` after every scalar that a layer set (defaults say `(default)`)."""
    out = _Annotator(origins)
    out.value(data, (), 0, "")
    return "\n".join(out.lines) + "\n"
