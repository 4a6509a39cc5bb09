"""Plain scalars mean what YAML 1.2's core schema says (what an editor shows against our JSON Schema), and a scalar
that YAML 1.1 (PyYAML, oemkit's reader before) reads otherwise is refused with its line and column, never guessed."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from oemkit import yaml12, yamlio
from oemkit.cli.app import app
from oemkit.errors import UnreadableInput
from oemkit.yamlio import AmbiguousScalar, YamlError, loads

from .conftest import REPO

BASE = REPO / "tests" / "data" / "profiles" / "base.yaml"


class Refused:
    """A located refusal: AmbiguousScalar (exit 1), or YamlError (exit 2) when `unreadable`."""

    def __init__(self, line: int, column: int, *words: str, unreadable: bool = False) -> None:
        self.where, self.words, self.unreadable = (line, column), words, unreadable

    def __repr__(self) -> str:
        return f"Refused({self.where}, {self.words})"


def amb(*words: str, line: int = 1, column: int = 4) -> Refused:
    return Refused(line, column, "ambiguous scalar", *words)


# `v: <scalar>` → the value oemkit reads, or its refusal (at 1:4 unless said otherwise)
SCALARS: list[tuple[str, Any]] = [
    # the core schema's non-text scalars: every reader agrees
    ("true", True),
    ("True", True),
    ("TRUE", True),
    ("false", False),
    ("FALSE", False),
    ("null", None),
    ("Null", None),
    ("NULL", None),
    ("~", None),
    ("", None),
    ("0", 0),
    ("110", 110),
    ("+12", 12),
    ("-7", -7),
    ("007", 7),  # leading zeros: octal 7 in 1.1, decimal 7 in 1.2 — the same number
    ("00", 0),
    ("0x1F", 31),
    ("0x1f", 31),
    ("1.5", 1.5),
    (".5", 0.5),
    ("1.", 1.0),
    ("-1.5e+3", -1500.0),
    ("1.5E-3", 0.0015),
    (".inf", math.inf),
    ("+.inf", math.inf),
    ("-.INF", -math.inf),
    (".nan", math.nan),
    (".NaN", math.nan),
    # text to every reader
    ("y", "y"),  # a 1.1 boolean in the spec, but never in PyYAML: nobody relied on it
    ("n", "n"),
    ("tRUE", "tRUE"),
    ("nULL", "nULL"),
    (".iNF", ".iNF"),
    ("0x", "0x"),
    ("_1", "_1"),
    ("10.0.0.53", "10.0.0.53"),
    ("1.2.3", "1.2.3"),
    ("2024-01-01", "2024-01-01"),  # a 1.1 timestamp, kept as text (as before)
    ("2001-12-14 21:59:43.10 -5", "2001-12-14 21:59:43.10 -5"),
    ("Europe/Berlin", "Europe/Berlin"),
    ("pool_1", "pool_1"),
    # quoted and block scalars are text, whatever they look like
    ("'yes'", "yes"),
    ('"0110"', "0110"),
    ("'1_000'", "1_000"),
    ('"1e3"', "1e3"),
    ("'on'", "on"),
    ("'null'", "null"),
    ("'~'", "~"),
    ('"true"', "true"),
    ("'1:30'", "1:30"),
    ("|\n  yes", "yes\n"),
    (">-\n  0110", "0110"),
    # an explicit tag says what it is
    ("!!str yes", "yes"),
    ("!!str 0110", "0110"),
    ("!!int 110", 110),
    ("!!float 1", 1.0),
    ("!!int 0110", amb("the integer 72", "the integer 110", "write 72 or 110, whichever you mean")),
    ("!!bool yes", Refused(1, 4, "not a boolean", unreadable=True)),
    ("!!int 1_000", Refused(1, 4, "not an integer", unreadable=True)),
    ("! yes", Refused(1, 4, "non-specific tag '!'", unreadable=True)),
    ("! 'x'", Refused(1, 4, "non-specific tag '!'", unreadable=True)),
    # YAML 1.1 booleans: text in 1.2
    (
        "yes",
        amb('YAML 1.1 reads it as true, YAML 1.2 (your editor) as the text "yes"; write true, or quote it ("yes")'),
    ),
    ("Yes", amb("as true", '"Yes"')),
    ("No", amb("as false", '"No"')),
    ("ON", amb("as true", '"ON"')),
    ("off", amb('YAML 1.1 reads it as false, YAML 1.2 (your editor) as the text "off"; write false, or quote it')),
    # numbers 1.1 reads otherwise
    ("0110", amb("YAML 1.1 reads it as the integer 72, YAML 1.2 (your editor) as the integer 110")),
    ("010", amb("the integer 8", "the integer 10")),
    ("08", amb('YAML 1.1 reads it as the text "08"', "the integer 8", 'write 8, or quote it ("08")')),
    ("0b101", amb("the integer 5", 'the text "0b101"')),
    ("-0b101", amb("the integer -5", 'the text "-0b101"')),
    ("1_000", amb("the integer 1000", 'the text "1_000"', 'write 1000, or quote it ("1_000")')),
    ("1_000.5", amb("the number 1000.5", 'the text "1_000.5"')),
    ("1:30", amb("the integer 90", 'the text "1:30"')),
    ("-1:30", amb("the integer -90", 'the text "-1:30"')),
    ("12:30:00", amb("the integer 45000", 'the text "12:30:00"')),
    ("1:30.5", amb("the number 90.5", 'the text "1:30.5"')),
    ("1e3", amb('YAML 1.1 reads it as the text "1e3"', "the number 1000.0", 'write 1000.0, or quote it ("1e3")')),
    ("1E3", amb('the text "1E3"', "the number 1000.0")),
    ("1.5e3", amb('the text "1.5e3"', "the number 1500.0")),
    (".5e3", amb('the text ".5e3"', "the number 500.0")),
    ("1e20", amb('the text "1e20"', "the number 1.0e+20", "write 1.0e+20, or quote it")),
    ("+.5", amb('the text "+.5"', "the number 0.5")),
    ("-.5", amb('the text "-.5"', "the number -0.5")),
    ("0o17", amb('the text "0o17"', "the integer 15")),
    ("-0x1F", amb("the integer -31", 'the text "-0x1F"')),
    ("+0x1F", amb("the integer 31", 'the text "+0x1F"')),
    ("0x_1F", amb("the integer 31", 'the text "0x_1F"')),
    ("1_", amb("the integer 1", 'the text "1_"')),
    # text to 1.1 and to the core schema, numbers to lenient 1.2 readers (ruamel.yaml, in check-jsonschema)
    ("-0o17", amb('YAML 1.2 (your editor) reads it as the text "-0o17"', "(ruamel.yaml) as the integer -15")),
    ("0o1_7", amb('the text "0o1_7"', "the integer 15")),
    ("08_", amb('the text "08_"', "the integer 8")),
    ("1_e7", amb('the text "1_e7"', "the number 10000000.0")),
    # refused as before: a plain `=` and `<<` as a value have tags no reader builds
    ("=", Refused(1, 4, "tag 'tag:yaml.org,2002:value' is not allowed", unreadable=True)),
    ("<<", Refused(1, 4, "tag 'tag:yaml.org,2002:merge' is not allowed", unreadable=True)),
]


def _python_loader() -> type:
    """The pure-Python twin of yamlio's loader (PyYAML's own parser, the same resolver table)."""
    return type("PyLoader", (yaml.SafeLoader,), {"yaml_implicit_resolvers": yaml12.Loader.yaml_implicit_resolvers})


@pytest.fixture(params=["libyaml", "python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case with both parsers: libyaml composes in C but resolves implicit tags through our Python table."""
    if request.param == "python":
        monkeypatch.setattr(yamlio, "Loader", _python_loader())
    elif not yaml.__with_libyaml__:
        pytest.skip("PyYAML without libyaml")
    return request.param


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


