"""Fuzzing every reader of untrusted input: profile and site YAML, orders CSV, unit config JSON, facts JSON and
dmidecode dumps. Each example must end — bounded by hypothesis' deadline and by an alarm, so a hang fails instead
of blocking — with a result or with the reader's own documented error type (at the CLI: exit 0, 1 or 2 and no
traceback), and must leave no file behind.

Inputs mix YAML/JSON/CSV-ish tokens, arbitrary bytes (invalid UTF-8, control characters, lone surrogates
encoded with surrogatepass) and mutations of the real files under profiles/, a real sealed unit, real facts and a
real dump; structured mutations of a unit config are re-sealed (content id, signature) so they reach the strict
reader behind the seal instead of stopping at it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from hypervisor_core import config
from hypervisor_core.config.signing import content_id, key_id, signed_bytes
from hypervisor_core.facts import Facts, FactsError, parse_facts, probe
from oemkit.catalog.store import Catalog, load_catalog
from oemkit.errors import OemkitError
from oemkit.hardware.dmi import parse_structures, read_report, report_from_structures
from oemkit.hardware.facts import facts_of
from oemkit.hardware.facts_tree import build_tree
from oemkit.profile.check import check
from oemkit.seal.keys import load_private_key, raw_public
from oemkit.seal.orders import compile_orders, read_orders
from oemkit.yamlio import load_file

from . import bounded
from .conftest import REPO, samples_dir
from .firstboot_kit import KEY, PUB, R650_DUMP, compile_to, public_key

PROFILE = REPO / "profiles" / "retail-branch.yaml"
SITE = REPO / "profiles" / "sites" / "retail-ber01.yaml"
SERIAL = "J30ABC12"
GUARD = 20  # seconds: the alarm per example (in-process) and the timeout per CLI run
# A longer hunt (nightly, or by hand): OEMKIT_FUZZ_SCALE=20 runs twenty times the examples.
SCALE = max(1, int(os.environ.get("OEMKIT_FUZZ_SCALE", "1")))

IN_PROCESS = settings(
    max_examples=150 * SCALE,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CLI = settings(
    max_examples=20 * SCALE,
    deadline=timedelta(seconds=GUARD),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------------------------------------------ guards
def alarm(seconds: int = GUARD) -> contextlib.AbstractContextManager[None]:
    """Fail (raise Hung) instead of blocking when one example runs longer than `seconds`."""
    return bounded.alarm(seconds)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's folder: `tmp/` is the process's temporary folder while the module runs (so a temporary file
    or folder a reader leaves behind is seen), `examples/` holds one folder per example (`example_folder`)."""
    base = tmp_path_factory.mktemp("fuzz")
    (base / "tmp").mkdir()
    (base / "examples").mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(base / "tmp")
    try:
        yield base
    finally:
        tempfile.tempdir = saved


