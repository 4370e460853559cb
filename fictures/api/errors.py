"""JSON error responses: every failure is ``{"detail": ...}``, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from fictures.errors import DomainError, TooManyRequests, Unauthorized

logger = logging.getLogger(__name__)


class MalformedBody(DomainError):
    """The request body is not a JSON object."""

    status_code = 400

    def __init__(self, detail: str = "body must be a JSON object"):
        super().__init__(detail)


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without its input echo or documentation links."""
    return [{"loc": list(err["loc"]), "msg": err["msg"]} for err in exc.errors()]


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return JSONResponse({"detail": validation_detail(exc)}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own: unknown route (404), wrong method (405, with its Allow header).
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


exception_handlers = {
    DomainError: _domain_error,
    ValidationError: _validation_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
