"""What a plain YAML scalar means: the YAML 1.2 core schema, as editors read a profile against its JSON Schema, and
where YAML 1.1 (PyYAML, Ansible) or a lenient 1.2 reader (ruamel.yaml) would read it otherwise.

`Loader` parses with core-schema implicit tags (libyaml when the wheel has it), `Constructor` builds values by the
core schema even under an explicit tag, `ambiguity()` says why a scalar means different things to different
readers, and `Dumper` writes YAML that every reader reads back as the same values. `yamlio` uses all four.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

import yaml
import yaml.constructor
import yaml.resolver

_T = "tag:yaml.org,2002:"
NULL, BOOL, INT, FLOAT, TIMESTAMP = (_T + t for t in ("null", "bool", "int", "float", "timestamp"))

# YAML 1.2.2, 10.3.2 (core schema): the only plain scalars that are not text.
_CORE_NULL = re.compile(r"(?:~|null|Null|NULL|)\Z")
_CORE_BOOL = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_CORE_INT = re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z")
_CORE_FLOAT = re.compile(
    r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
)


class Core12Resolver(yaml.resolver.BaseResolver):
    """Implicit tags by the YAML 1.2 core schema (int before float: `1` matches both). As before, `<<` is a merge key
    (expanded by our walker) and a plain `=` is refused (PyYAML and ruamel.yaml give it a tag they cannot build);
    dates are text (1.2 has no timestamps)."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012 (PyYAML's API)


for _tag, _regexp, _first in (
    (BOOL, _CORE_BOOL, "tTfF"),
    (INT, _CORE_INT, "-+0123456789"),
    (FLOAT, _CORE_FLOAT, "-+0123456789."),
    (NULL, _CORE_NULL, ["~", "n", "N", ""]),
    (_T + "merge", re.compile(r"<<\Z"), "<"),
    (_T + "value", re.compile(r"=\Z"), "="),
):
    Core12Resolver.add_implicit_resolver(_tag, _regexp, list(_first))

# libyaml when the wheel has it: the same events and marks, several times faster. CParser composes in C but asks
# the Python resolver for every implicit tag, so the core-schema table above holds for both.
_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Loader(_Parser):  # type: ignore[misc,valid-type]
    yaml_implicit_resolvers = Core12Resolver.yaml_implicit_resolvers


def _bad(node: Any, what: str) -> yaml.constructor.ConstructorError:
    shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return yaml.constructor.ConstructorError(None, None, f"{shown!r} is not {what} in YAML 1.2", node.start_mark)


class Constructor(yaml.constructor.SafeConstructor):
    """Values by the core schema, also under an explicit tag (`!!int 0110` is 110; `!!bool yes` is refused)."""

    def construct_yaml_null(self, node: Any) -> None:
        if not _CORE_NULL.match(node.value):
            raise _bad(node, "null")

    def construct_yaml_bool(self, node: Any) -> bool:
        if not _CORE_BOOL.match(node.value):
            raise _bad(node, "a boolean (true or false)")
        return node.value[0] in "tT"

    def construct_yaml_int(self, node: Any) -> int:
        value = node.value
        if not _CORE_INT.match(value):
            raise _bad(node, "an integer")
        try:
            if value.startswith(("0o", "0x")):
                return int(value[2:], 8 if value[1] == "o" else 16)
            return int(value, 10)  # leading zeros are decimal
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise _bad(node, "an integer of at most 4,300 digits") from None

    def construct_yaml_float(self, node: Any) -> float:
        value = node.value
        if not _CORE_FLOAT.match(value):
            raise _bad(node, "a number")
        if value.lstrip("+-").lower() == ".inf":
            return -math.inf if value[0] == "-" else math.inf
        return math.nan if value.lower() == ".nan" else float(value)


for _tag, _construct in (
    (NULL, Constructor.construct_yaml_null),
    (BOOL, Constructor.construct_yaml_bool),
    (INT, Constructor.construct_yaml_int),
    (FLOAT, Constructor.construct_yaml_float),
):
    Constructor.add_constructor(_tag, _construct)


_NO_VALUE: Any = object()  # a reading that is no value at all (PyYAML would raise, or a tag it cannot build)
_RESOLVER_11 = yaml.resolver.Resolver()
_RESOLVER_12 = Core12Resolver()
_CONSTRUCTOR_11 = yaml.constructor.SafeConstructor()
_CONSTRUCTOR_12 = Constructor()


