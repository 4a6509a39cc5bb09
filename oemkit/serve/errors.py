"""One shape for every error: `{"detail": …, "code": …}` (docs/zero-touch.md). FastAPI's own answers — its 422,
404, 405 — are rewritten into it, and a 422 lists the fields that are wrong without their values: a rejected body
may hold an enrolment token, and an error must not hand it back (or into a log)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException

log = logging.getLogger("oemkit.serve")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 413: "too_large", 415: "unsupported_media_type", 429: "rate_limited"}  # fmt: skip
_MAX_MSG = 200  # characters of one validation message
_MAX_ERRORS = 20


class ApiError(Exception):
    """A refusal the contract names: the status, the code, what is wrong, and any extra fields or headers."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


def problem(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status, headers=dict(headers or {}))


def _printable(part: object) -> str | int:
    # a location names keys the client chose: keep them short, and never a lone surrogate (JSON output would fail)
    if isinstance(part, int):
        return part
    return str(part)[:64].encode("utf-8", "backslashreplace").decode("utf-8")


def field_errors(errors: Sequence[Mapping[str, Any]], prefix: Sequence[str] = ()) -> list[dict[str, Any]]:
    """pydantic's errors without "input" and "ctx": where, what kind, and the message (which quotes no value). A path
    parameter checked by the route and by a dependency is reported once."""
    out: list[dict[str, Any]] = []
    for e in errors:
        item = {
            "loc": [*prefix, *(_printable(p) for p in e.get("loc", ()))],
            "msg": str(e.get("msg", "invalid"))[:_MAX_MSG],
            "type": str(e.get("type", "invalid")),
        }
        if item not in out:
            out.append(item)
    return out[:_MAX_ERRORS]


def invalid(fields: list[dict[str, Any]]) -> ApiError:
    first = fields[0] if fields else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "request"
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return ApiError(422, "invalid", f"{where}: {first['msg']}{more}", extra={"errors": fields})


def invalid_body(exc: ValidationError) -> ApiError:
    return invalid(field_errors(exc.errors(include_input=False, include_context=False), ("body",)))


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem(exc.status, exc.code, exc.detail, exc.headers, **exc.extra)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _api_error(request, invalid(field_errors(list(exc.errors()))))


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return problem(exc.status_code, code, detail, exc.headers)


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    # the database did not answer (down, unreachable, locked too long): the request may be retried, so 503
    log.error("database unavailable: %s", type(exc).__name__)
    return problem(503, "db_unavailable", "the database is not answering; try again later", {"Retry-After": "5"})


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # a bug, not bad input: logged with its traceback by the server, answered without one
    return problem(500, "internal", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(InterfaceError, _database_down)
    app.add_exception_handler(Exception, _unexpected)
