"""JSON error responses: every failure is ``{"detail": ...}``, never a stack trace.

`detail` is a sentence, except for a 422 on input that does not fit (a body
field, a query parameter): there it is a list of ``{"loc": [...], "msg": ...}``,
one per problem, `loc` naming the field as the client sent it (``["title"]``,
``["limit"]``, ``["keys", "auth"]``). FastAPI's own 422 (which prefixes `loc`
with ``body``/``query`` and echoes the input) is answered in that shape too.
Both shapes are in the OpenAPI schema (`Error`, `ValidationErrors`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fictures.errors import DomainError, TooManyRequests, Unauthorized

logger = logging.getLogger(__name__)


class MalformedBody(DomainError):
    """The request body is not a JSON object."""

    status_code = 400

    def __init__(self, detail: str = "body must be a JSON object"):
        super().__init__(detail)


# ---------------------------------------------------------------- documented shapes


class Error(BaseModel):
    """What every refusal answers: a sentence for a person to read."""

    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str


class ValidationErrors(BaseModel):
    """Input that does not fit: one entry per field and problem."""

    detail: list[FieldProblem]


_SOURCES = {"body", "query", "path", "header", "cookie"}


def validation_detail(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without its input echo or documentation links."""
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        if isinstance(exc, RequestValidationError) and loc and loc[0] in _SOURCES:
            loc = loc[1:]
        problems.append({"loc": loc, "msg": err["msg"]})
    return problems


# ---------------------------------------------------------------- handlers


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError | RequestValidationError)
    return JSONResponse({"detail": validation_detail(exc)}, status_code=422)


def _allowed(request: Request) -> str | None:
    """Every method the request's path allows, over all the routes that serve it
    (FastAPI has a route per operation; its 405 names only the first one's)."""
    app = request.scope.get("app")
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in getattr(app, "routes", ()):
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)) or None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own: unknown route (404), wrong method (405, with its Allow header).
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed(request)):
        headers["Allow"] = allowed
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers or None)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


exception_handlers = {
    DomainError: _domain_error,
    ValidationError: _validation_error,
    RequestValidationError: _validation_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