@pytest.mark.parametrize(("scalar", "expected"), SCALARS, ids=[s for s, _ in SCALARS])
def test_scalar(scalar: str, expected: Any, loader: str) -> None:
    text = f"v: {scalar}\n"
    if not isinstance(expected, Refused):
        value = loads(text, "s.yaml").data["v"]
        assert _same(value, expected), f"{scalar!r} read as {value!r}, not {expected!r}"
        return
    with pytest.raises((AmbiguousScalar, YamlError)) as err:
        loads(text, "s.yaml")
    assert isinstance(err.value, UnreadableInput) == expected.unreadable, err.value
    assert (err.value.file, err.value.line, err.value.column) == ("s.yaml", *expected.where)
    for word in expected.words:
        assert word in err.value.message, err.value.message


def test_the_loader_is_libyaml_when_there_is_one() -> None:
    assert issubclass(yaml12.Loader, yaml.CSafeLoader) == bool(yaml.__with_libyaml__)


@pytest.mark.parametrize(
    ("text", "line", "column", "path"),
    [
        ("network:\n  management:\n    vlan: 0110\n", 3, 11, "network.management.vlan"),
        ("host:\n  ntp: [a.example, off]\n", 2, 20, "host.ntp[1]"),
        ("vms:\n  - name: a\n    autostart: yes\n", 3, 16, "vms[0].autostart"),
        ("yes: 1\n", 1, 1, "yes"),  # a key too: 1.1 makes it true (a non-string key), 1.2 the text "yes"
        ("a:\n  on: 1\n", 2, 3, "a.on"),
        ("base: &b {x: yes}\nd:\n  <<: *b\n", 1, 14, "base.x"),  # at the anchor, once
    ],
)
def test_ambiguity_is_located_with_its_path(text: str, line: int, column: int, path: str, loader: str) -> None:
    with pytest.raises(AmbiguousScalar) as err:
        loads(text, "p.yaml")
    assert (err.value.line, err.value.column) == (line, column)
    problem = err.value.problem("p.yaml")
    assert (problem.file, problem.line, problem.column, problem.path) == ("p.yaml", line, column, path)
    assert problem.unreadable is False  # read, and found ambiguous: invalid (exit 1), not unreadable (exit 2)


