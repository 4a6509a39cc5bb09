"""Load YAML that people write and attackers craft: plain data with the line and column of every value.

PyYAML composes a node tree (with marks) that we walk ourselves, so that:
- every value's path maps to where it stands in the file, for `file:line:col` errors;
- duplicate keys, non-plain tags (`!!python/object`...) and non-string keys are located errors;
- aliases are counted from the event stream *before* any tree is built, and the walk is bounded, so an
  alias bomb is refused in milliseconds instead of expanding exponentially;
- special files, oversized files and invalid UTF-8 are refused before parsing (`oemkit.inputs`).

Plain scalars mean what they mean in YAML 1.2's core schema, as editors read them against our JSON Schema
(`0110` is 110, `yes` is text, `1_000` is text), not what PyYAML's YAML 1.1 makes of them (72, true, 1000). A
plain scalar the two read differently is refused, located, with both readings and how to write it so that every
reader agrees (`AmbiguousScalar`): no value changes silently between what a person sees and what is sealed.
What a scalar means, to which reader, is `oemkit/yaml12.py`'s; this module reads files with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor
import yaml.resolver

from oemkit.errors import OemkitError, UnreadableInput
from oemkit.inputs import LIMITS, decode_utf8, read_input
from oemkit.problems import Problem, format_path
from oemkit.yaml12 import BOOL, FLOAT, INT, NULL, Constructor, Loader, ambiguity

MAX_BYTES = LIMITS["profile"]
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


class AmbiguousScalar(OemkitError):
    """Plain scalars that YAML 1.1 and YAML 1.2 read differently: the file is readable, but what it means depends
    on the reader, so it is refused as invalid (exit 1), never guessed. Located at the first; `problems` holds
    every one (a caller that reports several problems can take them all)."""

    def __init__(self, problems: list[Problem], capped: bool = False, document: Document | None = None) -> None:
        first, more = problems[0], problems[1:]
        hint = None
        if more:
            where = ", ".join(f"{p.line}:{p.column}" for p in more[:5]) + (", ..." if len(more) > 5 else "")
            hint = f"{'at least ' if capped else ''}{len(more)} more in this file, at {where}"
        super().__init__(first.message, file=first.file, line=first.line, column=first.column, hint=hint)
        self.path = first.path
        self.problems = problems
        # the file as YAML 1.2 reads it: a caller that reports every problem validates it too, so an ambiguous
        # scalar does not hide the file's other problems
        self.document = document

    def problem(self, file: str | None = None, path: str = "(document)") -> Problem:
        return super().problem(file, self.path if path == "(document)" else path)


class _Scan:
    """The event stream before any tree exists: nesting depth and aliases within budget, the non-specific tag `!`
    refused, and every scalar YAML 1.1 and 1.2 read differently found, with its path."""

    _EXPLICIT = frozenset({NULL, BOOL, INT, FLOAT})
    # What no reader treats as anything but text, or reads alike: skipped, so that a 4 MiB file stays quick.
    _SPECIAL_FIRST = frozenset("yYnNoOtTfF~<=.+-0123456789")
    _ORDINARY = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?\Z")
    MAX_AMBIGUOUS = 100  # the file is refused anyway; beyond this, checking only costs time

    def __init__(self, file: str) -> None:
        self.file = file
        self.ambiguous: list[Problem] = []
        self.capped = False
        # per open collection: its path, and for a mapping [want a key?, the current key]; for a sequence [index]
        self.stack: list[tuple[tuple[str | int, ...], list[Any]]] = []

    def _fail(self, event: Any, message: str, hint: str | None = None) -> YamlError:
        line, col = _mark(event)
        return YamlError(message, file=self.file, line=line, column=col, hint=hint)

    def _enter(self) -> tuple[tuple[str | int, ...], bool]:
        """The path of the node that starts now, and whether it is a mapping key."""
        if not self.stack:
            return (), False
        path, state = self.stack[-1]
        if len(state) == 1:  # a sequence
            state[0] += 1
            return (*path, state[0]), False
        return (path, True) if state[0] else ((*path, state[1]), False)

    def _leave(self, key: str | int | None = None) -> None:
        """A node ended: a key was read (remember it), or a value (the next node is a key again)."""
        if self.stack and len(self.stack[-1][1]) == 2:
            state = self.stack[-1][1]
            if state[0]:
                state[1] = "?" if key is None else key
            state[0] = not state[0]

    def scan(self, text: str) -> None:
        aliases = nodes = 0
        for event in yaml.parse(text, Loader=Loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.ScalarEvent)):
                # counted here, before a tree is built: a 4 MiB flow list of 2 million values is refused in a
                # fraction of a second instead of costing a tree of them (keys count too; they are nodes)
                nodes += 1
                if nodes > 2 * MAX_NODES:
                    raise self._fail(event, f"more than {MAX_NODES} values: refused")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if event.tag == "!":
                    raise self._tag_fail(event)
                path, is_key = self._enter()
                self.stack.append((path, [True, None] if isinstance(event, yaml.MappingStartEvent) else [-1]))
                if len(self.stack) > MAX_DEPTH:
                    raise self._fail(event, f"nested more than {MAX_DEPTH} levels deep: refused")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                self.stack.pop()
                self._leave()
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise self._fail(event, f"more than {MAX_ALIASES} aliases: refused (alias bomb?)")
                self._enter()
                self._leave()
            elif isinstance(event, yaml.ScalarEvent):
                if event.tag == "!":
                    raise self._tag_fail(event)
                path, is_key = self._enter()
                self._check(event, path, is_key)
                self._leave(event.value)

    def _tag_fail(self, event: Any) -> YamlError:
        return self._fail(
            event,
            "the non-specific tag '!' is not allowed: YAML libraries disagree on what it makes of a value",
            hint="remove the '!'; quote a value to make it text",
        )

    def _check(self, event: Any, path: tuple[str | int, ...], is_key: bool) -> None:
        text, plain = event.value, event.tag is None and event.implicit[0]
        if not plain and event.tag not in self._EXPLICIT:
            return  # quoted (or a block scalar) without a tag: text to every reader
        if plain and ((text and text[0] not in self._SPECIAL_FIRST) or self._ORDINARY.match(text)):
            return
        if len(self.ambiguous) >= self.MAX_AMBIGUOUS:
            self.capped = True
            return
        why = ambiguity(text, None if plain else event.tag)
        if why:
            line, col = _mark(event)
            where = format_path((*path, text) if is_key else path)
            self.ambiguous.append(Problem(self.file, line, col, where, why))


def _mark(node_or_mark: Any) -> tuple[int, int]:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def load_file(path: Path, display: str | None = None, kind: str = "profile") -> Document:
    """The YAML file at `path`; `kind` names it in a refusal ("cannot read site overlay: a FIFO ...")."""
    name = display or str(path)
    return loads(decode_utf8(read_input(path, kind, MAX_BYTES), name), name)


# What YAML 1.2 does not allow in a stream (§5.1): C0 controls but tab/LF/CR, DEL, C1 controls but NEL,
# surrogates, U+FFFE/U+FFFF. Found before parsing, so each is reported at its own line:col, on one line.
_NOT_YAML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")


def _refuse_control_characters(text: str, file: str) -> None:
    bad = _NOT_YAML.search(text)
    if bad is None:
        return
    start = bad.start()
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    raise YamlError(
        f"control character U+{ord(bad.group()):04X} is not allowed in YAML",
        file=file,
        line=line,
        column=col,
        hint="remove it; write \\t, \\n or \\u00XX inside a double-quoted string if it is really meant",
    )


def loads(text: str, file: str = "<string>") -> Document:
    if len(text) > MAX_BYTES:
        raise YamlError(f"document is {len(text)} characters; the limit is {MAX_BYTES}", file=file, line=1, column=1)
    _refuse_control_characters(text, file)
    scan = _Scan(file)
    try:
        scan.scan(text)
        loader = Loader(text)
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
        raise YamlError(f"YAML: {' '.join(str(exc).split())}", file=file, line=1, column=1) from None
    doc = Document(file=file, data=None)
    if root is None:
        raise YamlError("the document is empty", file=file, line=1, column=1)
    doc.data = _Walker(doc).walk(root, ())
    if scan.ambiguous:  # after the walk: a refusal of the file itself (a tag, a duplicate key) comes first
        raise AmbiguousScalar(scan.ambiguous, scan.capped, doc)
    return doc


class _Walker:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.nodes = 0
        self.constructor = Constructor()

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
            self.doc.key_marks.setdefault((*path, key), _mark(key_node))  # a key written here beats a merged one
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
