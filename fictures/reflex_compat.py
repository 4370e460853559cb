"""Every use of Reflex, python-socketio and Granian internals, in one place.

Fictures relies on a few things these libraries do not document as public API:
how Reflex decides which methods are browser-callable, how it decodes var tags
in strings, its Socket.IO namespace and rooms, its event registry, the engine
cache, Granian's server constructor and how a Granian worker takes its stop
signal. Each is wrapped here, and
tests/test_reflex_compat.py checks every contract against the installed
versions: an upgrade that changes one fails a test instead of silently
changing behaviour (a hook becoming browser-callable, a limit not applied).

Nothing outside this module imports from `reflex_base`, `reflex_components_*`,
`reflex.state`/`reflex.app` internals, `socketio` or `granian`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import reflex as rx
from engineio import packet as engine_packet
from engineio.packet import Packet as EnginePacket
from reflex.state import StateUpdate
from reflex_base.constants.base import REFLEX_VAR_OPENING_TAG
from reflex_base.constants.state import FIELD_MARKER
from reflex_base.event import Event, EventSpec
from reflex_base.registry import RegistrationContext
from reflex_base.utils.form import FORM_DATA_ENTRIES_KEY
from reflex_base.vars.sequence import LiteralStringVar
from reflex_components_core.core.banner import has_connection_errors as _has_connection_errors
from reflex_components_sonner.toast import ToastAction, toast_ref
from socketio import packet as socket_packet

from fictures.deadline import MovingDeadline

logger = logging.getLogger(__name__)

__all__ = [
    "FORM_DATA_ENTRIES_KEY",
    "REFLEX_VAR_OPENING_TAG",
    "EventSpec",
    "ToastAction",
    "connection_errors",
    "toast_ref",
]


# ------------------------------------------------------------------ text


def literal_text(value: str) -> rx.Var[str]:
    """A string Var holding `value` exactly, for `rx.*` calls made at run time.

    `rx.toast("...")` and every other component or event built from a Python
    string goes through `LiteralStringVar.create`, which decodes Reflex's
    internal var tags (`<reflex.Var>N</reflex.Var>`) found in the text: with a
    non-numeric body it loops forever (the whole worker freezes), with a number
    it splices that global var's JavaScript into the page. User text must never
    be decoded, so this builds the literal directly: a JSON string literal,
    which is also a valid JavaScript one.
    """
    text = str(value)
    return LiteralStringVar(_js_expr=json.dumps(text), _var_type=str, _var_data=None, _var_value=text)


def connection_errors() -> rx.Var[bool]:
    """True in the browser while its websocket is down (Reflex's own flag)."""
    return _has_connection_errors


# ------------------------------------------------------------------ browser-callable handlers


def keep_plain(fn: Any) -> Any:
    """Keep a public method of a State class a plain method, not an event handler
    a browser could call (Reflex skips methods carrying this marker)."""
    fn.__override_base_method__ = True
    return fn


def is_plain(state_cls: type[rx.State], name: str) -> bool:
    """Whether `name` on `state_cls` stayed a plain method (not browser-callable)."""
    return name not in state_cls.event_handlers and not isinstance(
        getattr(state_cls, name, None), rx.event.EventHandler
    )


def all_states(root: type[rx.State] = rx.State) -> list[type[rx.State]]:
    """Every State class in the app's tree, root first."""
    found, todo = [], [root]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(sorted(cls.get_substates(), key=lambda c: c.get_full_name()))
    return found


def browser_callable() -> set[str]:
    """The full names of every event handler a browser can send (`state.path.method`)."""
    return {
        f"{cls.get_full_name()}.{name}" for cls in all_states() for name in cls.event_handlers
    }


def handler_function(event_name: str) -> Callable[..., Any] | None:
    """The Python function behind a registered event name, or None if unknown."""
    registered = RegistrationContext.get().event_handlers.get(event_name)
    return None if registered is None else registered.handler.fn


def client_storage_fields(state_cls: type[rx.State]) -> list[str]:
    """The vars of `state_cls` (its own, not inherited) kept in the browser's storage."""
    return [name for name in state_cls.base_vars if state_cls._is_client_storage(name)]


def client_storage_type(full_var_name: str) -> type | None:
    """For `update_vars_internal` keys (`state.path.var`): the var's Python type
    if it is a client storage var, else None."""
    state_name, _, var_name = full_var_name.rpartition(".")
    var_name = var_name.removesuffix(FIELD_MARKER)
    try:
        state_cls = rx.State.get_class_substate(state_name)
    except Exception:  # noqa: BLE001 (any unknown path: not a storage var)
        return None
    if not state_cls._is_client_storage(var_name):
        return None
    return state_cls.get_fields()[var_name].type_


# ------------------------------------------------------------------ the websocket


def guard_socket_events(app: rx.App, accept: Callable[[Any], str | None]) -> None:
    """Check each frame a browser sends before Reflex reads it.

    `accept(data)` returns None to let the frame through, or the reason to
    drop it (logged as a warning, never raised: Reflex would log a traceback).
    """
    namespace = app.event_namespace
    if namespace is None:
        raise RuntimeError("the app has no event namespace yet")
    original = namespace.on_event

    @functools.wraps(original)
    async def on_event(sid: str, data: Any):
        if (reason := accept(data)) is not None:
            logger.warning("Dropped a websocket event from %s: %s", sid[:8], reason)
            return None
        return await original(sid, data)

    namespace.on_event = on_event


def on_tab_disconnect(app: rx.App, callback: Callable[[str], None]) -> None:
    """Call `callback(client_token)` when a tab's websocket on this process closes."""
    namespace = app.event_namespace
    if namespace is None:
        raise RuntimeError("the app has no event namespace yet")
    original = namespace.on_disconnect

    @functools.wraps(original)
    def on_disconnect(sid: str):
        token = namespace.sid_to_token.get(sid)
        result = original(sid)
        if token is not None:
            callback(token)
        return result

    namespace.on_disconnect = on_disconnect


def restrict_socket_origins(app: rx.App, allowed: Callable[[str | None, Mapping[str, Any]], bool]) -> None:
    """Let only origins `allowed(origin, environ)` accepts open a websocket.

    Reflex hands python-engineio its `cors_allowed_origins` list, and an empty
    list switches engineio's origin check off altogether; a callable keeps it on.
    """
    if app.sio is None:
        raise RuntimeError("the app has no Socket.IO server yet")
    app.sio.eio.cors_allowed_origins = allowed


def connected_tokens(app: rx.App) -> Mapping[str, str]:
    """client token -> Socket.IO sid, for the tabs connected to this process."""
    namespace = app.event_namespace
    return namespace.token_to_sid if namespace is not None else {}


async def enter_room(app: rx.App, sid: str, room: str) -> None:
    if app.event_namespace is not None:
        await app.event_namespace.enter_room(sid, room)


async def leave_room(app: rx.App, sid: str, room: str) -> None:
    if app.event_namespace is not None:
        await app.event_namespace.leave_room(sid, room)


def token_manager_instance_id(app: rx.App) -> str | None:
    """This process's id in Reflex's socket records in Redis (the `instance_id`
    of each tab's record), or None when tab state is not shared through Redis."""
    from reflex.utils.token_manager import RedisTokenManager

    namespace = app.event_namespace
    manager = namespace._token_manager if namespace is not None else None
    return manager.instance_id if isinstance(manager, RedisTokenManager) else None


# Delete a key only if it still holds what was read (another process may have
# linked the token meanwhile).
_DELETE_IF_UNCHANGED = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def keep_tokens_of_dead_processes(
    app: rx.App, alive: Callable[[str], Awaitable[bool]], *, grace: float = 2.0
) -> None:
    """A tab reconnecting with a token whose socket record in Redis belongs to
    another process keeps its token (and so its state) once that process is
    gone (`alive(instance_id)` is false: the stale record is deleted) or has
    deleted the record itself, whichever comes first within `grace` seconds.

    Reflex's RedisTokenManager.link_token_to_sid hands a NEW token (an empty
    state) to any tab whose token still has a record, taking it for a
    duplicated browser tab; records are kept for `redis_token_expiration` (1 h)
    and only a clean disconnect deletes one (fictures.liveness explains why). A
    process that is stopping closes its sockets before it exits (or before its
    disconnect handlers delete the records): its tabs reconnect elsewhere at
    once, and wait here for it. A record whose process is still alive after
    `grace` is a duplicated tab's, which then gets its new token, as before.
    """
    import pickle

    from reflex.utils.token_manager import RedisTokenManager

    namespace = app.event_namespace
    if namespace is None:
        raise RuntimeError("the app has no event namespace yet")
    manager = namespace._token_manager
    if not isinstance(manager, RedisTokenManager):
        return
    original = getattr(manager.link_token_to_sid, "__wrapped__", manager.link_token_to_sid)

    @functools.wraps(original)
    async def link_token_to_sid(token: str, sid: str) -> str | None:
        key = manager._get_redis_key(token)
        deadline = time.monotonic() + grace
        try:
            # Reflex's own record (it unpickles these itself), read back from its Redis.
            while raw := await manager.redis.get(key):
                owner = pickle.loads(raw).instance_id
                if owner == manager.instance_id:
                    break
                if not await alive(owner):
                    if await manager.redis.eval(_DELETE_IF_UNCHANGED, 1, key, raw):
                        logger.info("Tab %s reconnected after its process (%s) stopped: it keeps its "
                                    "token and state", token[:8], owner[:8])
                    break
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.1)
        except Exception as exc:  # noqa: BLE001 (Redis trouble: Reflex decides as before)
            logger.warning("Could not check the previous process of a reconnecting tab: %s", exc)
        return await original(token, sid)

    manager.link_token_to_sid = link_token_to_sid