@contextlib.contextmanager
def example_folder(work: Path) -> Iterator[Path]:
    """A fresh folder for one example's input and output files, removed afterwards."""
    folder = Path(tempfile.mkdtemp(dir=work / "examples"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def assert_nothing_left(work: Path, folder: Path, *allowed: Path) -> None:
    """No temporary file or folder left, and nothing in the example's folder but `allowed`."""
    left = sorted((work / "tmp").rglob("*"))
    assert left == [], f"left behind in the temporary folder: {left}"
    extra = sorted(p for p in folder.iterdir() if p not in allowed)
    assert extra == [], f"left behind beside the input: {extra}"


def write_input(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(REPO / "hardware_catalog")


# -------------------------------------------------------------------------------------------- seeds, real files
DUMP = (samples_dir() / R650_DUMP).read_bytes()
PROFILE_BYTES = PROFILE.read_bytes()
SITE_BYTES = SITE.read_bytes()
ORDERS_TEXT = (
    "serial,profile,site,model\n"
    f"{SERIAL},{PROFILE},{SITE},dell-poweredge-r650\n"
    f"J30ABC13,{PROFILE},{REPO / 'profiles/sites/retail-muc02.yaml'},\n"
    f"CZ2104MED1,{REPO / 'profiles/remote-clinic.yaml'},{REPO / 'profiles/sites/clinic-hq-north.yaml'},\n"
)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real sealed unit (as a dict), and the facts of the box it was sealed for (as a dict)."""
    base = tmp_path_factory.mktemp("seeds")
    unit = compile_to(PROFILE, SITE, SERIAL, base / "unit.json")
    catalog = load_catalog(REPO / "hardware_catalog")
    report = read_report(samples_dir() / R650_DUMP)
    build_tree(base / "tree", report, catalog.get(catalog.identify(report.identity).model_id), SERIAL)
    return {"unit": unit, "facts": probe(base / "tree").to_dict()}


def reseal(doc: Any) -> bytes:
    """`doc` as JSON with a fresh content id and signature by the test key, when it can carry a seal at all."""
    if isinstance(doc, dict):
        doc = {k: v for k, v in doc.items() if k not in ("content_id", "signed_by", "signature")}
        try:
            doc["content_id"] = content_id(doc)
            key = load_private_key(KEY, warn=lambda text: None)
            doc["signed_by"] = key_id(raw_public(key))
            doc["signature"] = "ed25519:" + base64.b64encode(key.sign(signed_bytes(doc))).decode()
        except config.ConfigError:  # a lone surrogate cannot be hashed: sent as it is
            pass
    return json.dumps(doc).encode()


# -------------------------------------------------------------------------------------------------- strategies
def mutations(seed: bytes, tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    """`seed` with a few bytes inserted (tokens or random), deleted, overwritten or copied from elsewhere in it."""

    @st.composite
    def _mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(["insert", "delete", "overwrite", "copy"]))
            i = draw(st.integers(0, len(data)))
            if op == "insert":
                data[i:i] = draw(st.one_of(st.sampled_from(tokens), st.binary(min_size=1, max_size=6)))
            elif op == "delete":
                del data[i : i + draw(st.integers(1, 60))]
            elif op == "overwrite" and data:
                data[min(i, len(data) - 1)] = draw(st.integers(0, 255))
            else:
                j = draw(st.integers(0, len(data)))
                data[i:i] = data[j : j + draw(st.integers(1, 120))]
        return bytes(data)

    return _mutate()


@st.composite
def yaml_value_mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` (YAML) with a few `key: value` lines given another value — any JSON value written as YAML flow,
    or a YAML-ish scalar — or dropped or repeated: documents that parse, and reach the schema and the lint."""
    lines = seed.decode().split("\n")
    valued = [i for i, line in enumerate(lines) if re.match(r"\s*(- )?[\w-]+: [^{\[#]*$", line)]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.sampled_from(valued))
        op = draw(st.sampled_from(["value"] * 6 + ["drop", "repeat"]))
        if op == "value":
            key = lines[i].split(": ", 1)[0]
            value = draw(
                st.one_of(
                    JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False)),
                    st.sampled_from([t.decode("utf-8", "replace") for t in YAML_TOKENS if b"\n" not in t]),
                )
            )
            lines[i] = f"{key}: {value}"
        elif op == "drop":
            lines[i] = ""
        else:
            lines.insert(i, lines[i])
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def token_soup(tokens: list[bytes], max_size: int = 80) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(tokens), max_size=max_size).map(b"".join)


