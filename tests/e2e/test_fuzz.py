"""Property tests against the running app: random JSON, random types and random
strings (Reflex's var tags, NUL, lone surrogates, 1 MB strings) at every REST
endpoint and every browser-callable event handler, over real HTTP and a real
websocket.

For every example: no 5xx, nothing logged at ERROR (no unhandled exception),
and the server still answers within a second.

Deterministic by default (the same examples every run, so CI is repeatable);
`FICTURES_FUZZ_RANDOM=1` explores new ones, `FICTURES_FUZZ_EXAMPLES=N` sets how
many per endpoint or handler.
"""

from __future__ import annotations

import inspect
import json
import os
import time
import uuid
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from fictures import reflex_compat
from fictures.browser_events import may_send
from fictures.fictures import app  # noqa: F401  (registers every state)
from fictures.pages.writing import WritingState
from tests.e2e.conftest import AppServer, http
from tests.e2e.raw_socket import RawTab, TabClosed

EXAMPLES = int(os.environ.get("FICTURES_FUZZ_EXAMPLES", "25"))
fuzz = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("FICTURES_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=list(HealthCheck),
)

SPECIAL = [
    "<reflex.Var>x</reflex.Var>", "<reflex.Var>1</reflex.Var>", "a<reflex.Var>-3</reflex.Var>",
    "\x00", "nul\x00inside", "\ud800", "a\udfffb", "x" * 1_000_000, "", " ", "  padded  ",
    "\u2028\u2029", "<script>alert(1)</script>", "' OR 1=1 --", "../../etc/passwd", "%00",
    "🦄" * 40, "-1", "0", "1", "99999999999999999999", "true", "null", "fantasy", "published",
    "draft", "review", "story:published", "private:draft",
]
strings = st.one_of(st.text(max_size=40), st.sampled_from(SPECIAL))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), strings,
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
    max_leaves=10,
)
FIELDS = ["title", "summary", "content", "genre", "status", "body", "type", "username", "password"]
objects = st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS})


def _encode(value) -> bytes:
    # ensure_ascii: a lone surrogate travels as a \u escape, as a hostile client sends it.
    return json.dumps(value).encode()


bodies = st.one_of(
    objects.map(_encode),
    json_values.map(_encode),
    st.binary(max_size=64),
    st.sampled_from([b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000,
                     b"{" * 5000, b"", b"null", b"\xff\xfe"]),
)
path_values = st.one_of(
    st.integers(min_value=-5, max_value=2**64).map(str),
    strings.filter(lambda s: len(s) < 200).map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
)
QUERY_NAMES = ["limit", "genre", "channels", "story_id", "last_event_id", "before"]
queries = st.dictionaries(
    st.one_of(st.sampled_from(QUERY_NAMES), st.text(min_size=1, max_size=10)),
    st.one_of(st.text(max_size=20), st.integers().map(str), st.sampled_from(SPECIAL[:3])),
    max_size=3,
)
auths = st.sampled_from(["none", "valid", "garbage", "basic", "tag"])


def _api_routes() -> list[tuple[str, str]]:
    """Every operation of the API (FastAPI routes: one per method and path)."""
    from fictures.api import routes

    found = []
    for route in routes():
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                found.append((method, route.path))
    return found


def test_every_documented_operation_is_fuzzed():
    """The fuzz enumerates the routes; the OpenAPI schema lists the operations: the same set."""
    from fictures.api import build

    documented = {
        (method.upper(), path)
        for path, operations in build().openapi()["paths"].items()
        for method in operations
    }
    assert documented == set(_api_routes())


@pytest.fixture(scope="module")
def fuzz_user(app_server: AppServer) -> dict:
    username, token = app_server.register()
    story = app_server.create_story(token, f"Fuzz target {uuid.uuid4().hex[:6]}")
    return {"username": username, "token": token, "story_id": story["id"]}


def _still_healthy(app_server: AppServer, what: str) -> None:
    started = time.monotonic()
    r = http.get(f"{app_server.url}/ping", timeout=1)
    assert r.status_code == 200, what
    assert time.monotonic() - started < 1, f"slow after {what}"
    errors = app_server.errors_since_mark()
    assert not errors, f"the server logged errors after {what}:\n" + "\n".join(errors[:5])


