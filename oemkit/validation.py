"""Validate plain data with a pydantic model; every error comes back located by a locator function."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from oemkit.problems import Problem, format_path
from oemkit.yamlio import Document

M = TypeVar("M", bound=BaseModel)
Locator = Callable[[tuple[str | int, ...]], tuple[str, int, int]]  # path → (file, line, column)


def doc_locator(doc: Document) -> Locator:
    def locate(path: tuple[str | int, ...]) -> tuple[str, int, int]:
        line, col = doc.locate(path)
        return doc.file, line, col

    return locate


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model at `loc`, to suggest the key a typo meant."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return []
        current = _inner_model(info.annotation)
    return list(getattr(current, "model_fields", {}))


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _clean_loc(loc: tuple[Any, ...], data: Any, missing: bool = False) -> tuple[str | int, ...]:
    """pydantic puts union branch names (`StaticAddress`, `literal['dhcp']`, `function-after[...]`) into an error's
    location; they are not keys of the document. Keep exactly the parts that walk the data, plus a last part
    that names a missing or unknown key."""
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        in_map = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_map or in_list:
            current = current[part]
            out.append(part)
        elif missing and i == len(loc) - 1 and isinstance(current, dict) and isinstance(part, str):
            out.append(part)  # a required key that is missing
    return tuple(out)


# Keys that are refused with their own message rather than "unknown key".
REFUSED_KEYS = {
    "password": "plaintext passwords are never accepted: give password_hash (mkpasswd -m yescrypt)",
    "passwd": "plaintext passwords are never accepted: give password_hash (mkpasswd -m yescrypt)",
    "powered_by": 'the "powered by oemkit core" line is fixed: a profile can neither set nor remove it',
}
_BRANCH_NOISE = {"literal_error", "model_type", "dict_type", "model_attributes_type", "string_type"}


def _drop_union_noise(errors: list[dict[str, Any]], data: Any) -> list[dict[str, Any]]:
    """A union (`dhcp` or {address, gateway}) reports a miss for every branch; keep the branch the input chose."""
    out = []
    for err in errors:
        loc = _clean_loc(err["loc"], data, err["type"] == "missing")
        if err["type"] in _BRANCH_NOISE and any(
            o is not err
            and _clean_loc(o["loc"], data, o["type"] == "missing")[: len(loc)] == loc
            and o["type"] not in _BRANCH_NOISE
            for o in errors
        ):
            continue
        out.append(err)
    return out


def problems_from(
    exc: ValidationError,
    locate: Locator,
    model: type[BaseModel],
    data: Any = None,
    locate_missing: Locator | None = None,
) -> list[Problem]:
    out: dict[tuple[str, str], Problem] = {}
    errors: list[dict[str, Any]] = [dict(e) for e in exc.errors(include_url=False)]
    for err in _drop_union_noise(errors, data):
        loc = _clean_loc(err["loc"], data, err["type"] == "missing")
        file, line, col = (locate_missing or locate)(loc) if err["type"] == "missing" else locate(loc)
        hint = None
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and loc[-1] in REFUSED_KEYS:
            msg = REFUSED_KEYS[str(loc[-1])]
        elif err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc), n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        elif err["type"] == "missing":
            msg = f"required key {loc[-1]!r} is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        path = format_path(loc)
        # a union reports one error per branch for the same value; the first is enough
        out.setdefault(
            (path, err["type"] if err["type"] != "literal_error" else msg),
            Problem(file, line, col, path, msg, "error", hint),
        )
    return list(out.values())


def validate(
    model: type[M], data: Any, locate: Locator, root_file: str | None = None, locate_missing: Locator | None = None
) -> tuple[M | None, list[Problem]]:
    if not isinstance(data, dict):
        file, line, col = locate(())
        message = f"expected a mapping at the top, found a {type(data).__name__}"
        return None, [Problem(root_file or file, line, col, "(document)", message, unreadable=True)]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, problems_from(exc, locate, model, data, locate_missing)
