"""Contract tests: each private Reflex, python-socketio or Granian behaviour that
fictures.reflex_compat relies on, checked against the installed versions.

If one of these fails after an upgrade, the wrapper in reflex_compat needs
updating; the app must not silently lose the behaviour (a live hook becoming
browser-callable, Granian's connection limit not applied, ...). The socket-level
contracts (rooms, run_in_tab, the event gate) are exercised against the running
app in tests/e2e (test_live_community.py, test_hostile_input.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import reflex as rx

from fictures import reflex_compat

TAG = "a <reflex.Var>x</reflex.Var> b"


def _run(code: str, timeout: float) -> subprocess.CompletedProcess | None:
    """Run `code` in a fresh interpreter; None if it did not finish in time."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        return None


def test_reflex_still_decodes_var_tags_in_plain_strings():
    """The trap literal_text exists for: if this starts passing quickly, Reflex
    fixed it upstream (keep the neutraliser anyway: numeric tags splice vars)."""
    hung = _run(
        f"from reflex.vars import LiteralStringVar; LiteralStringVar.create({TAG!r})", timeout=5
    )
    assert hung is None, "LiteralStringVar.create returned on a var tag: Reflex changed"


def test_literal_text_keeps_the_text_and_never_decodes_it():
    done = _run(
        f"""
        import json
        from fictures.reflex_compat import literal_text
        for text in [{TAG!r}, "<reflex.Var>1</reflex.Var>", "\\x00\\ud800 \\u2028 '\\"</script>"]:
            var = literal_text(text)
            assert var._var_value == text
            assert str(var) == json.dumps(text), str(var)
        print("ok")
        """,
        timeout=60,
    )
    assert done is not None, "literal_text hung on a var tag"
    assert done.stdout.strip() == "ok", done.stderr


def test_keep_plain_keeps_a_public_method_out_of_the_event_handlers():
    class CompatProbeState(rx.State):
        def marked(self) -> None:
            """Plain."""

        reflex_compat.keep_plain(marked)

        def unmarked(self) -> None:
            """An event handler (shows the check can fail)."""

    assert reflex_compat.is_plain(CompatProbeState, "marked")
    assert "marked" not in CompatProbeState.event_handlers
    assert not reflex_compat.is_plain(CompatProbeState, "unmarked")
    assert f"{CompatProbeState.get_full_name()}.unmarked" in reflex_compat.browser_callable()


def test_granian_servers_get_the_raised_limits():
    from granian import Granian

    reflex_compat.raise_granian_limits(4321)
    server = Granian("fictures.fictures:app", interface="asgi", workers=1)
    assert reflex_compat.granian_limits(server) == (4321, 4321)
    # Calling it again (another config load) does not wrap twice.
    reflex_compat.raise_granian_limits(4321)
    assert reflex_compat.granian_limits(Granian("x:y", interface="asgi")) == (4321, 4321)


def test_delta_frame_uses_reflex_var_names():
    from fictures.live_feed import CommunityRoom

    frame = reflex_compat.delta_frame(CommunityRoom, {"s0": 1})
    (state_name, delta), = frame.delta.items()
    assert state_name == CommunityRoom.get_full_name()
    # The browser merges the key the compiled var reads.
    assert CommunityRoom.s0._js_expr.endswith(next(iter(delta)))


def test_registry_lookups():
    from fictures.fictures import app  # noqa: F401  (registers every state)
    from fictures.pages.writing import WritingState
    from fictures.state import SessionState

    name = f"{WritingState.get_full_name()}.delete"
    assert reflex_compat.handler_function(name).__name__ == "delete"
    assert reflex_compat.handler_function(name + "_nope") is None
    assert reflex_compat.client_storage_fields(SessionState) == ["auth_token"]
    assert reflex_compat.client_storage_type(f"{SessionState.get_full_name()}.auth_token_rx_state_") is str
    assert reflex_compat.client_storage_type(f"{SessionState.get_full_name()}.user_id") is None
    assert reflex_compat.client_storage_type("no.such.state.var") is None


def test_form_wire_format_becomes_a_dict():
    key = reflex_compat.FORM_DATA_ENTRIES_KEY
    values = dict(reflex_compat.iter_payload_values({"form": {key: [["title", "T"], ["body", "B"]]}}))
    assert values == {"form": {"title": "T", "body": "B"}}
    odd = {key: [["title"]]}
    assert dict(reflex_compat.iter_payload_values({"form": odd})) == {"form": odd}


def test_socket_origin_check_is_engineio_s():
    from fictures.fictures import app

    engine = app.sio.eio
    environ = {"HTTP_HOST": "fictures.test:3000", "wsgi.url_scheme": "http"}
    assert engine._cors_allowed_origins({**environ, "HTTP_ORIGIN": "http://evil.example"}) == []
    assert engine._cors_allowed_origins({**environ, "HTTP_ORIGIN": "http://fictures.test:3000"}) == [
        "http://fictures.test:3000"
    ]


async def test_socket_gate_and_disconnect_hook_are_installed_on_the_namespace():
    from fictures.fictures import app

    namespace = app.event_namespace
    # python-socketio dispatches "event" to the instance's on_event: the gate.
    assert namespace.on_event.__wrapped__ is not None
    assert dict(reflex_compat.connected_tokens(app)) == {}
    calls = []
    reflex_compat.on_tab_disconnect(app, calls.append)
    namespace.sid_to_token["sid-probe"] = "token-probe"
    try:
        namespace.on_disconnect("sid-probe")
    finally:
        namespace.sid_to_token.pop("sid-probe", None)
    assert calls == ["token-probe"]