def set_ping_interval(app: rx.App, seconds: float) -> None:
    """Engine.IO pings every socket every `seconds` from now on (Reflex's default:
    25 s, from REFLEX_SOCKET_INTERVAL). Browsers learn it when they connect
    (`pingInterval` in the open packet); only the ping interval changes, not how
    long the server waits for an answer before closing (REFLEX_SOCKET_TIMEOUT)."""
    if app.sio is None:
        raise RuntimeError("the app has no Socket.IO server yet")
    app.sio.eio.ping_interval = seconds


def unanswered_pings(app: rx.App, tokens: Iterable[str]) -> dict[str, float | None]:
    """For each tab: how long its socket has left the server's latest ping
    unanswered (0.0 if it answered), or None if it has no open socket on this process.

    python-engineio sets a socket's `last_ping` when it sends a ping and clears
    it when the pong arrives; a connection that died without closing (a dead
    network) keeps it set until the server's ping timeout closes the socket.
    Batched: Reflex rebuilds its token map on every read."""
    namespace = app.event_namespace
    if namespace is None or app.sio is None:
        return dict.fromkeys(tokens)
    token_to_sid, now = namespace.token_to_sid, time.time()
    found: dict[str, float | None] = {}
    for token in tokens:
        sid = token_to_sid.get(token)
        eio_sid = app.sio.manager.eio_sid_from_sid(sid, namespace.namespace) if sid else None
        sock = app.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        if sock is None or sock.closed or sock.closing:
            found[token] = None
        else:
            found[token] = 0.0 if not sock.last_ping else max(0.0, now - sock.last_ping)
    return found


