"""What every endpoint needs from a request: the bearer, the body, the path ids.

Only parsing happens here; what a value means is up to the domain functions.

Bodies are read by the endpoints themselves (`parse`), not by FastAPI: FastAPI
reads and judges a body before any dependency runs, which would answer a
request without a valid bearer by its body's faults (this API answers 401
first), turn malformed JSON into a 422 (it is a 400 here) and swallow the 413
of a body that grows past the limit while it is read. `body(Model)` documents
the body in the OpenAPI schema all the same.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlmodel import Session
from starlette.requests import Request

from fictures import auth
from fictures.api.errors import MalformedBody
from fictures.errors import NotFound, Unauthorized
from fictures.models import MAX_ROW_ID, User

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

# Ids are 32-bit integer columns: anything larger is a miss, not a database error.
_ID = re.compile(r"[0-9]{1,10}")
_MAX_ID = MAX_ROW_ID


# ---------------------------------------------------------------- the bearer

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from `POST /api/auth/token`, sent as `Authorization: Bearer <token>`.",
)


def bearer_token(request: Request) -> str | None:
    """The bearer token of a request (for the endpoints that read the request themselves)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def _bearer(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str | None:
    return credentials.credentials if credentials is not None else None


# The bearer token if the request has one (checked by `require_user`, or read
# by `optional_user`, in the endpoint's own database session).
Bearer = Annotated[str | None, Depends(_bearer)]


def require_user(session: Session, token: str | None) -> User:
    """The bearer's account; 401 (with ``WWW-Authenticate: Bearer``) without a valid one."""
    user = auth.user_for_token(session=session, token=token)
    if user is None:
        raise Unauthorized("a valid bearer token is required")
    return user


def optional_user(session: Session, token: str | None) -> User | None:
    """The bearer's account for reads: an invalid token reads as anonymous."""
    return auth.user_for_token(session=session, token=token)


# ---------------------------------------------------------------- bodies


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


# The models `body()` documented: the schema generator adds them to its components.
BODY_MODELS: dict[str, type[BaseModel]] = {}


def body(model: type[BaseModel], description: str | None = None) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body of `model` that the endpoint parses itself."""
    BODY_MODELS[model.__name__] = model
    request_body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
    }
    if description:
        request_body["description"] = description
    return {"requestBody": request_body}


# ---------------------------------------------------------------- path ids

# What the schema promises; anything else in the path is answered like a
# missing row (404), never a 422, so no one learns more from a malformed id.
_ID_SCHEMA = {"type": "integer", "format": "int32", "minimum": 1, "maximum": _MAX_ID}


def _path_id(raw: str, what: str) -> int:
    """A positive integer id from the path; anything else is a 404 like a missing row."""
    if not _ID.fullmatch(raw) or not 1 <= int(raw) <= _MAX_ID:
        raise NotFound(f"{what} {raw} not found")
    return int(raw)


def _story_id(
    story_id: Annotated[str, Path(description="A story's id.", json_schema_extra=_ID_SCHEMA)],
) -> int:
    return _path_id(story_id, "story")


def _post_id(
    post_id: Annotated[str, Path(description="A post's id.", json_schema_extra=_ID_SCHEMA)],
) -> int:
    return _path_id(post_id, "post")


def _notification_id(
    notification_id: Annotated[
        str, Path(description="A notification's id.", json_schema_extra=_ID_SCHEMA)
    ],
) -> int:
    return _path_id(notification_id, "notification")


StoryId = Annotated[int, Depends(_story_id)]
PostId = Annotated[int, Depends(_post_id)]
NotificationId = Annotated[int, Depends(_notification_id)]
