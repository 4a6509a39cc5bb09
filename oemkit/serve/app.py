"""The service's routes (docs/zero-touch.md, "HTTP contract (v1)"). create_app() builds one app from Settings;
app_from_env() is the factory uvicorn's worker processes call. Migrations are not run here: `oemkit serve` runs them
once, before any worker starts, so N workers never race to migrate."""

from __future__ import annotations

import datetime as dt
import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Path, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.convertors import Convertor, register_url_convertor

from oemkit import __version__
from oemkit.profile.schema.rules import SERIAL_PATTERN
from oemkit.serve import errors, page, queries, store
from oemkit.serve.auth import AdminAuth
from oemkit.serve.bodies import BodyLimit
from oemkit.serve.db import POOL_SIZE, Database
from oemkit.serve.errors import ApiError
from oemkit.serve.intake import EnrolIntake, Incoming, ReportIntake
from oemkit.serve.ratelimit import UnitLimits
from oemkit.serve.schemas import (
    Enrolled,
    Enrolment,
    Fleet,
    Health,
    Invalid,
    Problem,
    Registration,
    Replay,
    Stored,
    UnitDetail,
    UnitOut,
)
from oemkit.serve.schemas import Report as ReportIn
from oemkit.serve.settings import LAST_REPORTS, MAX_BODY, Settings

# Worker threads of a process for the admin routes, which reach the database from plain functions (anyio's default is
# 40): the database pool keeps as many connections (db.POOL_SIZE), and more threads only queue for the GIL. (The box's
# routes take no thread: batch.py.)
THREADS = POOL_SIZE
JSON = "application/json"
DESCRIPTION = "Zero-touch enrolment and first-boot reports of oemkit appliances, and the fleet they make up."