def room_size(app: rx.App, room: str) -> int:
    """Sockets of this process in `room` (O(1): python-socketio's room dict)."""
    namespace = app.event_namespace
    if namespace is None or app.sio is None:
        return 0
    return len(app.sio.manager.rooms.get(namespace.namespace, {}).get(room, ()))


def values_only_when_asked(state_classes: Iterable[type[rx.State]]) -> None:
    """Stop Reflex recomputing these states' uncached vars for every event of every tab.

    A var with `cache=False` is "always dirty": Reflex recomputes it for each
    event a tab sends (and encodes it to compare with what the browser has),
    and loads its state for that. Room values (fictures.rooms) reach the browser
    by the hydrate (which reads every var) and by broadcast frames, and a tab
    entering a room asks for them once (`send_values`), so per event they are
    pure cost. Applied once the app's pages are registered."""
    classes = set(state_classes)
    for state_cls in classes:
        state_cls._always_dirty_computed_vars = set()
    # Each ancestor keeps only the substates that still lead to an always-dirty var.
    for state_cls in classes:
        name, parent = state_cls.get_name(), state_cls.get_parent_state()
        while parent is not None:
            child = parent.get_class_substate(name)
            if child._always_dirty_computed_vars or child._always_dirty_substates:
                break
            parent._always_dirty_substates.discard(name)
            name, parent = parent.get_name(), parent.get_parent_state()