def test_ping_interval_is_engineio_s_and_announced_to_browsers():
    from fictures.fictures import app

    before = app.sio.eio.ping_interval
    try:
        reflex_compat.set_ping_interval(app, 3.5)
        # What python-engineio sleeps between pings and tells a connecting client.
        assert app.sio.eio.ping_interval == 3.5
    finally:
        reflex_compat.set_ping_interval(app, before)


async def test_unanswered_pings_read_engineio_s_ping_state():
    """python-engineio sets `last_ping` when it sends a ping and clears it on the
    pong; the tab is found through Reflex's token map and Socket.IO's sid map.
    (tests/e2e/test_presence.py shows it on a real socket that goes silent.)"""
    import time

    from engineio.async_socket import AsyncSocket

    from fictures.fictures import app

    namespace, eio = app.event_namespace, app.sio.eio
    sock = AsyncSocket(eio, "eio-probe")
    eio.sockets["eio-probe"] = sock
    sid = await app.sio.manager.connect("eio-probe", namespace.namespace)
    await namespace._token_manager.link_token_to_sid("token-probe", sid)
    try:
        sock.last_ping = None  # the pong arrived
        assert reflex_compat.unanswered_pings(app, ["token-probe"]) == {"token-probe": 0.0}
        sock.last_ping = time.time() - 3  # a ping sent three seconds ago, no pong
        found = reflex_compat.unanswered_pings(app, ["token-probe", "no-such-token"])
        assert 2.9 <= found["token-probe"] < 4 and found["no-such-token"] is None
        sock.closed = True
        assert reflex_compat.unanswered_pings(app, ["token-probe"]) == {"token-probe": None}
    finally:
        await namespace._token_manager.disconnect_token("token-probe", sid)
        await app.sio.manager.disconnect(sid, namespace.namespace)
        eio.sockets.pop("eio-probe", None)


def test_forking_drops_inherited_db_connections():
    from reflex import model

    from fictures import db

    with db.session() as s:
        s.connection()
    assert model._ENGINE, "Reflex no longer caches engines in reflex.model._ENGINE"
    reflex_compat.forget_inherited_db_connections()


def test_a_backend_only_app_serves_the_built_frontend(tmp_path):
    """`reflex run --backend-only` switches the frontend mount off; with
    serve_built_frontend() called while the app module loads, the app's ASGI app
    serves the release step's build; without it, no page."""
    client = tmp_path / "build" / "client"
    client.mkdir(parents=True)
    (client / "index.html").write_text("<p>built by the release step</p>")
    code = f"""
        import asyncio, os, sys
        os.environ["REFLEX_WEB_WORKDIR"] = {str(tmp_path)!r}
        # What `reflex run --env prod --backend-only` leaves its workers (Reflex's
        # internal variables carry a double underscore).
        os.environ["__REFLEX_SKIP_COMPILE"] = "true"
        os.environ["__REFLEX_MOUNT_FRONTEND_COMPILED_APP"] = "false"
        from fictures import reflex_compat
        if sys.argv[1:] == ["mount"]:
            reflex_compat.serve_built_frontend()
        import httpx, reflex as rx
        asgi = rx.App()()
        async def get():
            transport = httpx.ASGITransport(app=asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
                r = await c.get("/")
                print(r.status_code, r.text)
        asyncio.run(get())
    """

    def page(*argv: str) -> str:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *argv], capture_output=True,
                                text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[1])
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip().splitlines()[-1]

    assert page("mount") == "200 <p>built by the release step</p>"
    assert page().startswith("404")
    (client / "index.html").unlink()
    result = _run(f"""
        import os
        os.environ["REFLEX_WEB_WORKDIR"] = {str(tmp_path)!r}
        from fictures import reflex_compat
        reflex_compat.serve_built_frontend()
    """, timeout=60)
    assert result is not None and "no built frontend" in result.stderr


def test_no_other_module_touches_the_internals():
    """Every private Reflex/Socket.IO/Granian use goes through reflex_compat."""
    import ast
    from pathlib import Path

    internal_modules = ("reflex_base", "reflex_components", "reflex.state", "reflex.app",
                        "reflex.istate", "reflex.model", "reflex.utils", "socketio", "engineio", "granian")
    internal_names = {"sio", "event_namespace", "event_processor", "__override_base_method__", "_ENGINE",
                      "sid_to_token", "token_to_sid", "_is_client_storage", "get_class_substate"}
    offenders = []
    for path in sorted((Path(__file__).resolve().parents[1] / "fictures").rglob("*.py")):
        if path.name == "reflex_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            module = ""
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
            elif isinstance(node, ast.Import):
                module = " ".join(a.name for a in node.names)
            if any(m == i or m.startswith(i + ".") or m.startswith(i + "_")
                   for m in module.split() for i in internal_modules):
                offenders.append(f"{path.name}:{node.lineno} imports {module}")
            if isinstance(node, ast.Attribute) and node.attr in internal_names:
                offenders.append(f"{path.name}:{node.lineno} uses .{node.attr}")
    assert offenders == []
