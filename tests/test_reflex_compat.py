"""Contract tests: each private Reflex, python-socketio or Granian behaviour that
fictures.reflex_compat relies on, checked against the installed versions.

If one of these fails after an upgrade, the wrapper in reflex_compat needs
updating; the app must not silently lose the behaviour (a live hook becoming
browser-callable, Granian's connection limit not applied, ...). The socket-level
contracts (rooms, run_in_tab, the event gate) are exercised against the running
app in tests/e2e (test_live_community.py, test_hostile_input.py).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
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


def test_granian_servers_speak_http1_only():
    import inspect

    from granian import Granian
    from granian.constants import HTTPModes
    from granian.server.common import AbstractServer

    reflex_compat.serve_http1_only()
    own = inspect.signature(inspect.unwrap(AbstractServer.__init__)).parameters["http"].default
    assert own == HTTPModes.auto  # Granian's default, which the wrapper changes
    reflex_compat.raise_granian_limits(4321)  # one wrapper for all
    assert reflex_compat.granian_http_mode(Granian("fictures.fictures:app", interface="asgi")) == "1"
    # A server given its own mode keeps it.
    assert reflex_compat.granian_http_mode(Granian("x:y", interface="asgi", http="2")) == "2"


def test_granian_servers_kill_a_worker_that_does_not_stop_in_time():
    from granian import Granian

    reflex_compat.bound_granian_worker_stop(7)
    reflex_compat.raise_granian_limits(4321)  # one wrapper for both
    server = Granian("fictures.fictures:app", interface="asgi", workers=2)
    assert reflex_compat.granian_kill_timeout(server) == 7
    assert reflex_compat.granian_limits(server) == (4321, 4321)
    assert isinstance(server.main_loop_interrupt, reflex_compat._SlicedEvent)
    # A server given its own timeout keeps it.
    assert reflex_compat.granian_kill_timeout(Granian("x:y", interface="asgi", workers_kill_timeout=3)) == 3


def test_granian_main_loop_runs_a_signal_handler_another_thread_received():
    """The kernel may hand a process's SIGTERM to any thread that does not block
    it; the Python handler then waits for the main thread to run bytecode. An
    untimed Event.wait() in the main thread (Granian's main loop) never does;
    the sliced wait does within 0.1 s."""
    code = """
        import signal, threading, time
        from fictures import reflex_compat
        event = {event}
        signal.signal(signal.SIGTERM, lambda *_: event.set())
        other = threading.Thread(target=time.sleep, args=(30,), daemon=True)
        other.start()
        threading.Timer(0.2, signal.pthread_kill, (other.ident, signal.SIGTERM)).start()
        started = time.monotonic()
        event.wait()
        print(round(time.monotonic() - started, 1))
    """
    plain = _run(code.format(event="threading.Event()"), timeout=5)
    assert plain is None, "an untimed Event.wait() ran the handler: the sliced wait may be unneeded"
    sliced = _run(code.format(event="reflex_compat._SlicedEvent()"), timeout=30)
    assert sliced is not None and float(sliced.stdout) < 1, (sliced and sliced.stderr)


def test_granian_main_loop_flag_can_be_set_inside_its_own_set():
    """Granian's main process sets the flag from its signal handler, in the main
    thread. Stopped by its control group (SIGTERM to every process, then dev.py's
    SIGINT), the second handler ran while the first was inside set(), holding
    the flag's lock: a plain Event's set() then waits for itself forever (seen
    in CI with py-spy: the main process hung until dev.py killed it)."""
    code = """
        from fictures import reflex_compat
        import threading
        event = {event}
        with event._cond:  # the first handler's set(), interrupted while it holds the lock
            event.set()  # the second handler's
        print(event.wait(1))
    """
    plain = _run(code.format(event="threading.Event()"), timeout=5)
    assert plain is None, "a plain Event's nested set() returned: the reentrant lock may be unneeded"
    sliced = _run(code.format(event="reflex_compat._SlicedEvent()"), timeout=30)
    assert sliced is not None and sliced.stdout.strip() == "True", (sliced and sliced.stderr)


def test_granian_main_does_not_report_a_worker_that_stopped_with_it():
    import threading
    from types import SimpleNamespace

    from granian.server.common import AbstractWorker

    reflex_compat.bound_granian_worker_stop(8)

    def watch(stopping_after: float | None) -> SimpleNamespace:
        parent = SimpleNamespace(
            interrupt_signal=False, interrupt_children=[], main_loop_interrupt=threading.Event(),
            reload_on_changes=False, reload_ignore_worker_failure=False,
        )
        worker = AbstractWorker.__new__(AbstractWorker)
        worker.parent, worker.idx, worker.interrupt_by_parent = parent, 1, False
        worker.inner = SimpleNamespace(join=lambda: None)  # the worker process has exited
        if stopping_after is not None:  # the main process acts on its own SIGTERM late
            threading.Timer(stopping_after, setattr, (parent, "interrupt_signal", True)).start()
        worker._watcher()
        return parent

    stopped = watch(stopping_after=0.3)
    assert stopped.interrupt_children == [] and not stopped.main_loop_interrupt.is_set()
    crashed = watch(stopping_after=None)  # no stop: Granian reports it and respawns it
    assert crashed.interrupt_children == [1] and crashed.main_loop_interrupt.is_set()


def test_granian_workers_take_their_stop_signal_from_set_loop_signals():
    """The hook on_worker_stop_signal replaces: Granian's ASGI workers import it by
    name when they start, and it returns the flag their server stops on."""
    import inspect

    from granian.server.mp import MPServer

    for spawn in (MPServer._spawn_asgi_lifespan_worker, MPServer._spawn_asgi_worker):
        assert "from granian._signals import set_loop_signals" in inspect.getsource(spawn)


def test_granian_stop_flag_blocks_when_set_a_third_time():
    """The trap on_worker_stop_signal avoids: the flag holds one message, the
    server reads one, and a further set() blocks the caller (the worker's event
    loop, when its handler runs for each signal). If this starts passing quickly,
    Granian fixed it; setting the flag once is still right."""
    done = _run(
        """
        from granian._granian import WorkerSignal
        flag = WorkerSignal()
        flag.set()
        flag.set()
        print("returned")
        """,
        timeout=5,
    )
    assert done is None, "WorkerSignal.set() no longer blocks on a full channel: Granian changed"


def test_a_worker_stop_signal_runs_the_callbacks_and_sets_granians_flag_once():
    """SIGTERM, then SIGINT, then SIGTERM again (systemd, dev.py, Granian's main
    process): every callback sees each, and the handler never blocks."""
    done = _run(
        """
        import asyncio, os, signal
        from fictures import reflex_compat
        seen = []
        reflex_compat.on_worker_stop_signal(seen.append)
        reflex_compat.on_worker_stop_signal(seen.append)  # registered once
        from granian._signals import set_loop_signals
        loop = asyncio.new_event_loop()
        flag = set_loop_signals(loop)
        assert type(flag).__name__ == "WorkerSignal", flag
        for delay, sig in ((0.05, signal.SIGTERM), (0.1, signal.SIGINT), (0.15, signal.SIGTERM)):
            loop.call_later(delay, os.kill, os.getpid(), sig)
        loop.run_until_complete(asyncio.sleep(0.5))
        print(seen == [signal.SIGTERM, signal.SIGINT, signal.SIGTERM], seen)
        """,
        timeout=60,
    )
    assert done is not None, "the stop-signal handler blocked"
    assert done.stdout.startswith("True"), (done.stdout, done.stderr)


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


async def test_room_frames_go_on_each_socket_queue_as_python_socketio_would_send_them():
    """`emit_to_room` writes the packet python-socketio's own room emit would
    queue (same wire text) straight onto each socket's Engine.IO queue, after
    what is already queued there; a socket whose client stopped answering pings
    is closed by engineio's own `send` instead."""
    import time

    from engineio.async_socket import AsyncSocket

    from fictures.fictures import app
    from fictures.live_feed import CommunityRoom

    namespace, eio = app.event_namespace, app.sio.eio
    probes = {}
    for name in ("own", "socketio", "silent"):
        sock = AsyncSocket(eio, f"eio-{name}")
        eio.sockets[sock.sid] = sock
        sid = await app.sio.manager.connect(sock.sid, namespace.namespace)
        probes[name] = (sock, sid)
    update = reflex_compat.delta_frame(CommunityRoom, {"s3": {"id": 7, "title": "T"}})
    try:
        own, silent = probes["own"][0], probes["silent"][0]
        own.queue.put_nowait("hydrate snapshot")  # queued before the tab joined the room
        for name in ("own", "silent"):
            await reflex_compat.enter_room(app, probes[name][1], "probe-room")
        silent.last_ping = time.time() - eio.ping_timeout - 5  # pinged, never answered
        assert reflex_compat.room_size(app, "probe-room") == 2
        assert await reflex_compat.emit_to_room(app, "probe-room", update) == (1, 0)
        assert own.queue.get_nowait() == "hydrate snapshot"
        ours = own.queue.get_nowait().encode()
        assert own.queue.empty()
        assert silent.closed and silent.queue.empty()  # closed by engineio, the frame not queued
        # python-socketio's own emit to the one socket queues the same text.
        await namespace.emit(str(rx.constants.SocketEvent.EVENT), update, to=probes["socketio"][1])
        assert probes["socketio"][0].queue.get_nowait().encode() == ours
        assert ours.startswith('42/_event,["event",') and '"title":"T"' in ours
        assert await reflex_compat.emit_to_room(app, "no-such-room", update) == (0, 0)
    finally:
        for sock, sid in probes.values():
            await app.sio.manager.disconnect(sid, namespace.namespace)
            eio.sockets.pop(sock.sid, None)


@contextlib.asynccontextmanager
async def _socket_with_server_send():
    """An upgraded engineio socket of the app, connected to its namespace, whose
    server `send` (as Granian's: takes the message now, answers a future) records
    what it gets: yields (socket, sid, written [(text, future)])."""
    import asyncio

    from engineio.async_socket import AsyncSocket

    from fictures.fictures import app

    reflex_compat.lighter_socket_writer()
    namespace, eio = app.event_namespace, app.sio.eio
    loop = asyncio.get_running_loop()
    written: list[tuple[str, asyncio.Future]] = []

    def server_send(message):
        written.append((message["text"], loop.create_future()))
        return written[-1][1]

    sock = AsyncSocket(eio, f"eio-direct-{len(eio.sockets)}")
    eio.sockets[sock.sid] = sock
    sid = await app.sio.manager.connect(sock.sid, namespace.namespace)
    # What the upgrade keeps (the socket app is not run here: it would accept the websocket).
    original_upgrade = reflex_compat._engineio_originals["_upgrade_websocket"]
    try:
        reflex_compat._engineio_originals["_upgrade_websocket"] = lambda self, environ: asyncio.sleep(0)
        await AsyncSocket._upgrade_websocket(sock, {"asgi.scope": {reflex_compat.RAW_SEND: server_send}})
        assert sock.fx_send is server_send
        sock.connected = sock.upgraded = True
        yield sock, sid, written
    finally:
        reflex_compat._engineio_originals["_upgrade_websocket"] = original_upgrade
        await app.sio.manager.disconnect(sid, namespace.namespace)
        eio.sockets.pop(sock.sid, None)


async def test_a_room_frame_is_written_at_once_only_when_nothing_can_be_ahead_of_it():
    """With the server's own `send` known (`RAW_SEND`, kept at the upgrade), a
    room frame is handed to it at once while the socket's writer is parked on an
    empty queue; otherwise (a frame queued, the writer busy, the previous direct
    write still going out) it waits in the queue, and the writer sends nothing
    before that previous write has gone out: the tab's frames keep their order."""
    import asyncio

    from engineio.async_socket import AsyncSocket

    from fictures.fictures import app
    from fictures.live_feed import CommunityRoom

    async with _socket_with_server_send() as (sock, sid, written):
        await reflex_compat.enter_room(app, sid, "direct-room")

        def frame(i: int):
            return reflex_compat.delta_frame(CommunityRoom, {"s0": {"id": i}})

        # The writer is not parked: the frame waits in the queue.
        assert await reflex_compat.emit_to_room(app, "direct-room", frame(1)) == (1, 0)
        assert written == [] and sock.queue.qsize() == 1
        [queued] = await sock.poll()
        assert queued.encode().endswith('{"id":1}}}}]')
        # Parked on an empty queue: written at once, nothing queued.
        writer = asyncio.create_task(sock.poll())
        await asyncio.sleep(0)
        assert sock.fx_parked
        assert await reflex_compat.emit_to_room(app, "direct-room", frame(2)) == (1, 1)
        assert len(written) == 1 and written[0][0].startswith("42/_event,") and sock.queue.empty()
        # The first still going out: the next frame is queued, and the writer
        # returns it only once the first has gone out.
        await reflex_compat.emit_to_room(app, "direct-room", frame(3))
        assert len(written) == 1 and sock.queue.qsize() == 1
        for _ in range(5):
            await asyncio.sleep(0)
        assert not writer.done()
        written[0][1].set_result(None)
        packets = await asyncio.wait_for(writer, 1)
        assert [p.encode()[-12:] for p in packets] == ['{"id":3}}}}]']
        # A direct write that failed (the connection went) does not stop the writer.
        writer = asyncio.create_task(sock.poll())
        await asyncio.sleep(0)
        await reflex_compat.emit_to_room(app, "direct-room", frame(4))
        written[-1][1].set_exception(ConnectionError("gone"))
        sock.queue.put_nowait("next")
        assert await asyncio.wait_for(writer, 1) == ["next"]
        # A server that refuses the write at once (the connection gone): the frame
        # takes the queue, and the fan-out goes on.
        def refusing(message):
            raise ConnectionError("gone")

        sock.fx_send = refusing
        writer = asyncio.create_task(sock.poll())
        await asyncio.sleep(0)
        assert await reflex_compat.emit_to_room(app, "direct-room", frame(5)) == (1, 0)
        assert [p.encode()[-12:] for p in await asyncio.wait_for(writer, 1)] == ['{"id":5}}}}]']
        # A polling (not upgraded) socket never has a server send to write to.
        assert AsyncSocket(app.sio.eio, "eio-polling").fx_send is None


async def test_the_lighter_socket_writer_polls_as_python_engineio_does():
    """`lighter_socket_writer` replaces python-engineio's AsyncSocket.poll with the
    same code waiting on the queue with one timer per socket (no task, no timer
    per wait): for the same queue contents both give the same packets, the
    sentinel's empty list, and QueueEmpty on the timeout."""
    import asyncio
    import inspect

    from engineio import exceptions as engine_exceptions
    from engineio.async_socket import AsyncSocket

    from fictures.fictures import app

    reflex_compat.lighter_socket_writer()
    ours, theirs = AsyncSocket.poll, reflex_compat._engineio_originals["poll"]
    assert ours is not theirs
    # The code replaced is still engineio's 4.x poll (an upgrade that changes it fails here).
    assert "asyncio.wait_for(" in inspect.getsource(theirs) and "QueueEmpty" in inspect.getsource(theirs)
    reflex_compat.lighter_socket_writer()
    assert AsyncSocket.poll is ours  # idempotent

    eio = app.sio.eio
    before = eio.ping_interval, eio.ping_timeout
    try:
        for poll in (ours, theirs):
            sock = AsyncSocket(eio, "eio-poll")
            for pkt in ("a", "b", None, "c"):
                sock.queue.put_nowait(pkt)
            # What is queued up to the sentinel; the sentinel goes back (behind "c"),
            # and then reads as the end: an empty list.
            assert [await poll(sock) for _ in range(3)] == [["a", "b"], ["c"], []]
            eio.ping_interval, eio.ping_timeout = 0.05, 0.05
            started = asyncio.get_running_loop().time()
            with pytest.raises(engine_exceptions.QueueEmpty):
                await poll(sock)  # nothing within the ping timeout
            assert asyncio.get_running_loop().time() - started >= 0.09
            eio.ping_interval, eio.ping_timeout = before
        # A busy socket: each wait moves the deadline of the one timer it has.
        sock = AsyncSocket(eio, "eio-busy")
        timers = set()
        for i in range(5):
            waiting = asyncio.create_task(ours(sock))
            await asyncio.sleep(0)
            timers.add(id(sock.fx_deadline.timer))
            sock.queue.put_nowait(str(i))
            assert await waiting == [str(i)]
        assert len(timers) == 1
        # A wait cancelled from outside ends as engineio's does (QueueEmpty); after
        # a timeout the writer's task has no cancel pending (it goes on to close).
        waiting = asyncio.create_task(ours(sock))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(engine_exceptions.QueueEmpty):
            await waiting
        eio.ping_interval, eio.ping_timeout = 0.02, 0.02

        async def timed_out() -> int:
            with pytest.raises(engine_exceptions.QueueEmpty):
                await ours(sock)
            return asyncio.current_task().cancelling()

        assert await asyncio.create_task(timed_out()) == 0
    finally:
        eio.ping_interval, eio.ping_timeout = before


_SCOPE_APP = '''
import asyncio, os, sys
from fictures.reflex_compat import is_granian_send, release_scope, written_at_once


async def unawaited(send):
    """Chunks written without awaiting what send returns; then big ones until
    Granian asks to wait (the client reads nothing yet), and that wait."""
    flags = []
    for i in range(20):  # as EventStreamResponse.write_now does: after a pending one, wait first
        sent = send({"type": "http.response.body", "body": b"%03d," % i, "more_body": True})
        flags.append(written_at_once(sent))
        if not flags[-1]:
            await sent
    big, count, waiting = b"x" * 65536, 0, None
    while count < 2000:
        sent = send({"type": "http.response.body", "body": big, "more_body": True})
        count += 1
        if not written_at_once(sent):
            waiting = asyncio.ensure_future(sent)
            done, _ = await asyncio.wait({waiting}, timeout=1.0)
            if not done:
                break  # full for good: the client reads nothing
    with open(os.path.join(os.environ["SCOPE_OUT"], "pressure"), "w") as f:
        f.write(f"{is_granian_send(send)} {any(flags)} {count}")
    await waiting  # done once the client has read enough
    await send({"type": "http.response.body", "body": b"end", "more_body": False})
    with open(os.path.join(os.environ["SCOPE_OUT"], "unawaited"), "w") as f:
        f.write("done")

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    refs = sys.getrefcount(scope)  # this frame's name, the call's argument, and any holder besides
    released = release_scope(scope, send)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    if path == "/unawaited":
        await unawaited(send)
        return
    for part in (b"one ", b"two ", b"three"):
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    out = os.path.join(os.environ["SCOPE_OUT"], path.strip("/"))
    with open(out + ".part", "w") as f:
        f.write(f"{refs} {released} {len(scope)}")
    os.replace(out + ".part", out)
'''


def _read_response(client) -> bytes:
    """One chunked HTTP/1.1 response's body (the connection stays open)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = client.recv(4096)
        assert chunk, "the server closed the connection"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), head
    body = b""
    while True:
        while b"\r\n" not in rest:
            rest += client.recv(4096)
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += client.recv(4096)
        body, rest = body + rest[:size], rest[size + 2:]
        if size == 0:
            return body


def test_release_scope_leaves_another_servers_scope_alone():
    """uvicorn's access log reads the scope when the response starts: a `send`
    that is not Granian's keeps the scope whole."""
    scope = {"type": "http", "method": "GET", "path": "/api/community/events", "client": ("127.0.0.1", 1)}

    async def send(message: dict) -> None:
        pass

    assert reflex_compat.release_scope(scope, send) is False
    assert scope["path"] == "/api/community/events" and len(scope) == 4


@contextlib.contextmanager
def _granian_client(tmp_path: Path):
    """A real Granian serving `_SCOPE_APP` (it writes what it saw to `tmp_path`),
    and a client connection to it."""
    import os
    import socket
    import time

    from tests.cluster import free_port

    (tmp_path / "scope_app.py").write_text(_SCOPE_APP)
    port = free_port()
    env = {**os.environ, "SCOPE_OUT": str(tmp_path),
           "PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[1]}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--http", "1", "--no-ws",
         "--port", str(port), "scope_app:app"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline, "Granian did not start"
                time.sleep(0.1)
        with client:
            yield client
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_granian_takes_body_chunks_at_the_call_and_asks_to_wait_once_full(tmp_path):
    """`is_granian_send` and `written_at_once` (the SSE fan-out's direct writes):
    Granian takes a chunk when `send` is called, awaited or not, and answers
    with its empty awaitable when it has room for more; else with a pending
    future (its queue for the connection is full: for a moment, or for good when
    the client reads nothing), done once that chunk is queued. Waiting for that
    future before the next write keeps the chunks whole and in order. (Without
    the wait, later chunks can overtake it: seen here.)"""
    import time

    with _granian_client(tmp_path) as client:
        client.sendall(b"GET /unawaited HTTP/1.1\r\nHost: x\r\n\r\n")
        pressure = tmp_path / "pressure"
        deadline = time.monotonic() + 15
        while not pressure.exists():  # the client reads nothing meanwhile
            assert time.monotonic() < deadline, "Granian never asked to wait"
            time.sleep(0.05)
        granian, some_at_once, count = pressure.read_text().split()
        # (a small chunk may find the connection's queue full for a moment: the
        # app then waits for that chunk's future, as EventStreamResponse does)
        assert granian == "True" and some_at_once == "True", (granian, some_at_once)
        assert 1 < int(count) < 2000, count  # some taken at once, then a wait
        assert not (tmp_path / "unawaited").exists()  # still waiting: nothing read
        body = _read_response(client)  # reading lets the wait end
    expected = b"".join(b"%03d," % i for i in range(20)) + b"x" * 65536 * int(count) + b"end"
    assert body == expected, (body[:120], len(body), len(expected))  # whole, in order
    deadline = time.monotonic() + 15
    while not (tmp_path / "unawaited").exists():
        assert time.monotonic() < deadline, "the wait never ended"
        time.sleep(0.05)


def test_granian_keeps_the_scope_and_serves_on_once_it_is_emptied(tmp_path):
    """`release_scope`: Granian holds the scope it built for the whole request
    (so emptying it is what frees its contents), and reads nothing of it once
    the app runs: a streamed response whose scope was emptied at once arrives
    whole, and the kept-alive connection serves the next request."""
    import time

    with _granian_client(tmp_path) as client:
        for path in ("/first", "/second"):  # one connection, kept alive
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {'c' * 500}\r\n\r\n".encode())
            assert _read_response(client) == b"one two three", path
            out = tmp_path / path.strip("/")
            deadline = time.monotonic() + 15
            while not out.exists():
                assert time.monotonic() < deadline, f"{path}: the app never finished"
                time.sleep(0.05)
            refs, released, left = out.read_text().split()
            # 2 would be the app's own references only: Granian holds a third.
            assert int(refs) >= 3 and released == "True" and left == "0", (path, refs, released, left)