@pytest.mark.parametrize(("method", "path"), _api_routes())
def test_rest_endpoints_survive_random_input(app_server: AppServer, fuzz_user, method, path):
    token = fuzz_user["token"]
    if (method, path) == ("DELETE", "/api/auth/token"):
        _, token = app_server.register()  # logging out spends a token: not the shared one
    headers_for = {
        "none": {}, "valid": {"Authorization": f"Bearer {token}"},
        "garbage": {"Authorization": "Bearer not-a-token"}, "basic": {"Authorization": "Basic YTpi"},
        "tag": {"Authorization": "Bearer <reflex.Var>x</reflex.Var>"},
    }

    @fuzz
    @given(ids=st.lists(path_values, min_size=3, max_size=3), query=queries, body=bodies, auth=auths,
           json_type=st.booleans())
    def run(ids, query, body, auth, json_type):
        url = path
        for name in ("story_id", "post_id", "notification_id"):
            url = url.replace("{" + name + "}", ids.pop())
        headers = {**headers_for[auth], "Content-Type": "application/json" if json_type else "text/plain"}
        what = f"{method} {url} {query} body={body[:80]!r}"
        request = http.build_request(method, f"{app_server.url}{url}", params=query, headers=headers, timeout=5,
                                     content=body if method in ("POST", "PUT", "PATCH") else None)
        response = http.send(request, stream=True)
        try:
            if response.status_code == 200 and "text/event-stream" in response.headers.get("content-type", ""):
                next(response.iter_bytes(), b"")  # the stream opened: that is enough
            else:
                response.read()
        finally:
            response.close()
        assert response.status_code < 500, f"{what} -> {response.status_code} {response.text[:300]}"
        if response.status_code >= 400 and "event-stream" not in response.headers.get("content-type", ""):
            assert "detail" in response.json(), what
        _still_healthy(app_server, what)

    run()


def _handler_paths(story_id: int) -> dict[str, str]:
    return {
        "writing_state": "/writing", "story_state": f"/community/story/{story_id}",
        "account_state": "/login", "community_state": "/community",
    }


def _browser_handlers() -> list[str]:
    names = []
    for name in sorted(reflex_compat.browser_callable()):
        module = reflex_compat.handler_function(name).__module__
        if may_send(name) and (module.startswith("fictures.") or module.startswith("reflex.state")):
            names.append(name)
    return names


class _Tab:
    """A logged-in websocket tab that reconnects when the server closes it (a
    frame over Socket.IO's size limit is answered by closing the connection)."""

    def __init__(self, app_server: AppServer, path: str, token: str):
        self.app_server, self.path, self.token = app_server, path, token
        self.tab = self._open()
        self.markers = 0

    def _open(self) -> RawTab:
        tab = RawTab(self.app_server.url, self.path, auth_token=self.token)
        tab.hydrated()
        return tab

    def send_and_settle(self, name: str, payload) -> None:
        """Send, then wait until the server has processed it (events of a tab run
        in order, so the echo of a marker sent after it means it is done)."""
        self.markers += 1
        marker = f"marker-{self.markers}"
        try:
            self.tab.send(name, payload)
            self.tab.send(f"{WritingState.get_full_name()}.set_title", {"value": marker})
            self.tab.wait_for(lambda _: marker in self.tab.delta_values("title"), timeout=10,
                              what=f"the marker after {name}")
        except (ConnectionClosed, TabClosed):
            # The server may close a socket that sends an oversized frame; it
            # must go on serving everyone else (checked by the caller).
            self.tab.close()
            self.tab = self._open()

    def close(self) -> None:
        self.tab.close()


@pytest.mark.parametrize("name", _browser_handlers())
def test_browser_handlers_survive_random_arguments(app_server: AppServer, fuzz_user, name):
    params = list(inspect.signature(reflex_compat.handler_function(name)).parameters)[1:]
    state_part = name.rpartition(".")[0].rpartition("____")[2]
    path = _handler_paths(fuzz_user["story_id"]).get(state_part, "/community")
    _, token = app_server.register()  # its own account: a fuzzed `logout` revokes only its token
    tab = _Tab(app_server, path, token)
    arguments = st.fixed_dictionaries({}, optional={p: json_values for p in params}) if params else st.just({})
    try:
        @fuzz
        @given(payload=st.one_of(arguments, st.dictionaries(strings, json_values, max_size=3), json_values))
        def run(payload):
            tab.send_and_settle(name, payload)
            _still_healthy(app_server, f"{name.rpartition('.')[2]}({str(payload)[:120]})")

        run()
    finally:
        tab.close()