def test_every_ambiguous_scalar_is_reported() -> None:
    with pytest.raises(AmbiguousScalar) as err:
        loads("a: yes\nb: 0110\nc: [1, 'on', on]\nd: 1e3\n", "p.yaml")
    found = [(p.line, p.column, p.path) for p in err.value.problems]
    assert found == [(1, 4, "a"), (2, 4, "b"), (3, 14, "c[2]"), (4, 4, "d")]
    assert err.value.hint == "3 more in this file, at 2:4, 3:14, 4:4"


def test_a_file_of_ambiguities_is_refused_quickly() -> None:
    text = "".join(f"k{i}: yes\n" for i in range(5000))
    with pytest.raises(AmbiguousScalar) as err:
        loads(text, "p.yaml")
    assert len(err.value.problems) == yamlio._Scan.MAX_AMBIGUOUS
    assert err.value.hint is not None and err.value.hint.startswith("at least 99 more in this file, at 2:5, 3:5")


def test_a_refusal_of_the_file_comes_before_its_ambiguities() -> None:
    with pytest.raises(YamlError, match="duplicate key"):
        loads("a: yes\na: 1\n")
    with pytest.raises(YamlError, match="is not allowed"):
        loads("a: yes\nb: !!python/name:os.system\n")


def test_merge_keys_and_anchors_still_work() -> None:
    doc = loads("base: &b {x: 1, y: true}\nd:\n  <<: *b\n  y: false\n")
    assert doc.data == {"base": {"x": 1, "y": True}, "d": {"x": 1, "y": False}}


def test_a_number_too_long_for_python_is_a_located_error() -> None:
    with pytest.raises(YamlError) as err:
        loads("v: " + "1" * 5000 + "\n")
    assert (err.value.line, err.value.column) == (1, 4)
    assert "at most 4,300 digits" in err.value.message


def test_validate_reports_an_ambiguous_scalar_at_its_line_invalid_not_unreadable(tmp_path: Path) -> None:
    text = BASE.read_text()
    assert "  require_tpm: true\n" in text
    profile = tmp_path / "p.yaml"
    profile.write_text(text.replace("  require_tpm: true\n", "  require_tpm: yes\n"))
    line = text.splitlines().index("  require_tpm: true") + 1
    result = CliRunner().invoke(app, ["profile", "validate", str(profile)])
    assert result.exit_code == 1, result.stdout
    expected = (
        f"{profile}:{line}:16: error: security.require_tpm: ambiguous scalar 'yes': YAML 1.1 reads it as true, "
        'YAML 1.2 (your editor) as the text "yes"; write true, or quote it ("yes")'
    )
    assert expected in result.stdout
    assert re.search(r": invalid \(1 error[,)]", result.stdout.strip())  # the scalar, and nothing it explains
    profile.write_text(text.replace("  require_tpm: true\n", "  require_tpm: 'yes'\n"))  # quoted: text, and wrong
    result = CliRunner().invoke(app, ["profile", "validate", str(profile)])
    assert result.exit_code == 1 and "security.require_tpm: Input should be a valid boolean" in result.stdout


TRICKY = ["1e3", "0o17", "-0o17", "+.5", "1_000", "0110", "08", "12:30", "yes", "on", "y", "2024-01-01", "=", "<<"]


def test_the_dumper_quotes_what_any_reader_would_read_otherwise() -> None:
    data = {s: s for s in TRICKY} | {"n": 72, "f": 1e20, "b": True, "z": None, "l": ["1e3", 1.5]}
    text = yaml.dump(data, Dumper=yaml12.Dumper, sort_keys=False)
    assert loads(text).data == data
    assert "1e3: 1e3" in yaml.safe_dump({"1e3": "1e3"})  # PyYAML alone writes it plain: a float to YAML 1.2
    assert "'1e3': '1e3'" in text