# Text with every kind of character, C0/C1 controls and lone surrogates included (encoded with surrogatepass:
# bytes no UTF-8 decoder accepts).
ANY_TEXT = st.text(
    st.one_of(
        st.characters(), st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff"])
    ),
    max_size=300,
).map(lambda s: s.encode("utf-8", "surrogatepass"))
CONTROL = [bytes([c]) for c in (0, 1, 7, 8, 0x0B, 0x0C, 0x1B, 0x7F)] + ["\x85", "\u2028", "\ufeff", "\ufffe"]
CONTROL = [c if isinstance(c, bytes) else c.encode() for c in CONTROL]
BAD_BYTES = [b"\xe9", b"\xff", b"\xfe\xff", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00"]

YAML_TOKENS = [
    *(t.encode() for t in ["\n", "  ", "    ", "- ", ": ", "? ", "#", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! !x\n"]),
    *(t.encode() for t in ["{", "}", "[", "]", ",", '"', "'", "|", ">", "|-", "&a ", "*a", "<<: ", "<<: *a", "!!"]),
    *(t.encode() for t in ["!!python/object/apply:os.system ", "!!str ", "!!binary ", "!custom ", "\t", "\r\n"]),
    *(t.encode() for t in ["null", "~", "yes", "no", "on", "0777", "0x1F", "1_000", "1e999", ".nan", "-.inf"]),
    *(t.encode() for t in ["2024-01-01", "12:30:00", "=", "password: x", "models:", "apiVersion: oemkit/v1\n"]),
    *(t.encode() for t in ["kind: ApplianceProfile\n", "kind: SiteOverlay\n", "metadata:\n  name: x\n", "é", "\\"]),
    *CONTROL,
    *BAD_BYTES,
]
CSV_TOKENS = [
    *(t.encode() for t in [",", '"', '""', "\n", "\r", "\r\n", " ", "\t", "model", ",model", "serial", "..", "/"]),
    *(t.encode() for t in ["../", "/dev/zero", "/etc/passwd", "dell-poweredge-r650", "acme-x1", SERIAL, "j30abc12"]),
    *(t.encode() for t in ["bad serial!", "\ufeff", "\u2028", "é", "A" * 64, ".json", "=cmd|' /C calc'!A0"]),
    *CONTROL,
    *BAD_BYTES,
]
JSON_TOKENS = [
    *(t.encode() for t in ["{", "}", "[", "]", ",", ":", '"', '\\"', "\\u0000", "\\ud800", "\\udfff", "\\n", "null"]),
    *(t.encode() for t in ["true", "false", "0", "-0", "1e999", "-1", "NaN", "Infinity", "1.5", "9" * 400, "[" * 70]),
    *(t.encode() for t in ['"schema"', '"oemkit.unit/v1"', '"serial"', '"a":1,"a":2', '"nics"', '"dmi"', "é"]),
    *CONTROL,
    *BAD_BYTES,
]
DMI_TOKENS = [
    *(t.encode() for t in ["\n", "\t", "\t\t", ": ", "Handle 0x0001, DMI type 1, 27 bytes\n", "Handle 0xZZ, DMI"]),
    *(t.encode() for t in ["System Information\n", "Memory Device\n", "Physical Memory Array\n", "Processor "]),
    *(t.encode() for t in ["\tSize: ", "\tThread Count: ", "\tNumber Of Devices: ", "\tMaximum Capacity: ", " GB"]),
    *(t.encode() for t in ["\tManufacturer: Dell Inc.\n", "\tProduct Name: PowerEdge R650\n", "9" * 400, "-1"]),
    *(t.encode() for t in ["No Module Installed", "Unknown", "1e3", "0x10", "Onboard Device\n", "\tBus Address: "]),
    *CONTROL,
    *BAD_BYTES,
]


def sources(seed: bytes, tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutations(seed, tokens), token_soup(tokens), st.binary(max_size=400), ANY_TEXT)


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.sampled_from(["", ".", "..", "a/b", "eth0", "0000:04:00.0", "sata", "nvme", "x" * 300, "\x00", "\x1b[2J"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*path, i))


@st.composite
def structured(draw: st.DrawFn, seed: Any) -> Any:
    """`seed` (a JSON document) with a few values replaced, removed, or given an extra key or item."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(_paths(doc))))
        if not where:
            return draw(JSON_VALUES) if draw(st.booleans()) else doc
        parent = doc
        for k in where[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "remove", "grow"]))
        if op == "replace":
            parent[where[-1]] = draw(JSON_VALUES)
        elif op == "remove":
            del parent[where[-1]]
        elif isinstance(parent[where[-1]], dict):
            parent[where[-1]][draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif isinstance(parent[where[-1]], list):
            parent[where[-1]].append(draw(JSON_VALUES))
        else:
            parent[where[-1]] = draw(JSON_VALUES)
    return doc


# -------------------------------------------------------------------------------------------------- profile YAML
def _verdict(result: Any) -> str:  # for --hypothesis-show-statistics: how deep the examples got
    return "unreadable" if result.unreadable else "invalid" if result.resolved.errors else "valid"


@IN_PROCESS
@given(data=sources(PROFILE_BYTES, YAML_TOKENS))
def test_profile_yaml_bytes(data: bytes, work: Path) -> None:
    with example_folder(work) as ex:
        path = write_input(ex, "profile.yaml", data)
        with alarm():
            try:
                doc = load_file(path)
            except OemkitError as exc:
                assert exc.file == str(path) and str(exc)
            else:
                assert doc.file == str(path)
        assert_nothing_left(work, ex, path)


@IN_PROCESS
@given(data=st.one_of(yaml_value_mutations(PROFILE_BYTES), mutations(PROFILE_BYTES, YAML_TOKENS)))
def test_profile_check_reports_and_never_raises(data: bytes, work: Path, catalog: Catalog) -> None:
    """The whole `profile validate` path — layers, schema, lint against the catalog — reports problems; it never
    raises, whatever the profile holds."""
    with example_folder(work) as ex:
        path = write_input(ex, "profile.yaml", data)
        with alarm():
            result = check(path, SITE, SERIAL, None, catalog=catalog)
            text = "\n".join(str(p) for p in result.resolved.problems)
        assert isinstance(text, str)
        if result.resolved.profile is None:
            assert result.resolved.errors, "no profile and no error to say why"
        event(_verdict(result))
        assert_nothing_left(work, ex, path)


@IN_PROCESS
@given(data=st.one_of(yaml_value_mutations(SITE_BYTES), mutations(SITE_BYTES, YAML_TOKENS)))
def test_site_overlay_check_reports_and_never_raises(data: bytes, work: Path, catalog: Catalog) -> None:
    with example_folder(work) as ex:
        path = write_input(ex, "site.yaml", data)
        with alarm():
            result = check(PROFILE, path, SERIAL, None, catalog=catalog)
            for p in result.resolved.problems:
                str(p)
        if result.resolved.profile is None:
            assert result.resolved.errors
        event(_verdict(result))
        assert_nothing_left(work, ex, path)


# ---------------------------------------------------------------------------------------------------- orders CSV
@IN_PROCESS
@given(data=sources(ORDERS_TEXT.encode(), CSV_TOKENS))
def test_orders_csv_reader(data: bytes, work: Path) -> None:
    with example_folder(work) as ex:
        path = write_input(ex, "orders.csv", data)
        with alarm():
            try:
                rows = read_orders(path)
            except OemkitError as exc:
                assert exc.file == str(path) and exc.line is not None
            else:
                for line, row in rows:
                    assert line >= 2 and {"serial", "profile", "site"} <= set(row)
        assert_nothing_left(work, ex, path)


@settings(IN_PROCESS, max_examples=60 * SCALE)
@given(data=st.one_of(mutations(ORDERS_TEXT.encode(), CSV_TOKENS), token_soup(CSV_TOKENS)))
def test_orders_compile_writes_only_unit_configs(data: bytes, work: Path, catalog: Catalog) -> None:
    """A whole order, sealed: whatever the CSV says, only SERIAL.json files appear in the output folder."""
    key = load_private_key(KEY, warn=lambda text: None)
    with example_folder(work) as ex:
        path = write_input(ex, "orders.csv", data)
        out = ex / "units"
        with alarm():
            try:
                results = list(compile_orders(path, key, catalog, out))
            except OemkitError as exc:
                assert exc.file is not None
                results = []
        written = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert written == sorted(r.file.name for r in results if r.file is not None)
        assert all(name.endswith(".json") and not name.startswith(".") for name in written)
        assert_nothing_left(work, ex, path, out)


# ------------------------------------------------------------------------------------------- unit config JSON
@IN_PROCESS
@given(data=st.data())
def test_unit_config_bytes(data: st.DataObject, sealed: dict[str, Any]) -> None:
    raw = data.draw(sources(json.dumps(sealed["unit"], indent=1).encode(), JSON_TOKENS))
    with alarm():
        try:
            cfg = config.load(raw, None)
        except config.ConfigError as exc:
            assert str(exc)
        else:
            assert cfg.serial


@IN_PROCESS
@given(data=st.data())
def test_unit_config_resealed_reaches_the_strict_reader(data: st.DataObject, sealed: dict[str, Any]) -> None:
    raw = reseal(data.draw(structured(sealed["unit"])))
    with alarm():
        for key in (None, public_key()):
            try:
                cfg = config.load(raw, key)
            except config.ConfigError as exc:
                assert str(exc)
            else:
                assert config.from_dict(json.loads(raw)) == cfg


# ------------------------------------------------------------------------------------------------- facts JSON
@IN_PROCESS
@given(data=st.data())
def test_facts_json_bytes(data: st.DataObject, sealed: dict[str, Any], work: Path, catalog: Catalog) -> None:
    raw = data.draw(sources(json.dumps(sealed["facts"], indent=1).encode(), JSON_TOKENS))
    with example_folder(work) as ex:
        path = write_input(ex, "facts.json", raw)
        with alarm():
            try:
                facts = parse_facts(raw)
            except FactsError as exc:
                assert str(exc).startswith("facts")
                facts = None
            try:
                via_factory = facts_of(path, catalog, SERIAL)
            except OemkitError as exc:
                assert facts is None and exc.file == str(path)
            else:
                assert via_factory == facts
        assert_nothing_left(work, ex, path)


@IN_PROCESS
@given(data=st.data())
def test_facts_from_dict_is_strict(data: st.DataObject, sealed: dict[str, Any]) -> None:
    doc = data.draw(structured(sealed["facts"]))
    with alarm():
        try:
            facts = Facts.from_dict(doc)
        except FactsError as exc:
            assert str(exc).startswith("facts")
        else:
            assert Facts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


# ------------------------------------------------------------------------------------------- dmidecode dumps
FIELD_NAMES = [
    "Manufacturer",
    "Product Name",
    "Serial Number",
    "Size",
    "Thread Count",
    "Number Of Devices",
    "Maximum Capacity",
    "Status",
    "Type",
    "Bus Address",
    "Version",
    "Family",
]
TITLES = [
    "System Information",
    "Processor Information",
    "Memory Device",
    "Physical Memory Array",
    "Onboard Device",
    "Base Board Information",
]


@st.composite
def dmi_dumps(draw: st.DrawFn) -> str:
    """Dumps shaped like dmidecode's, with any value in any field (numbers where text goes, and the reverse)."""
    blocks = ["System Information\n\tManufacturer: Dell Inc.\n\tProduct Name: PowerEdge R650\n"]
    for _ in range(draw(st.integers(0, 5))):
        block = draw(st.sampled_from(TITLES)) + "\n"
        for _ in range(draw(st.integers(0, 5))):
            value = draw(
                st.one_of(
                    st.text(max_size=12),
                    st.integers().map(str),
                    st.sampled_from(["16 GB", "32 MB", "9" * 400 + " GB", "1e3", "Populated, Enabled", "lots"]),
                )
            )
            block += f"\t{draw(st.sampled_from(FIELD_NAMES))}: {value}\n"
        blocks.append(block)
    return "\n".join(draw(st.permutations(blocks)))


_DMI_CRASHERS = [
    "System Information\n\tManufacturer: Dell Inc.\nProcessor Information\n\tStatus: Populated\n\tThread Count: lots\n",
    "System Information\n\tManufacturer: Dell Inc.\nPhysical Memory Array\n\tNumber Of Devices: 16x\n",
    "System Information\n\tManufacturer: Dell Inc.\nMemory Device\n\tSize: " + "9" * 400 + " GB\n",
]


@IN_PROCESS
@given(text=st.one_of(dmi_dumps(), sources(DUMP, DMI_TOKENS).map(lambda b: b.decode("utf-8", "replace"))))
@example(text=_DMI_CRASHERS[0])
@example(text=_DMI_CRASHERS[1])
@example(text=_DMI_CRASHERS[2])
def test_dmi_dump_text(text: str) -> None:
    with alarm():
        try:
            report = report_from_structures(parse_structures(text, "dump.txt"), "dump.txt")
        except OemkitError as exc:
            assert exc.file == "dump.txt"
        else:
            assert report.source == "dump.txt"


@IN_PROCESS
@given(data=sources(DUMP, DMI_TOKENS))
def test_dmi_dump_file(data: bytes, work: Path) -> None:
    """The bytes of a dump file, read as `catalog identify` reads them: reading, NULs, encodings, structure."""
    with example_folder(work) as ex:
        path = write_input(ex, "dump.txt", data)
        with alarm():
            try:
                report = read_report(path)
            except OemkitError as exc:
                assert exc.file == str(path)
            else:
                assert report.source == str(path)
        assert_nothing_left(work, ex, path)


# --------------------------------------------------------------------------------------------------- the CLI
def oemkit(args: list[str], cwd: Path, work: Path) -> tuple[int, str]:
    """`python -m oemkit ARGS` in `cwd`, its temporary folder the module's (checked empty afterwards)."""
    run = bounded.oemkit_subprocess(args, timeout=GUARD, cwd=cwd, env={**os.environ, "TMPDIR": str(work / "tmp")})
    return run.code, run.out


@CLI
@given(data=st.data())
def test_cli_firstboot_preview(data: st.DataObject, sealed: dict[str, Any], work: Path) -> None:
    raw = data.draw(
        st.one_of(
            structured(sealed["unit"]).map(reseal),
            sources(json.dumps(sealed["unit"]).encode(), JSON_TOKENS),
        )
    )
    with example_folder(work) as ex:
        unit = write_input(ex, "unit.json", raw)
        facts = write_input(ex, "facts.json", json.dumps(sealed["facts"]).encode())
        code, out = oemkit(["firstboot", "preview", str(unit), "--pubkey", str(PUB), "--facts", str(facts)], ex, work)
        assert code in (0, 1, 2), out
        assert "Traceback" not in out, out
        assert_nothing_left(work, ex, unit, facts)


@CLI
@given(data=st.one_of(mutations(PROFILE_BYTES, YAML_TOKENS), ANY_TEXT))
def test_cli_profile_validate(data: bytes, work: Path) -> None:
    with example_folder(work) as ex:
        profile = write_input(ex, "profile.yaml", data)
        code, out = oemkit(["profile", "validate", str(profile), "--site", str(SITE), "--json"], ex, work)
        assert code in (0, 1, 2), out
        assert "Traceback" not in out, out
        assert_nothing_left(work, ex, profile)


@CLI
@given(data=st.one_of(mutations(ORDERS_TEXT.encode(), CSV_TOKENS), token_soup(CSV_TOKENS)))
def test_cli_compile_orders(data: bytes, work: Path) -> None:
    key = work / "signing.key"
    if not key.exists():
        shutil.copyfile(KEY, key)
        key.chmod(0o600)
    with example_folder(work) as ex:
        orders = write_input(ex, "orders.csv", data)
        out = ex / "units"
        code, text = oemkit(["compile", "--orders", str(orders), "--key", str(key), "-o", str(out)], ex, work)
        assert code in (0, 1, 2), text
        assert "Traceback" not in text, text
        if out.exists():
            assert all(p.name.endswith(".json") and not p.name.startswith(".") for p in out.iterdir())
        assert_nothing_left(work, ex, orders, out)
