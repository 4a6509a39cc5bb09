"""A SKU's model may carry a variant after a comma (Dell: "SKU=0716;ModelName=PowerEdge R640,XL"): the model before
the comma must be the product's own model, compared whole, so no sibling (R6405, R6415, R740xd) ever passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hypervisor_core.identity import IdentitySpec, SmbiosIdentity
from oemkit.catalog.store import Catalog
from oemkit.hardware.dmi import read_report

from .conftest import samples_dir

DELL = "Dell Inc."
SPECS = {
    "R640": IdentitySpec((DELL,), ("PowerEdge R640",)),
    "R6415": IdentitySpec((DELL,), ("PowerEdge R6415",)),
    "R740": IdentitySpec((DELL,), ("PowerEdge R740",)),
    "R740xd": IdentitySpec((DELL,), ("PowerEdge R740xd",)),
}
OK = None
DISAGREE = "disagree"
OTHER = "expected one of"

# (model the spec is for, product name, SKU Number) → None (accepted), or a word of the reason it is refused
CASES: list[tuple[str, str | None, str, str | None]] = [
    # the model alone, as every sampled Dell reports it
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640", OK),
    # a variant suffix: letters after a comma, any case, white space around the comma
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640,XL", OK),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640,xl", OK),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640 , XL", OK),
    ("R640", "PowerEdge  r640", "SKU=0716;ModelName=POWEREDGE R640,XL", OK),  # folded as the name is
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640,XL;Extra=1", OK),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=Dell PowerEdge R640 Server,XL", OK),  # normalised as the name
    ("R740xd", "PowerEdge R740xd", "SKU=0715;ModelName=PowerEdge R740xd,XL", OK),
    # without a product name the SKU's model speaks, its variant dropped
    ("R640", None, "SKU=0716;ModelName=PowerEdge R640,XL", OK),
    # siblings: never by a prefix, never through a variant
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R6405,XL", DISAGREE),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R6415", DISAGREE),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R6415,XL", DISAGREE),
    ("R640", "PowerEdge R6415", "SKU=0716;ModelName=PowerEdge R6415,XL", OTHER),
    ("R6415", "PowerEdge R6415", "SKU=0716;ModelName=PowerEdge R640,XL", DISAGREE),
    ("R6415", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640,XL", OTHER),
    ("R640", None, "SKU=0716;ModelName=PowerEdge R6405,XL", OTHER),
    ("R740", "PowerEdge R740", "SKU=0715;ModelName=PowerEdge R740xd", DISAGREE),
    ("R740", "PowerEdge R740", "SKU=0715;ModelName=PowerEdge R740xd,XL", DISAGREE),
    ("R740", "PowerEdge R740xd", "SKU=0715;ModelName=PowerEdge R740xd,XL", OTHER),
    ("R740xd", "PowerEdge R740xd", "SKU=0715;ModelName=PowerEdge R740,XL", DISAGREE),
    ("R740xd", "PowerEdge R740", "SKU=0715;ModelName=PowerEdge R740,XL", OTHER),
    ("R740xd", None, "SKU=0715;ModelName=PowerEdge R740,XL", OTHER),
    # only letters make a variant: anything else after the comma stays part of the model, so it cannot agree
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640,", DISAGREE),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640,X2", DISAGREE),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640,15", DISAGREE),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R640,XL,YZ", DISAGREE),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=,XL", DISAGREE),
    ("R640", "PowerEdge R640", "SKU=0716;ModelName=PowerEdge R64,0XL", DISAGREE),
]


@pytest.mark.parametrize(("spec", "product", "sku", "refused"), CASES, ids=[f"{c[0]}:{c[1]}:{c[2]}" for c in CASES])
def test_sku_variants(spec: str, product: str | None, sku: str, refused: str | None) -> None:
    box = SmbiosIdentity(sys_vendor=DELL, product_name=product, product_sku=sku)
    why = SPECS[spec].mismatch(box)
    if refused is None:
        assert why is None, why
    else:
        assert why is not None and refused in why, why


def test_the_refusal_quotes_the_sku_model_as_written() -> None:
    box = SmbiosIdentity(
        sys_vendor=DELL, product_name="PowerEdge R640", product_sku="SKU=0716;ModelName=PowerEdge R6405,XL"
    )
    assert SPECS["R640"].mismatch(box) == "product 'PowerEdge R640' and SKU model 'PowerEdge R6405,XL' disagree"


def test_exactly_one_spec_accepts_each_box() -> None:
    """Over the whole table's boxes, the sibling specs never both accept one box."""
    for _spec, product, sku, _refused in CASES:
        box = SmbiosIdentity(sys_vendor=DELL, product_name=product, product_sku=sku)
        assert sum(s.mismatch(box) is None for s in SPECS.values()) <= 1, (product, sku)


def _with_sku(dump: Path, tmp_path: Path, model: str) -> Path:
    """The real dump, copied to a neutral name, with its SKU's model rewritten."""
    text = dump.read_text(errors="replace")
    edited, count = re.subn(r"(SKU Number: SKU=[0-9A-F]+;ModelName=)[^\n]*", lambda m: m.group(1) + model, text)
    assert count == 1
    out = tmp_path / "box.txt"
    out.write_text(edited)
    return out


@pytest.mark.parametrize(
    ("dump", "sku_model", "expected"),
    [
        ("dell/PowerEdge-R640", "PowerEdge R640,XL", "dell-poweredge-r640"),
        ("dell/PowerEdge-R640", "PowerEdge R6405,XL", None),
        ("dell/PowerEdge-R640", "PowerEdge R6415", None),
        ("dell/PowerEdge-R740", "PowerEdge R740,XL", "dell-poweredge-r740"),
        ("dell/PowerEdge-R740", "PowerEdge R740xd,XL", None),
        ("dell/PowerEdge-R650", "PowerEdge R650,XL", "dell-poweredge-r650"),
        ("dell/PowerEdge-R650", "PowerEdge R6515,XL", None),
    ],
)
def test_catalog_identify_accepts_variants_of_real_dumps(
    catalog: Catalog, tmp_path: Path, dump: str, sku_model: str, expected: str | None
) -> None:
    """The factory's identify and first boot share the rule: a real dump with a variant SKU is its model, and a
    sibling's SKU makes it nothing."""
    (source,) = sorted((samples_dir() / dump).glob("*.txt"))
    found = catalog.identify(read_report(_with_sku(source, tmp_path, sku_model)).identity)
    assert found.model_id == expected, found.reason