def send_values(state: rx.State) -> None:
    """Put every var of `state` in the delta of the event being processed."""
    state.dirty_vars.update(name for name in state.computed_vars if name in state._frontend_var_names)
    state._mark_ancestors_dirty()


def always_dirty(state_cls: type[rx.State]) -> set[str]:
    """The uncached vars Reflex recomputes for every event (for the contract test)."""
    return set(state_cls._always_dirty_computed_vars)


def always_dirty_substates(state_cls: type[rx.State]) -> set[str]:
    return set(state_cls._always_dirty_substates)


def delta_frame(state_cls: type[rx.State], values: Mapping[str, Any]) -> StateUpdate:
    """A Reflex update setting `values` (var name -> value) of `state_cls` in the browser."""
    delta = {f"{name}{FIELD_MARKER}": value for name, value in values.items()}
    return StateUpdate(delta={state_cls.get_full_name(): delta})


class _Preencoded(EnginePacket):
    """An Engine.IO MESSAGE packet whose wire text was built once, for every socket."""

    def __init__(self, text: str):
        super().__init__(engine_packet.MESSAGE, text)
        self._wire = str(engine_packet.MESSAGE) + text

    def encode(self, b64: bool = False) -> str:
        return self._wire


class RoomSend(NamedTuple):
    """What `emit_to_room` did: sockets it went to, and how many of them had it
    handed to the server at once (the rest through their send queue)."""

    sockets: int
    direct: int


async def emit_to_room(app: rx.App, room: str, update: StateUpdate) -> RoomSend:
    """One frame, encoded once, put on the send queue of every socket in `room`.

    python-socketio's room emit creates one task per socket that awaits its way
    to the same `queue.put` (~45 µs a socket); here the packet goes straight
    onto each socket's queue in one pass (~1 µs), and each socket's own writer
    task sends it, or, when nothing can be ahead of it, it goes to the server at
    once (`_write_now`). A socket's queue is FIFO, so the frame follows everything
    already queued for that tab (its hydrate snapshot is queued before its page
    joins a room: `hydrate_and_load` awaits its emit before `on_load` runs).
    A socket whose client stopped answering pings takes engineio's own `send`,
    which closes it."""
    namespace, sio = app.event_namespace, app.sio
    if namespace is None or sio is None:
        return RoomSend(0, 0)
    members = sio.manager.rooms.get(namespace.namespace, {}).get(room)
    if not members:
        return RoomSend(0, 0)
    encoded = sio.packet_class(
        socket_packet.EVENT, namespace=namespace.namespace,
        data=[str(rx.constants.SocketEvent.EVENT), update],
    ).encode()
    if not isinstance(encoded, str):  # binary attachments: python-socketio's own path
        await namespace.emit(str(rx.constants.SocketEvent.EVENT), update, to=room)
        return RoomSend(len(members), 0)
    pkt = _Preencoded(encoded)
    message = {"type": "websocket.send", "bytes": None, "text": pkt.encode()}
    sockets, timeout, now = sio.eio.sockets, sio.eio.ping_timeout, time.time()
    stale = []
    sent = direct = 0
    for eio_sid in list(members.values()):
        sock = sockets.get(eio_sid)
        if sock is None or sock.closed:
            continue
        if sock.last_ping and now - sock.last_ping > timeout:
            stale.append(sock)
            continue
        if _write_now(sock, message):
            direct += 1
        else:
            sock.queue.put_nowait(pkt)
        sent += 1
    for sock in stale:
        await sock.send(pkt)
    return RoomSend(sent, direct)


# The ASGI scope key under which the server's own `send` of a websocket is kept
# (set by fictures.fast_paths, ahead of every middleware; read at the upgrade).
RAW_SEND = "fictures.raw_send"


