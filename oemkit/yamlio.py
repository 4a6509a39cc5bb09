"""Load YAML that people write and attackers craft: plain data with the line and column of every value.

PyYAML composes a node tree (with marks) that we walk ourselves, so that:
- every value's path maps to where it stands in the file, for `file:line:col` errors;
- duplicate keys, non-plain tags (`!!python/object`...) and non-string keys are located errors;
- aliases are counted from the event stream *before* any tree is built, and the walk is bounded, so an
  alias bomb is refused in milliseconds instead of expanding exponentially;
- special files, oversized files and invalid UTF-8 are refused before parsing (`oemkit.inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor

from oemkit.errors import OemkitError, UnreadableInput
from oemkit.inputs import decode_utf8, read_input

# libyaml when the wheel has it: the same events and marks, several times faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 4 * 1024 * 1024
MAX_ALIASES = 256
MAX_NODES = 50_000  # a large real profile has ~2,000 values
MAX_DEPTH = 64  # real profiles nest about 6 deep; 10,000 levels crash parsers (stack overflow)
Path_ = tuple[str | int, ...]

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


@dataclass
class Document:
    """Plain data (dict/list/str/int/float/bool/None) plus where each path is."""

    file: str
    data: Any
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # path → (line, col) of the value
    key_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # path → (line, col) of its key

    def locate(self, path: Path_) -> tuple[int, int]:
        """Line and column of `path`, or of its nearest ancestor that exists in the file (a missing key)."""
        p = tuple(path)
        while p:
            if p in self.marks:
                return self.key_marks.get(p, self.marks[p]) if p in self.key_marks else self.marks[p]
            p = p[:-1]
        return self.marks.get((), (1, 1))


class YamlError(UnreadableInput):
    pass


def _mark(node_or_mark: Any) -> tuple[int, int]:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def load_file(path: Path, display: str | None = None) -> Document:
    name = display or str(path)
    return loads(decode_utf8(read_input(path, "profile", MAX_BYTES), name), name)


def loads(text: str, file: str = "<string>") -> Document:
    if len(text) > MAX_BYTES:
        raise YamlError(f"document is {len(text)} characters; the limit is {MAX_BYTES}", file=file, line=1, column=1)
    try:
        aliases = depth = 0
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line, col = _mark(event)
                    raise YamlError(
                        f"nested more than {MAX_DEPTH} levels deep: refused", file=file, line=line, column=col
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    line, col = _mark(event)
                    raise YamlError(
                        f"more than {MAX_ALIASES} aliases: refused (alias bomb?)", file=file, line=line, column=col
                    )
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        line, col = _mark(exc.problem_mark or exc.context_mark)
        problem = exc.problem or exc.context or "invalid YAML"
        if "another document" in problem:
            problem = "more than one document: a file holds exactly one"
        raise YamlError(f"YAML syntax: {problem}", file=file, line=line, column=col) from None
    except yaml.YAMLError as exc:  # reader errors (control characters) carry a position, not a mark
        raise YamlError(f"YAML: {exc}", file=file, line=1, column=1) from None
    doc = Document(file=file, data=None)
    if root is None:
        raise YamlError("the document is empty", file=file, line=1, column=1)
    doc.data = _Walker(doc).walk(root, ())
    return doc


class _Walker:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.nodes = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def _fail(self, node: Any, message: str, hint: str | None = None) -> OemkitError:
        line, col = _mark(node)
        return YamlError(message, file=self.doc.file, line=line, column=col, hint=hint)

    def walk(self, node: Any, path: Path_, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self._fail(node, f"more than {MAX_NODES} values (after expanding aliases): refused")
        if depth > MAX_DEPTH:  # also catches an alias that refers to its own ancestor
            raise self._fail(node, f"nested more than {MAX_DEPTH} levels deep: refused")
        self.doc.marks.setdefault(path, _mark(node))
        if node.tag == "tag:yaml.org,2002:timestamp" and isinstance(node, yaml.ScalarNode):
            return node.value  # an unquoted date stays the text the author wrote
        if node.tag not in _PLAIN_TAGS:
            raise self._fail(
                node,
                f"tag {node.tag!r} is not allowed: only plain YAML data",
                hint="remove the !tag; profiles hold data, never objects",
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self._fail(node, f"bad value: {exc}") from None

    def _mapping(self, node: Any, path: Path_, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise self._fail(key_node, "keys must be plain strings")
            key = key_node.value
            if key in out:
                first = self.doc.key_marks.get((*path, key), (0, 0))[0]
                raise self._fail(key_node, f"duplicate key {key!r} (first set on line {first})")
            self.doc.key_marks[(*path, key)] = _mark(key_node)
            out[key] = self.walk(value_node, (*path, key), depth + 1)
        # Merge keys (<<) are expanded here, not by PyYAML: every merged value counts against MAX_NODES, so a
        # merge-key bomb is refused like an alias bomb. Keys written in the mapping itself win.
        for value_node in merges:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for src in sources:
                if not isinstance(src, yaml.MappingNode):
                    raise self._fail(src, "<< (merge) takes a mapping or a list of mappings")
                for key, value in self._mapping(src, path, depth + 1).items():
                    out.setdefault(key, value)
        return out
