"""The error handlers on their own: an unexpected exception is a bare 500."""

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from fictures.api.errors import exception_handlers
from fictures.errors import Conflict, Forbidden, NotFound, Unauthorized


async def _boom(request):
    raise RuntimeError("secret internals: password=hunter2")


def _raising(exc):
    async def endpoint(request):
        raise exc

    return endpoint


def _client(*routes) -> httpx.AsyncClient:
    app = Starlette(routes=list(routes), exception_handlers=exception_handlers)
    # Starlette re-raises after answering so the server can log it too; here the
    # client gets the answer instead of the exception.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://fictures.test")


async def test_unhandled_exception_is_500_without_details_and_logged(caplog):
    async with _client(Route("/boom", _boom)) as client:
        with caplog.at_level(logging.ERROR, logger="fictures.api.errors"):
            response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "hunter2" not in response.text
    records = [r for r in caplog.records if r.name == "fictures.api.errors"]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert "GET /boom" in records[0].getMessage()


@pytest.mark.parametrize(
    ("exc", "status"),
    [(Unauthorized("who?"), 401), (Forbidden("no"), 403), (NotFound("gone"), 404),
     (Conflict("taken"), 409)],
)
async def test_domain_errors_answer_with_their_status(exc, status):
    async with _client(Route("/x", _raising(exc))) as client:
        response = await client.get("/x")
    assert response.status_code == status
    assert response.json() == {"detail": exc.detail}
    assert ("WWW-Authenticate" in response.headers) == (status == 401)