def release_scope(scope: dict[str, Any], send: Callable[..., Any]) -> bool:
    """Under Granian, let go of what a long-lived HTTP request's ASGI scope holds
    (its headers, query, server state) for the rest of the request; True if it did.

    Granian keeps the scope it built for as long as the request runs (its
    watcher, which handed the scope to the app, holds it), so dropping the
    app's own references frees nothing: for an SSE stream that stays open for
    hours that was ~1.5 KiB each, more with a browser's cookies and headers.
    Emptying the dict frees its contents; Granian reads nothing of the scope
    once the app runs. Other servers may (uvicorn's access log reads the client
    and path when the response starts): there the scope is left alone. Only
    for a request whose app reads nothing of the scope afterwards
    (fictures.fast_paths, the event stream)."""
    if not is_granian_send(send):
        return False
    scope.clear()
    return True


def is_granian_send(send: Callable[..., Any]) -> bool:
    """Whether `send` is Granian's own (no middleware's wrapper around it)."""
    return type(getattr(send, "__self__", None)).__module__ == "granian._granian"


def written_at_once(sent: Any) -> bool:
    """Whether what Granian's `send` returned says the chunk is queued and there
    is room for more: its empty awaitable (nothing to await). When its queue for
    the connection is full (for a moment, or for good when the client reads
    nothing) it returns a pending future instead, done once the chunk is queued:
    await that before writing anything more, or a later chunk can overtake it."""
    return type(sent).__name__ == "PyEmptyAwaitable"


def _write_now(sock: Any, message: dict[str, Any]) -> bool:
    """Hand `message` to the server for this websocket now, if nothing can be
    ahead of it: its writer task is parked on an empty queue (it is not halfway
    through a send) and the previous frame written this way has gone out.

    That skips the writer task's wake-up and the middleware's `send` wrappers
    (Granian's `send` takes the frame at once and answers with a future): about
    a tenth of a frame's cost. The writer awaits that future before it sends
    anything else (`_after_direct_write`), so the socket's frames keep their
    order. False: the frame must go through the queue."""
    send = getattr(sock, "fx_send", None)  # None until `lighter_socket_writer` is installed
    if send is None or not sock.fx_parked or sock.upgrading or not sock.queue.empty():
        return False
    if (inflight := sock.fx_inflight) is not None and not inflight.done():
        return False
    try:
        result = send(message)
    except Exception:  # a server may refuse at once (connection gone): the queue's writer finds out
        logger.debug("A direct websocket write was refused", exc_info=True)
        return False
    sock.fx_inflight = result if asyncio.isfuture(result) else asyncio.ensure_future(result)
    return True


async def _after_direct_write(sock: Any) -> None:
    """Wait until the frame last written by `_write_now` has gone out."""
    inflight = sock.fx_inflight
    if inflight is None:
        return
    sock.fx_inflight = None
    try:
        await inflight
    except Exception:  # the connection is gone: the writer's own send will say so
        logger.debug("A direct websocket write failed", exc_info=True)


# python-engineio's own AsyncSocket.poll, once replaced (the contract test compares them).
_engineio_originals: dict[str, Any] = {}


def lighter_socket_writer() -> None:
    """Make python-engineio's per-socket writer wait for its next packet without
    a task, or a timer, per wait.

    Each websocket's writer task loops on `AsyncSocket.poll()`, which on Python
    3.11 waits with `asyncio.wait_for(queue.get(), ...)`: a new Task for every
    wake, that is for every frame every tab receives (a broadcast to 1,000 tabs
    made 1,000 of them). This `poll` is the same code waiting on the queue
    itself, with one timer per socket for the ping timeout that each wait moves
    (fictures.deadline; a timer made and cancelled per wait, as `asyncio.timeout`
    does, was a heap push and a cancel per frame per tab). The same packets, the same batching of
    what is queued, the same `QueueEmpty` on the ping timeout or a cancel. Idempotent."""
    from engineio import exceptions as engine_exceptions
    from engineio.async_socket import AsyncSocket

    if _engineio_originals:
        return
    _engineio_originals["poll"] = AsyncSocket.poll

    async def poll(self: Any) -> list[Any]:
        try:
            packets = [await _next_packet(self, self.server.ping_interval + self.server.ping_timeout)]
            self.queue.task_done()
            await _after_direct_write(self)
        except (TimeoutError, asyncio.CancelledError):
            raise engine_exceptions.QueueEmpty() from None
        if packets == [None]:
            return []
        while True:
            try:
                pkt = self.queue.get_nowait()
                self.queue.task_done()
                if pkt is None:
                    self.queue.put_nowait(None)
                    break
                packets.append(pkt)
            except asyncio.QueueEmpty:
                break
        return packets

    async def _upgrade_websocket(self: Any, environ: dict[str, Any]) -> Any:
        # The server's own send for this websocket, if the app was given it.
        self.fx_send = environ.get("asgi.scope", {}).get(RAW_SEND)
        return await _engineio_originals["_upgrade_websocket"](self, environ)

    _engineio_originals["_upgrade_websocket"] = AsyncSocket._upgrade_websocket
    AsyncSocket.fx_send = None
    AsyncSocket.fx_parked = False
    AsyncSocket.fx_inflight = None
    AsyncSocket.poll = poll
    AsyncSocket._upgrade_websocket = _upgrade_websocket