class _AnyText(Convertor[str]):
    """A path parameter that takes anything, slashes and newlines too, so a bad serial reaches the serial rule and
    gets the contract's 422 instead of slipping past the route as a 404."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("oemkit_serial", _AnyText())

SerialPath = Annotated[
    str,
    Path(pattern=SERIAL_PATTERN, min_length=3, max_length=32, description="The unit's serial (the profile's rule)."),
]
UNIT = "/v1/units/{serial:oemkit_serial}"


def _state(request: Request) -> Any:
    return request.app.state


# The dependencies that neither wait nor take long are coroutines: FastAPI runs a plain function dependency on a worker
# thread, a hop through the thread pool per dependency and request.


async def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


DB = Annotated[Database, Depends(database)]


async def admin(request: Request) -> None:
    _state(request).auth.require(request, basic=False)


async def admin_page(request: Request) -> None:
    _state(request).auth.require(request, basic=True)


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    models: dict[int, type[Problem]] = {409: Problem, 422: Invalid}
    return {status: {"model": models.get(status, Problem)} for status in statuses}


def _report_body() -> dict[str, Any]:
    # the report route reads its body raw (the signature covers the bytes), so FastAPI cannot see its schema:
    # it is documented here, and its definitions added to the components in _openapi
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Report"}}},
        }
    }


def create_app(settings: Settings, db: Database | None = None) -> FastAPI:
    database_ = db or Database(settings.db_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield
        # what is queued is written first; off the event loop, which the last batches' answers need
        await anyio.to_thread.run_sync(reports.close)
        await anyio.to_thread.run_sync(enrolments.close)
        database_.dispose()

    app = FastAPI(
        title="oemkit provisioning service",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # the interactive docs load their scripts from a CDN: the service serves no external asset
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.db = database_
    app.state.settings = settings
    app.state.auth = AdminAuth(settings.admin_token_sha256)
    app.state.limits = UnitLimits(enrol=settings.enrol_rate, report=settings.report_rate)
    reports = ReportIntake(database_, app.state.limits)
    enrolments = EnrolIntake(database_, app.state.limits)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY)

    @app.post(
        "/v1/units",
        status_code=201,
        response_model=UnitOut,
        dependencies=[Depends(admin)],
        responses={
            200: {"model": UnitOut, "description": "Registered again (not enrolled yet)"},
            **_errors(401, 409, 413, 422),
        },
        summary="Register (or, until it enrols, re-register) a unit",
    )
    def register(body: Registration, db: DB, response: Response) -> UnitOut:
        unit, created = store.register(db, body)
        response.status_code = 201 if created else 200
        return queries.unit_out(unit, None)

    @app.post(
        UNIT + "/enrol",
        response_model=Enrolled,
        responses=_errors(403, 409, 413, 422, 429),
        summary="Bind the unit key (the box, once, with its enrolment token)",
    )
    async def enrol(serial: SerialPath, body: Enrolment, request: Request) -> Response:
        await enrolments.submit(serial, body, _client(request))  # True or False (the same key again): both 200
        return Response(Enrolled(serial=serial, enrolled=True).model_dump_json(), media_type=JSON)

    @app.post(
        UNIT + "/reports",
        status_code=201,
        response_model=Stored,
        responses={**_errors(401, 403, 413, 422, 429), 409: {"model": Replay, "description": "duplicate or replay"}},
        openapi_extra=_report_body(),
        summary="One signed first-boot report (the box)",
    )
    async def report(
        serial: SerialPath,
        request: Request,
        x_oemkit_signature: Annotated[str | None, Header(description="ed25519=<base64 signature>")] = None,
    ) -> Response:
        # a coroutine: the report waits for its batch (intake.py, batch.py), not for a thread of its own; its body is
        # read raw (the signature covers the bytes; BodyLimit has bounded it)
        incoming = Incoming(serial, await request.body(), x_oemkit_signature, _client(request))
        seq = await reports.submit(incoming)
        return Response(Stored(stored=True, seq=seq).model_dump_json(), status_code=201, media_type=JSON)

    @app.get(
        UNIT,
        response_model=UnitDetail,
        dependencies=[Depends(admin)],
        responses=_errors(401, 404, 422),
        summary="A unit, its enrolment and its last reports",
    )
    def unit(serial: SerialPath, db: DB) -> UnitDetail:
        detail = queries.unit_detail(db, serial, LAST_REPORTS)
        if detail is None:
            raise ApiError(404, "unknown_unit", "no unit with this serial is registered")
        return detail

    @app.get("/v1/fleet", response_model=Fleet, dependencies=[Depends(admin)], responses=_errors(401))
    def fleet(db: DB) -> Fleet:
        """Every unit with its last state, grouped by site."""
        return queries.fleet(db)

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(admin_page)], responses=_errors(401))
    def fleet_page(db: DB) -> HTMLResponse:
        """The fleet page (HTTP Basic: any user name, the admin token as the password)."""
        html = page.render(queries.fleet(db), refresh_seconds=settings.refresh_seconds, now=dt.datetime.now(dt.UTC))
        return HTMLResponse(html, headers=page.HEADERS)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz(db: DB) -> Health | JSONResponse:
        """Whether the service and its database answer (no authentication)."""
        try:
            db.ping()
        except SQLAlchemyError:
            return JSONResponse({"status": "unavailable", "db": "error"}, status_code=503)
        return Health(status="ok", db="ok")

    def _openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            report = ReportIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(report.pop("$defs", {}))
            components["Report"] = report
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = _openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory (`oemkit serve`): the settings the CLI left in the environment."""
    app = create_app(Settings.from_env())
    # Everything loaded so far (FastAPI, SQLAlchemy, pydantic, the app: ~100,000 objects) lives as long as the
    # process: out of the cyclic collector's way, a full collection no longer walks it. Each one had stopped every
    # request for 65-100 ms, a few times a minute under load. (Here, not in create_app: the tests build many apps.)
    gc.collect()
    gc.freeze()
    return app


def openapi_json() -> str:
    """The OpenAPI document, stable (sorted keys): docs/openapi.json is this, checked by a test."""
    app = create_app(Settings("sqlite:///openapi-only.db", bytes(32)))  # nothing connects: no file is made
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
