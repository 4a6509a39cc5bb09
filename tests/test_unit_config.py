"""The unit config as the box reads it: every refusal of the strict reader (with and without a valid seal), the
frozen v1 documents, the version chain, and the seal's invariants."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from hypervisor_core import config
from hypervisor_core.config import ConfigError, Version, from_dict, load, read
from oemkit.seal.keys import load_private_key

from .conftest import REPO
from .firstboot_kit import KEY, compile_to, public_key

PROFILE = REPO / "profiles" / "retail-branch.yaml"
SITE = REPO / "profiles" / "sites" / "retail-ber01.yaml"
SERIAL = "J30ABC12"
FROZEN_V1 = sorted((REPO / "tests" / "data" / "units" / "v1").glob("*.json"))


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A valid document, sealed by today's factory; each test mutates its own deep copy."""
    return compile_to(PROFILE, SITE, SERIAL, tmp_path_factory.mktemp("unit") / "unit.json")


def _reseal(doc: dict) -> bytes:
    """Content id and signature recomputed with the test key, as a compromised factory could: whatever is then
    refused is refused for its content, not its seal."""
    doc = dict(doc)
    doc.pop("signature", None)
    doc["content_id"] = config.content_id(doc)
    doc["signed_by"] = config.key_id(public_key())
    doc["signature"] = "ed25519:" + base64.b64encode(load_private_key(KEY).sign(config.signed_bytes(doc))).decode()
    return json.dumps(doc).encode()


Mutation = Callable[[dict], None]


def _set(*path: str | int, value: Any) -> Mutation:
    def mutate(doc: dict) -> None:
        for part in path[:-1]:
            doc = doc[part]
        doc[path[-1]] = value

    return mutate


def _drop(*path: str | int) -> Mutation:
    def mutate(doc: dict) -> None:
        for part in path[:-1]:
            doc = doc[part]
        del doc[path[-1]]

    return mutate


# (name, mutation of the sealed document, the ConfigError message)
REFUSALS: list[tuple[str, Mutation, str]] = [
    ("unknown top-level key", _set("debug", value=True), "unknown key 'debug'"),
    ("unknown nested key", _set("host", "dns", "options", value=["ndots:5"]), "host.dns: unknown key 'options'"),
    (
        "unknown key in a list item",
        _set("workloads", 1, "cpu_pinning", value=True),
        "workloads[1]: unknown key 'cpu_pinning'",
    ),
    ("missing required key", _drop("serial"), "serial: missing"),
    ("missing nested key", _drop("management", "uplinks", "rules"), "management.uplinks.rules: missing"),
    ("string for int", _set("workloads", 0, "vcpus", value="4"), "workloads[0].vcpus: expected an integer"),
    ("int for bool", _set("security", "ssh", value=1), "security.ssh: expected true or false"),
    ("bool for int", _set("workloads", 0, "memory_mib", value=True), "workloads[0].memory_mib: expected an integer"),
    ("string for an optional int", _set("management", "vlan", value="100"), "management.vlan: expected an integer"),
    ("object for list", _set("networks", value={}), "networks: expected a list"),
    (
        "literal not allowed",
        _set("storage", "layout", value="raid5"),
        "storage.layout: 'raid5' is not one of ['single', 'mirror', 'raid10', 'stripe']",
    ),
    (
        "optional literal not allowed",
        _set("management", "bond", value="lacp"),
        "management.bond: 'lacp' is not one of ['active-backup', '802.3ad', 'balance-alb']",
    ),
    ("tuple given a string", _set("host", "ntp", value="pool.ntp.org"), "host.ntp: expected a list"),
    ("null for a string", _set("host", "hostname", value=None), "host.hostname: expected a string"),
    ("null for an object", _set("management", value=None), "management: expected an object"),
    (
        "unknown schema version",
        _set("schema", value="oemkit.unit/v9"),
        "unknown schema 'oemkit.unit/v9': this agent reads oemkit.unit/v1",
    ),
    (
        "schema of the wrong type",
        _set("schema", value=["oemkit.unit/v1"]),
        "unknown schema ['oemkit.unit/v1']: this agent reads oemkit.unit/v1",
    ),
    (
        "pool name with a slash",
        _set("storage", "pool", value="pools/../../etc"),
        "pool name 'pools/../../etc' is not a plain name (a-z, 0-9, '-')",
    ),
    (
        "network name '..'",
        _set("networks", 2, "name", value=".."),
        "network name '..' is not a plain name (a-z, 0-9, '-')",
    ),
    (
        "disk name with a slash",
        _set("workloads", 0, "disks", 0, "name", value="root/x"),
        "disk name 'root/x' is not a plain name (a-z, 0-9, '-')",
    ),
    (
        "pool name with a trailing line break",
        _set("storage", "pool", value="datastore\n"),
        "pool name 'datastore\\n' is not a plain name (a-z, 0-9, '-')",
    ),
    (
        "control character in an ntp server",
        _set("host", "ntp", 0, value="ntp.example\nx"),
        "a control character or line break in 'ntp.example\\nx'",
    ),
    (
        "DNS server not an IP address",
        _set("host", "dns", "servers", 1, value="dns.example.com"),
        "DNS server 'dns.example.com' is not an IP address",
    ),
    ("invalid host name", _set("host", "hostname", value="br_ber01"), "host name 'br_ber01' is not valid"),
    (
        "host name with a leading dash",
        _set("host", "hostname", value="-br-ber01"),
        "host name '-br-ber01' is not valid",
    ),
    (
        "host name with a trailing line break",
        _set("host", "hostname", value="br-ber01\n"),
        "host name 'br-ber01\\n' is not valid",
    ),
]