async def _next_packet(sock: Any, limit: float) -> Any:
    """The socket's next packet, waiting at most `limit` seconds (TimeoutError)."""
    queue = sock.queue
    if not queue.empty():
        return queue.get_nowait()
    task = asyncio.current_task()
    assert task is not None
    deadline = getattr(sock, "fx_deadline", None)
    if deadline is None:
        deadline = sock.fx_deadline = MovingDeadline()
    sock.fx_timed_out = False
    deadline.start(asyncio.get_running_loop(), limit, functools.partial(_ping_timeout, sock, task))
    sock.fx_parked = True  # nothing half-sent: a room frame may be written at once (_write_now)
    try:
        return await queue.get()
    except asyncio.CancelledError:
        if sock.fx_timed_out:
            task.uncancel()  # ours: as asyncio.timeout does, a timeout and not a cancel
            raise TimeoutError from None
        raise
    finally:
        sock.fx_parked = False
        deadline.stop()


def _ping_timeout(sock: Any, task: asyncio.Task[Any]) -> None:
    sock.fx_timed_out = True
    task.cancel()


async def run_in_tab(
    app: rx.App,
    token: str,
    state_cls: type[rx.State],
    apply: Callable[[Any], Any],
    router_data: dict[str, Any] | None = None,
) -> None:
    """Run `apply(state)` on one tab's `state_cls`, as an event handler would run,
    but from the server: no event name exists that a browser could send.

    The changed vars reach the browser as one delta; what `apply` returns
    (toasts, other events) follows: frontend events in one frame, backend
    events queued for the tab like a handler's chained events.
    """
    async with app.modify_state(rx.BaseStateToken(ident=token, cls=state_cls)) as root:
        result = apply(await root.get_state(state_cls))
    if inspect.isawaitable(result):
        raise TypeError("live hooks must be plain functions, not coroutines")
    await _route(app, token, result, router_data)


async def _route(app: rx.App, token: str, result: Any, router_data: dict[str, Any] | None) -> None:
    if result is None or app.event_namespace is None:
        return
    events = Event.from_event_type(result, router_data=router_data)
    frontend = [e for e in events if e.name.startswith("_")]
    if frontend:
        await app.event_namespace.emit_update(StateUpdate(events=frontend), token)
    for event in events:
        if not event.name.startswith("_"):
            await app.event_processor.enqueue(token, event)


def empty_update() -> StateUpdate:
    """What a middleware returns to stop an event without changing anything."""
    return StateUpdate()


# ------------------------------------------------------------------ processes


def forget_inherited_db_connections() -> None:
    """In a forked worker, drop the pooled DB connections of Reflex's engines
    without closing them for the parent (SQLAlchemy's recipe)."""
    from reflex import model

    for engine in list(model._ENGINE.values()):
        engine.dispose(close=False)


# What every Granian server constructed from now on gets (see _wrap_granian_server).
_granian: dict[str, int] = {}


def raise_granian_limits(limit: int) -> None:
    """Make every Granian server constructed from now on accept `limit`
    concurrent connections per worker (its `backlog` and `backpressure`).

    Reflex constructs Granian without `backpressure`, so each worker serves at
    most `backlog // workers` = 1024 concurrent requests (every open SSE stream
    and websocket is one): the 1,024th stream froze the server.
    """
    _granian["limit"] = limit
    _wrap_granian_server()


