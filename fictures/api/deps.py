"""What every endpoint needs from a request: the bearer, the body, the path ids.

Only parsing happens here; what a value means is up to the domain functions.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlmodel import Session
from starlette.requests import Request

from fictures import auth
from fictures.api.errors import MalformedBody
from fictures.errors import NotFound, Unauthorized
from fictures.models import User

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# Ids are 32-bit integer columns: anything larger is a miss, not a database error.
_ID = re.compile(r"[0-9]{1,10}")
_MAX_ID = 2**31 - 1


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def require_user(session: Session, token: str | None) -> User:
    """The bearer's account; 401 (with ``WWW-Authenticate: Bearer``) without a valid one."""
    user = auth.user_for_token(session=session, token=token)
    if user is None:
        raise Unauthorized("a valid bearer token is required")
    return user


def optional_user(session: Session, token: str | None) -> User | None:
    """The bearer's account for reads: an invalid token reads as anonymous."""
    return auth.user_for_token(session=session, token=token)


def json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise MalformedBody() from None
    except RecursionError:
        # Nesting deeper than the interpreter's recursion limit (~1,000).
        raise MalformedBody("body is nested too deeply") from None
    if not isinstance(data, dict):
        raise MalformedBody()
    return data


def parse(model: type[M], body: bytes) -> M:
    """The body as `model`; pydantic's ValidationError becomes a 422."""
    return model.model_validate(json_object(body))


def path_id(request: Request, name: str, what: str) -> int:
    """A positive integer id from the path; anything else is a 404 like a missing row."""
    raw = request.path_params[name]
    if not _ID.fullmatch(raw) or not 1 <= int(raw) <= _MAX_ID:
        raise NotFound(f"{what} {raw} not found")
    return int(raw)
