"""The API's bodies and answers (docs/zero-touch.md, "HTTP contract (v1)"). Requests are strict — no coercion, no
unknown keys — and every string and list has a bound that fits its column (models.py). Validation messages never
quote the value (an enrolment token must not come back in an error): the validators here say what is wrong only."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from oemkit.profile.schema.rules import SERIAL_PATTERN
from oemkit.serve import models as m

# --------------------------------------------------------------------------------------------- value types


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL and neither database takes a lone surrogate (from a "\ud800" JSON escape):
    # refused here, as bad input, rather than failing in the driver
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (a lone surrogate)") from None
    return value


# one pass of the regex engine each, not a Python loop per character: they run on every field of every report
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates


def _one_line(value: str) -> str:
    _storable(value)
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


def _salvaged(value: object) -> object:
    # a failure reason is whatever a failing box captured, maybe a tool's binary garbage: what no database can store
    # (NUL, lone surrogates) becomes U+FFFD rather than costing the report. Before pydantic's own str check, which
    # refuses a lone surrogate outright; anything but a str is left for that check to refuse.
    if not isinstance(value, str):
        return value
    return _UNSTORABLE.sub("\ufffd", value)


def _lower(value: str) -> str:
    return value.lower()


def _public_key(value: str) -> str:
    try:
        raw = b64decode(value)
    except ValueError:
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return value


def b64decode(value: str) -> bytes:
    """Standard or URL-safe base64, padded or not (the box's encoder is not ours to choose)."""
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


Serial = Annotated[str, Field(pattern=SERIAL_PATTERN, min_length=3, max_length=m.SERIAL_LEN)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", min_length=1, max_length=m.NAME_LEN)]
Hex64 = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{64}$"), AfterValidator(_lower)]
ContentId = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$", max_length=m.CONTENT_ID_LEN)]
CoreId = Annotated[str, Field(pattern=r"^[!-~]+$", min_length=1, max_length=m.CORE_ID_LEN)]  # printable ASCII
# what the box copies from its report.json (step ids, its version, the content id): one line of text, bounded
StepId = Annotated[str, Field(min_length=1, max_length=m.STEP_ID_LEN), AfterValidator(_one_line)]
Agent = Annotated[str, Field(min_length=1, max_length=m.AGENT_LEN), AfterValidator(_one_line)]
ReportedId = Annotated[str, Field(min_length=1, max_length=m.REPORTED_ID_LEN), AfterValidator(_one_line)]
BrandText = Annotated[str, Field(min_length=1, max_length=m.BRAND_LEN), AfterValidator(_one_line)]
Url = Annotated[
    str, Field(pattern=r"^https://[^\s/@?#]+(/[^\s?#]*)?$", max_length=m.URL_LEN), AfterValidator(_one_line)
]
Reason = Annotated[str, Field(max_length=m.REASON_LEN), BeforeValidator(_salvaged)]
Token = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{43}$")]  # 32 bytes, base64url without padding
PublicKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/_-]{43}=?$"), AfterValidator(_public_key)]
ReportId = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{32}$"), AfterValidator(_lower)]
Seconds = Annotated[float, Field(ge=0, le=1e7, allow_inf_nan=False)]
Epoch = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]  # seconds since 1970, as the box's clock says
Seq = Annotated[int, Field(ge=1, le=2**63 - 1)]  # a BIGINT
MAX_STEPS = 1000


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- requests


class Branding(Strict):
    oem_name: BrandText
    product: BrandText
    support_url: Url | None = None


class Registration(Strict):
    """POST /v1/units: a unit as the factory built it, and its enrolment token's SHA-256 (hex)."""

    serial: Serial
    model: Name
    site: Name
    profile: Name
    content_id: ContentId
    core_id: CoreId
    pcr15_expected: Hex64
    token_sha256: Hex64
    branding: Branding


class Enrolment(Strict):
    """POST /v1/units/{serial}/enrol: the token (once) and the unit's Ed25519 public key (base64)."""

    token: Token
    public_key: PublicKey


class Step(Strict):
    id: StepId
    status: Literal["ok", "failed"]
    seconds: Seconds


class Report(Strict):
    """POST /v1/units/{serial}/reports: the body the X-Oemkit-Signature header signs."""

    serial: Serial
    seq: Seq
    id: ReportId
    made_at: Epoch
    status: Literal["READY", "FAILED"]
    reason: Reason | None = None
    fault: Literal["refusal", "step", "core"] | None = None
    failed_step: StepId | None = None
    steps: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)
    bank: Literal["a", "b"] | None = None
    pcr15: Hex64 | None = None
    core_id: CoreId | None = None
    content_id: ReportedId | None = None
    agent: Agent
    origin: Literal["agent", "init"]


# --------------------------------------------------------------------------------------------- answers


class Problem(BaseModel):
    """Every 4xx (and the rare 5xx): what is wrong, and a code a program can test."""

    detail: str
    code: str


class Replay(Problem):
    last_seq: int


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Invalid(Problem):
    """422: each field that is wrong (the values are never repeated)."""

    errors: list[FieldError]


class Enrolled(BaseModel):
    serial: str
    enrolled: bool


class Stored(BaseModel):
    stored: bool
    seq: int


class ReportOut(BaseModel):
    seq: int
    id: str
    status: str
    reason: str | None
    fault: str | None
    failed_step: str | None
    steps: list[Step]
    bank: str | None
    pcr15: str | None
    core_id: str | None
    content_id: str | None
    agent: str
    origin: str
    made_at: float
    received_at: dt.datetime


class BrandingOut(BaseModel):
    oem_name: str
    product: str
    support_url: str | None


class UnitOut(BaseModel):
    serial: str
    model: str
    site: str
    profile: str
    content_id: str
    core_id: str
    pcr15_expected: str
    branding: BrandingOut
    registered_at: dt.datetime
    enrolled: bool
    enrolled_at: dt.datetime | None
    key_id: str | None = Field(description="ed25519:<first 16 hex of the key's SHA-256>, as `oemkit keys` names keys")
    public_key: str | None = Field(description="The unit's Ed25519 public key (base64), once enrolled.")
    state: Literal["registered", "enrolled", "READY", "FAILED"]
    last_seq: int
    last_seen_at: dt.datetime | None = Field(description="The last enrolment or report received from the unit.")
    last_report: ReportOut | None
    pcr15_mismatch: bool | None = Field(
        description="The last report's PCR 15 is not the expected one (null: no PCR 15)"
    )


class UnitDetail(UnitOut):
    reports: list[ReportOut] = Field(description="The last reports, newest first.")


class Site(BaseModel):
    site: str
    counts: dict[str, int]
    units: list[UnitOut]


class Fleet(BaseModel):
    counts: dict[str, int]
    sites: list[Site]


class Health(BaseModel):
    status: str
    db: str