def serve_http1_only() -> None:
    """Make every Granian server constructed from now on speak HTTP/1.1 only.

    Granian's default (`http="auto"`) keeps, per connection, the machinery to
    switch to HTTP/2: 28 KiB per idle connection against 17 KiB in HTTP/1 mode
    (3,000 idle streams, benchmarks/RESULTS.md "issue10" sections). Nothing here
    uses HTTP/2: browsers only speak it over TLS, which nginx terminates (its
    upstream is HTTP/1.1), and websockets upgrade from HTTP/1.1. A server
    given an explicit `http` keeps it.
    """
    _granian["http1"] = 1
    _wrap_granian_server()


def bound_granian_worker_stop(seconds: int) -> None:
    """Make Granian's main process stop its workers promptly and quietly.

    - Every server constructed from now on kills a worker that has not exited
      `seconds` after the server asked it to stop (its `workers_kill_timeout`;
      Reflex sets none, and the server then waits for a stuck worker forever).
    - Its main loop waits in slices of 0.1 s: a signal the kernel hands to
      another thread of the process (a worker watcher) only leaves the Python
      handler pending, and an untimed `Event.wait()` in the main thread never
      returns to run it.
    - A worker that exits while the server is stopping, or within a second of
      its exit, before the main process got round to stopping it (it received
      the same SIGTERM from systemd), is not reported as an unexpected exit
      (an ERROR line, exit code 1) nor respawned.
    """
    _granian["kill_timeout"] = seconds
    _wrap_granian_server()
    _wrap_granian_watcher()