def _cases() -> list:
    return [pytest.param(mutate, message, id=name) for name, mutate, message in REFUSALS]


def _mutated(sealed: dict, mutate: Mutation) -> dict:
    doc = copy.deepcopy(sealed)
    mutate(doc)
    assert json.dumps(doc) != json.dumps(sealed)  # the mutation changed something (as JSON: 1 == True)
    return doc


def test_the_valid_document_reads_and_reseals(sealed: dict) -> None:
    # the baseline every refusal starts from: read as is, and re-sealing by hand is accepted
    assert from_dict(copy.deepcopy(sealed)).serial == SERIAL
    assert load(_reseal(copy.deepcopy(sealed)), public_key()).to_dict() == sealed


@pytest.mark.parametrize(("mutate", "message"), _cases())
def test_the_reader_refuses(sealed: dict, mutate: Mutation, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_dict(_mutated(sealed, mutate))
    assert str(exc.value) == message


@pytest.mark.parametrize(("mutate", "message"), _cases())
def test_a_correctly_sealed_document_is_refused_for_its_content(sealed: dict, mutate: Mutation, message: str) -> None:
    # signed with the right key: the seal verifies, so the same refusal must come from the content itself
    with pytest.raises(ConfigError) as exc:
        load(_reseal(_mutated(sealed, mutate)), public_key())
    assert str(exc.value) == message


def test_a_lone_surrogate_is_a_config_error_not_a_crash() -> None:
    raw = b'{"schema": "oemkit.unit/v1", "serial": "\\ud800", "content_id": "sha256:0"}'
    with pytest.raises(ConfigError, match="lone surrogate"):
        load(raw, None)


# --- documents sealed by an earlier oemkit --------------------------------------------------------------------


def test_the_frozen_v1_documents_are_there() -> None:
    assert len(FROZEN_V1) >= 3  # an empty glob would make the test below prove nothing


@pytest.mark.parametrize("path", FROZEN_V1, ids=lambda p: p.stem)
def test_frozen_v1_documents_keep_loading(path: Path) -> None:
    raw = path.read_bytes()
    assert json.loads(raw)["schema"] == "oemkit.unit/v1"  # the fixture really is a v1 document
    cfg = load(raw, public_key())  # seal and signature checked on the document as sealed back then
    assert isinstance(cfg, config.UnitConfig)
    assert cfg.serial == path.stem.rsplit("-", 1)[1]
    assert f"{cfg.profile}-{cfg.serial}" == path.stem


# --- the version chain, with toy versions ---------------------------------------------------------------------


@dataclass(frozen=True)
class V0:
    schema: str
    name: str


@dataclass(frozen=True)
class V1:
    schema: str
    name: str
    size: int
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class V2:
    schema: str
    title: str  # v2 renamed `name`
    size: int
    history: tuple[str, ...] = ()


def v0_to_v1(doc: V0) -> V1:
    assert isinstance(doc, V0)
    return V1("toy/v1", doc.name, size=1, history=("v0→v1",))


def v1_to_v2(doc: V1) -> V2:
    assert isinstance(doc, V1)
    return V2("toy/v2", doc.name, doc.size, history=(*doc.history, "v1→v2"))


TOYS = (Version("toy/v0", V0, upgrade=v0_to_v1), Version("toy/v1", V1, upgrade=v1_to_v2), Version("toy/v2", V2))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"schema": "toy/v0", "name": "a"}, V2("toy/v2", "a", 1, ("v0→v1", "v1→v2"))),  # up twice, in order
        ({"schema": "toy/v1", "name": "a", "size": 7}, V2("toy/v2", "a", 7, ("v1→v2",))),
        ({"schema": "toy/v2", "title": "a", "size": 7}, V2("toy/v2", "a", 7)),  # the newest: untranslated
    ],
    ids=["v0", "v1", "v2"],
)
def test_a_document_is_read_by_its_version_and_translated_up(data: dict, expected: V2) -> None:
    assert read(data, versions=TOYS) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"schema": "toy/v0", "name": "a", "size": 7}, "unknown key 'size'"),  # v0's rules, not v1's
        ({"schema": "toy/v1", "name": "a"}, "size: missing"),
        ({"schema": "toy/v2", "name": "a", "size": 7}, "unknown key 'name'"),  # v2 no longer has it
        ({"schema": "toy/v3", "title": "a"}, "unknown schema 'toy/v3': this agent reads toy/v0, toy/v1, toy/v2"),
        ({"title": "a"}, "unknown schema None: this agent reads toy/v0, toy/v1, toy/v2"),
    ],
    ids=["v0-with-a-v1-key", "v1-missing-a-key", "v2-with-a-v0-key", "unknown-schema", "no-schema"],
)
def test_each_version_reads_with_its_own_rules(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        read(data, versions=TOYS)
    assert str(exc.value) == message


def test_the_chain_ends_at_what_the_factory_seals() -> None:
    assert config.VERSIONS[-1].schema == config.SCHEMA and config.VERSIONS[-1].upgrade is None
    assert config.VERSIONS[-1].document is config.UnitConfig
    assert all(v.upgrade is not None for v in config.VERSIONS[:-1])


def test_the_agent_reads_what_the_factory_seals(tmp_path: Path) -> None:
    """Sealed through the factory's one path, read back by the agent's: the very same typed config."""
    from oemkit.catalog.store import load_catalog
    from oemkit.profile.check import check
    from oemkit.seal.compile import Request, Sealer
    from oemkit.seal.keys import load_private_key

    from .conftest import REPO
    from .firstboot_kit import KEY

    catalog = load_catalog(REPO / "hardware_catalog")
    checked = check(REPO / "profiles/remote-clinic.yaml", REPO / "profiles/sites/clinic-valley.yaml", None,
                    catalog.root, catalog=catalog)  # fmt: skip
    sealed = Sealer(load_private_key(KEY), catalog).seal_unit(checked, Request("CLV00009"))
    assert sealed.problems == [] and sealed.config is not None
    assert load(sealed.text().encode(), public_key()) == sealed.config


# --- the seal ---------------------------------------------------------------------------------------------------


def test_content_changed_after_sealing_is_refused(sealed: dict) -> None:
    doc = copy.deepcopy(sealed)
    doc["workloads"][0]["vcpus"] += 1  # still a valid document: only the seal can tell
    raw = json.dumps(doc).encode()
    with pytest.raises(ConfigError) as unsigned:
        load(raw, None)
    assert str(unsigned.value) == "unit config content id does not match its content"
    with pytest.raises(ConfigError) as signed:
        load(raw, public_key())
    assert str(signed.value) == "unit config signature does not verify: the file was altered after signing"
    assert load(json.dumps(sealed).encode(), public_key()).serial == SERIAL  # the untouched one verifies


def test_formatting_is_not_content(sealed: dict) -> None:
    # the seal is over canonical JSON: another key order and indentation still verify
    raw = json.dumps(dict(reversed(list(sealed.items()))), indent=7).encode()
    assert load(raw, public_key()).to_dict() == sealed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: replace(c, storage=replace(c.storage, pool="../../etc")),
            "pool name '../../etc' is not a plain name (a-z, 0-9, '-')",
        ),
        (lambda c: replace(c, host=replace(c.host, hostname="-x")), "host name '-x' is not valid"),
        (
            lambda c: replace(c, host=replace(c.host, dns=replace(c.host.dns, servers=("dns.example",)))),
            "DNS server 'dns.example' is not an IP address",
        ),
    ],
    ids=["pool", "hostname", "dns"],
)
def test_the_factory_cannot_build_what_the_box_refuses(sealed: dict, change, message: str) -> None:
    cfg = from_dict(copy.deepcopy(sealed))
    with pytest.raises(ConfigError) as exc:
        change(cfg)  # UnitConfig checks its invariants on construction
    assert str(exc.value) == message
