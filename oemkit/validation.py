"""Validate a located YAML document with a pydantic model; every error comes back located."""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from oemkit.problems import Problem, format_path
from oemkit.yamlio import Document

M = TypeVar("M", bound=BaseModel)


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


def problems_from(exc: ValidationError, doc: Document, model: type[BaseModel]) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        line, col = doc.locate(loc)
        hint = None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc), n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        elif err["type"] == "missing":
            msg = f"required key {loc[-1]!r} is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(Problem(doc.file, line, col, format_path(loc), msg, "error", hint))
    return out


def validate(model: type[M], doc: Document) -> tuple[M | None, list[Problem]]:
    if not isinstance(doc.data, dict):
        line, col = doc.locate(())
        kind = type(doc.data).__name__
        return None, [Problem(doc.file, line, col, "(document)", f"expected a mapping at the top, found a {kind}")]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        return None, problems_from(exc, doc, model)
