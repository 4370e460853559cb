"""What a browser may send over the websocket, checked before any handler runs.

Reflex registers every public method of every State as an event that any
browser can send, with any arguments, and adds events of its own (a `setvar`
on every state, which calls any `set_*` method with an unchecked value). So:

- `may_send(name)`: the socket drops every frame that is malformed or names an
  event no page wires: `setvar`, and Reflex's internal events other than the
  four its frontend sends itself (`REFLEX_FRONTEND_EVENTS`).
- `StrictArguments`, a Reflex middleware, checks each event's arguments against
  the handler's annotations, strictly (`"5"` is not an `int`, `true` is not a
  `str`; `Annotated` constraints apply), and drops the event before the handler
  runs if they do not match. Handlers receive the validated values.

Internal helpers of a State are private (`_name`) or live outside the class;
tests/test_browser_events.py keeps the list of browser-callable handlers
explicit, so a new public method cannot become an event unnoticed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from typing import Any
from urllib.parse import urlsplit

import reflex as rx
from pydantic import TypeAdapter, ValidationError

from fictures import reflex_compat, toasts
from fictures.models import text_problem
from fictures.reflex_compat import EventSpec
from fictures.settings import settings

logger = logging.getLogger(__name__)

# Reflex's own events that its frontend sends (context.js / state.js).
REFLEX_FRONTEND_EVENTS = frozenset(
    {"hydrate_and_load", "on_load_internal", "update_vars_internal", "handle_frontend_exception"}
)
# Arguments holding client storage values ({"state.path.var": value}).
_CLIENT_STORAGE_ARGS = frozenset({("hydrate_and_load", "vars"), ("update_vars_internal", "vars")})
_ROUTER_STRINGS = ("pathname", "asPath")


class Rejected(ValueError):
    """An event a browser sent that no handler may see."""


# Bounded: the names come from browsers, and a cache keyed by them must not grow
# with every random name a hostile client invents.
@functools.lru_cache(maxsize=1024)
def may_send(name: str) -> bool:
    """Whether a browser may send the event `name` (a registered, page-wired handler)."""
    fn = reflex_compat.handler_function(name)
    if fn is None:
        return False
    method = name.rpartition(".")[2]
    if method == "setvar":
        return False
    if fn.__module__.startswith("reflex"):
        return method in REFLEX_FRONTEND_EVENTS
    return True


def check_frame(data: Any) -> str | None:
    """Why a websocket frame must be dropped, or None if Reflex may read it."""
    if not isinstance(data, dict):
        return f"an event must be a JSON object, not {type(data).__name__}"
    name = data.get("name")
    if not isinstance(name, str) or not may_send(name):
        return "unknown or internal event " + repr(name)[:80]
    if not isinstance(data.get("payload", {}), dict):
        return "payload must be an object"
    return _check_router_data(data.get("router_data", {}))


def _check_router_data(router: Any) -> str | None:
    if not isinstance(router, dict):
        return "router_data must be an object"
    for key in _ROUTER_STRINGS:
        if key in router and not isinstance(router[key], str):
            return f"router_data.{key} must be a string"
    query = router.get("query", {})
    if not isinstance(query, dict) or not all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
        for v in query.values()
    ):
        return "router_data.query must map names to strings"
    return None


@functools.lru_cache(maxsize=1024)
def _signature(name: str) -> tuple[dict[str, TypeAdapter], frozenset[str], bool]:
    """(a validator per argument, the required arguments, whether it takes **kwargs)."""
    fn = reflex_compat.handler_function(name)
    if fn is None:
        raise Rejected("unknown event")
    hints = typing.get_type_hints(fn, include_extras=True)
    params = list(inspect.signature(fn).parameters.values())[1:]  # without self
    validators, required, var_kw = {}, set(), False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        validators[p.name] = TypeAdapter(hints.get(p.name, Any))
        if p.default is p.empty:
            required.add(p.name)
    return validators, frozenset(required), var_kw


def _client_storage(values: Any) -> dict[str, Any] | None:
    if values is None:
        return None
    if not isinstance(values, dict):
        raise Rejected("client storage values must be an object")
    checked = {}
    for key, value in values.items():
        var_type = reflex_compat.client_storage_type(key) if isinstance(key, str) else None
        if var_type is None:
            raise Rejected("not a client storage var: " + repr(key)[:80])
        try:
            checked[key] = TypeAdapter(var_type).validate_python(value, strict=True)
        except ValidationError as exc:
            raise Rejected(f"{key[-40:]}: {exc.errors()[0]['msg']}") from None
    return checked


def validated_payload(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The event's arguments as the handler declares them; raises Rejected."""
    validators, required, var_kw = _signature(name)
    method = name.rpartition(".")[2]
    checked: dict[str, Any] = {}
    for arg, value in reflex_compat.iter_payload_values(payload):
        if (method, arg) in _CLIENT_STORAGE_ARGS:
            checked[arg] = _client_storage(value)
            continue
        validator = validators.get(arg)
        if validator is None:
            if not var_kw:
                raise Rejected(f"unexpected argument {arg[:40]!r}")
            checked[arg] = value
            continue
        try:
            checked[arg] = validator.validate_python(value, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Rejected(f"argument {arg!r}: {first['msg']}") from None
        if _has_lone_surrogate(checked[arg]):
            # Reflex could not send it back to the browser (UTF-8 has no such characters).
            raise Rejected(f"argument {arg!r}: not valid Unicode text")
    if missing := required - checked.keys():
        raise Rejected(f"missing argument(s) {', '.join(sorted(missing))}")
    return checked


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return text_problem(value.replace("\x00", "")) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_lone_surrogate(v) for v in value)
    return False


class StrictArguments(rx.Middleware):
    """Drops an event whose arguments do not match its handler's annotations."""

    async def preprocess(self, app: rx.App, state: Any, event: Any) -> Any:
        try:
            valid = validated_payload(event.name, event.payload)
        except (Rejected, ValidationError) as exc:
            logger.warning("Rejected event %s: %s", event.name.rpartition(".")[2], _short(exc))
            return reflex_compat.empty_update()
        # The handler receives exactly the validated values.
        event.payload.clear()
        event.payload.update(valid)
        return None


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return exc.errors()[0]["msg"]
    return str(exc)[:200]


def install(app: rx.App) -> None:
    """Check every event a browser sends: its origin when the socket opens,
    frames at the socket, arguments in a middleware."""
    reflex_compat.restrict_socket_origins(app, origin_allowed)
    reflex_compat.guard_socket_events(app, check_frame)
    app.add_middleware(StrictArguments(), index=0)



def origin_allowed(origin: str | None, environ: Any) -> bool:
    """Whether a websocket may be opened from `origin`: the app's own origin
    (the Host the browser asked for) or one of `FICTURES_CORS_ORIGINS`.
    Non-browser clients send no Origin and are let through."""
    if not origin:
        return True
    if origin in settings.cors_origin_list:
        return True
    host = environ.get("HTTP_HOST", "") if isinstance(environ, dict) else ""
    return bool(host) and urlsplit(origin).netloc == host


def on_frontend_error(exception: Exception) -> None:
    """Reflex's frontend exception handler. What a browser reports is the
    browser's problem, and any page can report anything: a warning, truncated."""
    logger.warning("A browser reported an error: %.500s", exception)


def on_handler_error(exception: Exception) -> EventSpec:
    """Reflex's backend exception handler: log it, show a fixed message (never
    the exception's text, which may hold user input)."""
    logger.error("An event handler failed", exc_info=exception)
    return toasts.error("Something went wrong", description="The error was logged. Please try again.")