class _SlicedEvent(threading.Event):
    """A threading.Event whose untimed wait wakes every 0.1 s (see above), and
    whose set() may run inside its own set(): Granian's signal handler sets it,
    in the main thread, and a second signal arriving while the first handler is
    in set() (systemd's SIGTERM to the whole control group, then dev.py's SIGINT)
    ran a second set() that waited for the lock the first one held: the main
    process hung until it was killed. Hence a reentrant lock."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition(threading.RLock())

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            return super().wait(timeout)
        while not super().wait(0.1):
            pass
        return True


def _wrap_granian_watcher() -> None:
    from granian.server.common import AbstractWorker

    if getattr(AbstractWorker._watcher, "__fictures__", False):
        return
    original = AbstractWorker._watcher

    @functools.wraps(original)
    def _watcher(self: Any) -> None:
        self.inner.join()
        deadline = time.monotonic() + 1.0
        while not (self.interrupt_by_parent or self.parent.interrupt_signal) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.interrupt_by_parent or self.parent.interrupt_signal:
            return  # stopped with the server
        original(self)  # (its join returns at once) an unexpected exit: reported, respawned

    _watcher.__fictures__ = True
    AbstractWorker._watcher = _watcher


def _wrap_granian_server() -> None:
    from granian.server.common import AbstractServer

    if getattr(AbstractServer.__init__, "__fictures__", False):
        return
    original = AbstractServer.__init__
    params = inspect.signature(original).parameters
    if not {"backlog", "backpressure", "workers_kill_timeout", "http"} <= params.keys():
        raise RuntimeError(
            "Granian's server no longer takes backlog/backpressure/workers_kill_timeout/http: "
            "update reflex_compat"
        )

    @functools.wraps(original)
    def __init__(
        self, *args, backlog: int = 1024, backpressure: int | None = None,
        workers_kill_timeout: int | None = None, **kwargs,
    ):
        if _granian.get("http1") and "http" not in kwargs:
            from granian.constants import HTTPModes

            kwargs["http"] = HTTPModes.http1
        if (limit := _granian.get("limit")) is not None:
            backlog, backpressure = max(backlog, limit), backpressure or limit
        if workers_kill_timeout is None:
            workers_kill_timeout = _granian.get("kill_timeout")
        original(
            self, *args, backlog=backlog, backpressure=backpressure,
            workers_kill_timeout=workers_kill_timeout, **kwargs,
        )
        if "kill_timeout" in _granian and type(self.main_loop_interrupt) is threading.Event:
            self.main_loop_interrupt = _SlicedEvent()

    __init__.__fictures__ = True
    AbstractServer.__init__ = __init__


def serve_built_frontend() -> Path:
    """Have this backend serve the frontend a release step already built
    (`reflex export --frontend-only --no-zip`: `.web/build/client`); returns
    that directory.

    `reflex run --env prod --single-port` mounts the frontend only after building
    it itself, at every start (a minute on 2 cores, and the rebuild first deletes
    the files another instance of the same checkout is serving);
    `reflex run --env prod --backend-only` starts in seconds but serves no pages.
    Reflex's app mounts the built files when this (internal) switch is on as its
    ASGI app is built, in each worker after the app module was imported: call it
    while that module is imported.
    """
    from reflex.utils.prerequisites import get_web_dir
    from reflex_base.constants import Dirs
    from reflex_base.environment import environment

    static = get_web_dir() / Dirs.STATIC
    if not (static / "index.html").exists():
        raise RuntimeError(f"no built frontend in {static}: run the release step (scripts/dev.py migrate)")
    environment.REFLEX_MOUNT_FRONTEND_COMPILED_APP.set(True)
    return static


def granian_limits(server: Any) -> tuple[int, int]:
    """(backlog, backpressure) of a constructed Granian server (for tests)."""
    return server.backlog, server.backpressure


def granian_http_mode(server: Any) -> str:
    """The HTTP version(s) a constructed Granian server speaks ("1", "2" or "auto")."""
    return str(getattr(server.http, "value", server.http))


def granian_kill_timeout(server: Any) -> int | None:
    """The workers_kill_timeout of a constructed Granian server (for tests)."""
    return server.workers_kill_timeout


# Called with the signal number in a worker's event loop (see on_worker_stop_signal).
_stop_callbacks: list[Callable[[int], None]] = []


def on_worker_stop_signal(callback: Callable[[int], None]) -> None:
    """Call `callback(signum)` in a Granian worker's event loop as soon as the
    worker gets SIGTERM or SIGINT, right after Granian starts its own stop.

    Granian (2.x) gives each worker its stop signal with
    `granian._signals.set_loop_signals(loop)`, imported by name when the worker
    starts: the handler it installs on the loop sets a flag on which the server
    stops accepting connections and then waits for every open one to end; only
    after that does the ASGI lifespan shutdown run. SSE streams and websockets
    never end by themselves, so the app must act at the signal, not in its
    lifespan shutdown. This replaces that function (in the process that forks
    the workers, or in a spawned worker while it imports the app: both before
    the worker installs its handlers) by one that installs the same handler
    (setting Granian's flag on the first signal only) followed by the callbacks.
    Callbacks run once per signal received (Granian's main process forwards a
    stop too): make them idempotent.
    """
    from granian import _signals

    if callback not in _stop_callbacks:
        _stop_callbacks.append(callback)
    if getattr(_signals.set_loop_signals, "__fictures__", False):
        return
    original = _signals.set_loop_signals
    if list(inspect.signature(original).parameters) != ["loop"]:
        raise RuntimeError("granian._signals.set_loop_signals changed: update reflex_compat")

    @functools.wraps(original)
    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        stop = original(loop)
        stopping: list[int] = []

        def handler(signum: int, frame: Any = None) -> None:
            if not stopping:
                # Granian's own: stop accepting, then wait for connections to end.
                # Once only: its channel holds one message and the server reads one,
                # so a third set() (systemd's SIGTERM, the main process's, dev.py's
                # SIGINT) would block this thread, and with it the whole drain.
                stopping.append(signum)
                stop.set()
            for cb in list(_stop_callbacks):
                try:
                    cb(signum)
                except Exception:
                    logger.exception("A stop-signal callback failed")

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, handler, sig, None)
        except (NotImplementedError, RuntimeError):
            logger.warning("Cannot hook the worker's stop signal: it stops without draining")
        return stop

    set_loop_signals.__fictures__ = True
    _signals.set_loop_signals = set_loop_signals


def open_sockets(app: rx.App) -> int:
    """Websockets (tabs) open on this process."""
    return len(app.sio.eio.sockets) if app.sio is not None else 0


def iter_payload_values(payload: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """The event's arguments with a form's wire format (`[[name, value], ...]`
    under FORM_DATA_ENTRIES_KEY) turned into a plain dict; malformed entries
    are passed on unchanged (and then fail validation)."""
    for name, value in payload.items():
        if isinstance(value, dict) and FORM_DATA_ENTRIES_KEY in value:
            entries = value[FORM_DATA_ENTRIES_KEY]
            if isinstance(entries, list) and all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) for e in entries
            ):
                yield name, dict(entries)
                continue
        yield name, value

