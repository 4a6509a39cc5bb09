"""The YAML loader: located values, and hostile input refused with a located error, never a hang."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oemkit.errors import OemkitError, UnreadableInput
from oemkit.yamlio import YamlError, load_file, loads


def test_marks_point_at_keys_and_values() -> None:
    doc = loads("host:\n  name: br-01\n  ntp: [a, b]\n", "p.yaml")
    assert doc.data == {"host": {"name": "br-01", "ntp": ["a", "b"]}}
    assert doc.locate(("host", "name")) == (2, 3)
    assert doc.locate(("host", "ntp", 1)) == (3, 12)
    assert doc.locate(("host", "missing", "deeper")) == (1, 1)  # nearest ancestor that exists


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", (3, 1), "duplicate key 'a' (first set on line 1)"),
        ("a: !!python/object/apply:os.system ['true']\n", (1, 4), "is not allowed"),
        ("a: !custom 1\n", (1, 4), "is not allowed"),
        ("a: [1, 2\n", (2, 1), "YAML syntax"),
        ("a: 1\n---\nb: 2\n", (2, 1), "more than one document"),
        ("? [1, 2]\n: x\n", (1, 3), "keys must be plain strings"),
        ("", (1, 1), "empty"),
    ],
)
def test_bad_yaml_is_located(text: str, where: tuple[int, int], message: str) -> None:
    with pytest.raises(YamlError) as err:
        loads(text, "bad.yaml")
    assert (err.value.line, err.value.column) == where
    assert message in err.value.message


def test_alias_bomb_is_refused_before_expansion() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 40):
        prev, cur = chr(ord("a") + (i - 1) % 26) + str(i - 1), chr(ord("a") + i % 26) + str(i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + (prev if i > 1 else 'a')] * 9)}]")
    start = time.process_time()
    with pytest.raises(YamlError, match="aliases"):
        loads("\n".join(lines) + "\n", "bomb.yaml")
    assert time.process_time() - start < 5  # a bound on the hang, not a benchmark


def test_invalid_utf8_is_located(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(UnreadableInput) as err:
        load_file(f)
    assert (err.value.line, err.value.column) == (2, 7)


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    f = tmp_path / "huge.yaml"
    with f.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    with pytest.raises(UnreadableInput, match="limit"):
        load_file(f)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab: -[]{}&*!|><'\"#\n\t?,%@`0123456789.~")), max_size=400))
def test_no_generated_text_raises_anything_but_our_error(text: str) -> None:
    with contextlib.suppress(OemkitError):
        loads(text, "gen.yaml")