def _value(constructor: yaml.constructor.SafeConstructor, tag: str, text: str) -> Any:
    if tag == TIMESTAMP:
        return text  # an unquoted date stays the text the author wrote
    build = constructor.yaml_constructors.get(tag)
    if build is None or tag == _T + "merge":
        return _NO_VALUE
    try:
        return build(constructor, yaml.ScalarNode(tag, text))
    except Exception:  # a bad value of its tag (ValueError included): refused elsewhere, or never read by us
        return _NO_VALUE


def readings(text: str, tag: str | None = None) -> tuple[Any, Any]:
    """What YAML 1.1 (PyYAML) and YAML 1.2 (core schema) make of a plain scalar, or of a scalar under an explicit
    `tag`; `_NO_VALUE` where a reader would refuse it."""
    tag11 = tag or _RESOLVER_11.resolve(yaml.ScalarNode, text, (True, False))
    tag12 = tag or _RESOLVER_12.resolve(yaml.ScalarNode, text, (True, False))
    return _value(_CONSTRUCTOR_11, tag11, text), _value(_CONSTRUCTOR_12, tag12, text)


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def _spelling(value: Any) -> str:
    """`value` written so that YAML 1.1 and 1.2 both read exactly it."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[repr(value)]
        text = repr(value)  # 1.1 wants a '.' in every float, and a sign on an exponent (repr gives one)
        return text if "." in text else text.replace("e", ".0e")
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _described(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {_spelling(value)}"
    return f"the text {json.dumps(value, ensure_ascii=False)}"


_SIGNED_RADIX = re.compile(r"([-+])0([box])([0-9a-fA-F]+)\Z")


def _lenient(text: str) -> Any:
    """The number a lenient YAML 1.2 reader (ruamel.yaml, which check-jsonschema uses) makes of a plain scalar the
    core schema reads as text: digit separators (`1_000`, `0o1_7`, `._5`) and a sign before 0o/0x/0b (`-0o17`)."""
    bare = text.replace("_", "")
    if not text or text[0] not in "-+0123456789.":  # `_1` is text to every reader
        return _NO_VALUE
    signed = _SIGNED_RADIX.match(bare)
    if signed:
        sign, radix, digits = signed.groups()
        try:
            return int(sign + digits, {"b": 2, "o": 8, "x": 16}[radix])
        except ValueError:
            return _NO_VALUE
    if bare == text:
        return _NO_VALUE
    value = _value(_CONSTRUCTOR_12, _RESOLVER_12.resolve(yaml.ScalarNode, bare, (True, False)), bare)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else _NO_VALUE


def _fix(values: list[Any]) -> str:
    """How to write it so that every reader agrees: each number a reader saw, or the text quoted."""
    numbers = [v for v in values if not isinstance(v, str)]
    texts = [v for v in values if isinstance(v, str)]
    fix = " or ".join(_spelling(v) for v in numbers)
    if texts:
        fix += f", or quote it ({_spelling(texts[0])})"
    elif len(numbers) > 1:
        fix += ", whichever you mean"
    return fix


@functools.lru_cache(maxsize=1024)
def ambiguity(text: str, tag: str | None = None) -> str | None:
    """Why a plain scalar (or one under an explicit !!int/!!float/!!bool/!!null) means different things to YAML 1.1
    and YAML 1.2, with how to write it unambiguously; None when every reader reads the same value."""
    v11, v12 = readings(text, tag)
    if v11 is not _NO_VALUE and v12 is not _NO_VALUE and not _same(v11, v12):
        return (
            f"ambiguous scalar {text!r}: YAML 1.1 reads it as {_described(v11)}, YAML 1.2 (your editor) as "
            f"{_described(v12)}; write {_fix([v11, v12])}"
        )
    lenient = _lenient(text) if tag is None and isinstance(v12, str) else _NO_VALUE
    if lenient is not _NO_VALUE:  # 1.1 and the core schema agree on text here (any other 1.1 reading: above)
        return (
            f"ambiguous scalar {text!r}: YAML 1.2 (your editor) reads it as {_described(v12)}, other YAML readers "
            f"(ruamel.yaml) as {_described(lenient)}; write {_fix([lenient, v12])}"
        )
    return None  # the same value, or a reader refuses it (a refusal is never a silent change)


class Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting every string that some reader would not read as that text: PyYAML alone
    quotes only what YAML 1.1 reads otherwise, and writes `1e3`, `0o17` or `+.5` plain, which YAML 1.2 reads as
    numbers (and `loads` refuses as ambiguous). `yaml.dump(data, Dumper=Dumper)`."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and implicit[0] and tag == _T + "str":
            core = _RESOLVER_12.resolve(kind, value, implicit)
            return core if core != tag else (INT if _lenient(value) is not _NO_VALUE else tag)
        return tag
