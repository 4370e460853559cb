"""Live pages: community events pushed into open browser tabs.

A page becomes live by mixing `LiveState` into its state, calling
`live_start` from its `on_load`, and overriding the handlers it cares about::

    class MyState(LiveState, rx.State):
        titles: list[str] = []

        @_hook
    def on_story_published(self, event: StoryPublished):
            self.titles.insert(0, event.title)
            return rx.toast(f"New story: {event.title}")

    @rx.page(route="/mine", on_load=MyState.live_start)
    def mine():
        return rx.vstack(live_indicator(MyState), rx.foreach(MyState.titles, rx.text))

Each `on_<channel>` handler (`on_story_published`, `on_story_updated`,
`on_story_deleted`, `on_post_created`, `on_post_updated`, `on_post_deleted`)
receives the typed event and runs like any Reflex event handler: change vars,
return `rx.toast(...)`. `live_reload` runs when the page must refetch from the
database (on resume after a pause, and while polling when live updates are
unavailable).

Under it, `TabHub` (one per backend process) takes every event from the
process's fan-out subscription and hands it to the tabs whose websocket this
process serves, as an ordinary Reflex event, so each tab's server-side state
always matches what its browser shows. A tab that reconnects replays what it
missed from the Redis stream, and every handler sees each event id once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import reflex as rx
from reflex.event import Event

from fictures import live_feed, metrics
from fictures.events import service
from fictures.events.schema import (
    PUBLIC_CHANNELS,
    CommunityEvent,
    MalformedEvent,
    PostCreated,
    PostDeleted,
    PostUpdated,
    StoryDeleted,
    StoryPublished,
    StoryUpdated,
    parse_event,
)
from fictures.server_limits import tune_gc
from fictures.settings import settings

logger = logging.getLogger(__name__)

# How many missed events a reconnecting tab replays before it just reloads.
_MAX_CATCH_UP = 500


_HOOKS = (
    *("on_" + channel.replace(":", "_") for channel in PUBLIC_CHANNELS),
    "live_reload",
)


def _hook(fn: Any) -> Any:
    """Keep a page's override a plain method: Reflex would otherwise expose it to
    the browser as an event handler that any client could call with a forged event."""
    fn.__override_base_method__ = True
    return fn


class LiveHooks:
    """The handlers a live page overrides. A plain class, so Reflex never exposes
    them to the browser as event handlers (overrides are kept plain too)."""

    def on_story_published(self, event: StoryPublished) -> Any:
        """A story was published."""

    def on_story_updated(self, event: StoryUpdated) -> Any:
        """A published story changed, or was unpublished (`event.status == "draft"`)."""

    def on_story_deleted(self, event: StoryDeleted) -> Any:
        """A published story was deleted."""

    def on_post_created(self, event: PostCreated) -> Any:
        """A community post was written."""

    def on_post_updated(self, event: PostUpdated) -> Any:
        """A community post was edited."""

    def on_post_deleted(self, event: PostDeleted) -> Any:
        """A community post was deleted."""

    def live_reload(self) -> Any:
        """Refetch the page's data from the database (resume, polling)."""


class LiveState(LiveHooks, rx.State, mixin=True):
    """Mix into a page's state to receive community events live. See the module doc."""

    def __init_subclass__(cls, **kwargs: Any):
        for name in _HOOKS:
            if (fn := cls.__dict__.get(name)) is not None and hasattr(fn, "__code__"):
                _hook(fn)
        super().__init_subclass__(**kwargs)

    # Pages that show the broadcast community feed (fictures.live_feed) join its room.
    live_room: ClassVar[str | None] = None

    # "1" while the reader paused live updates; remembered by the browser.
    live_paused: str = rx.LocalStorage("", name="fictures_live_paused", sync=True)
    # True while this tab is registered with the server and its Redis subscription is healthy.
    live_ok: bool = False
    # The newest event id this tab has applied (-1: not started): reconnects resume after it.
    live_last_id: int = -1

    # -- what the page's components read ------------------------------------------

    @rx.var
    def live_status(self) -> str:
        """"live", "paused" or "reconnecting" (the browser adds "offline")."""
        if self.live_paused == "1":
            return "paused"
        return "live" if self.live_ok else "reconnecting"

    # -- events wired by the page -------------------------------------------------

    @rx.event
    async def live_start(self):
        """Register this tab for live events; call it from the page's `on_load`.

        After a reconnect (on_load runs again with the new socket) it first replays
        the events this tab missed, so toasts, counts and badges include them.
        """
        hub = TabHub.current()
        token = self.router.session.client_token
        hub.register(token, type(self), dict(self.router_data))
        if self.live_paused != "1":
            await hub.join(self.router.session.session_id, self.live_room)
        self.live_ok = hub.healthy
        if self.live_last_id < 0 or self.live_paused == "1":
            # A fresh page load: the page just read the DB; start from now.
            self.live_last_id = hub.last_id
            return None
        missed = await hub.history_after(self.live_last_id)
        if missed is None:
            self.live_last_id = hub.last_id
            return self.live_reload()
        results = [self._apply(event) for event in missed]
        return [r for r in results if r is not None] or None

    @rx.event
    def live_receive(self, data: dict):
        """One event from the hub (an internal event: pages override `on_*` instead)."""
        if self.live_paused == "1":
            return None
        try:
            event = parse_event(data["channel"], data["json"])
        except (KeyError, MalformedEvent):
            logger.warning("Dropped a malformed live event for a tab: %r", data)
            return None
        return self._apply(event)

    @rx.event
    def live_set_ok(self, ok: bool):
        """The server's subscription became healthy or not (internal)."""
        self.live_ok = ok

    @rx.event
    def live_poll(self, _value: Any = None):
        """Called every `poll_seconds` while live updates are unavailable."""
        if self.live_paused != "1":
            return self.live_reload()
        return None

    @rx.event
    async def live_toggle_pause(self):
        """Pause or resume live updates (remembered for this browser)."""
        hub, sid = TabHub.current(), self.router.session.session_id
        if self.live_paused == "1":
            self.live_paused = ""
            self.live_last_id = hub.last_id
            await hub.join(sid, self.live_room)
            return self.live_reload()
        self.live_paused = "1"
        await hub.leave(sid, self.live_room)
        return None

    def _apply(self, event: CommunityEvent) -> Any:
        if event.id is None or event.id <= self.live_last_id:
            return None  # already applied (a replay overlapping live delivery)
        self.live_last_id = event.id
        if event.channel not in PUBLIC_CHANNELS:
            return None
        handler = getattr(self, "on_" + event.channel.replace(":", "_"))
        return handler(event)


@dataclass
class _Tab:
    handler: str  # the full name of the state's `live_receive`
    status_handler: str
    router_data: dict[str, Any]
    channels: frozenset[str]  # the channels whose handler the page overrides


@functools.cache
def _handled_channels(state_cls: type[LiveState]) -> frozenset[str]:
    """The channels whose handler the page overrides: only those cost it a per-tab event."""
    names = {ch: "on_" + ch.replace(":", "_") for ch in PUBLIC_CHANNELS}
    return frozenset(
        ch for ch, name in names.items()
        if getattr(state_cls, name) is not getattr(LiveHooks, name)
    )


class TabHub:
    """This process's live tabs, fed from the process's one fan-out subscription."""

    _current: TabHub | None = None

    def __init__(self, app: rx.App):
        self.app = app
        self.tabs: dict[str, _Tab] = {}
        # channel -> tokens of the tabs whose page handles it: an event costs a
        # loop over those tabs only (none, for the broadcast community feed).
        self.handling: dict[str, set[str]] = {channel: set() for channel in PUBLIC_CHANNELS}
        self.fanout = service.fanout()

    @classmethod
    def current(cls) -> TabHub:
        if cls._current is None:
            raise RuntimeError("TabHub is not running (the app's lifespan has not started)")
        return cls._current

    @property
    def healthy(self) -> bool:
        return self.fanout.healthy

    @property
    def last_id(self) -> int:
        return self.fanout.last_id

    def register(self, token: str, state_cls: type[LiveState], router_data: dict) -> None:
        name = state_cls.get_full_name()
        known = token in self.tabs
        channels = _handled_channels(state_cls)
        self.tabs[token] = _Tab(f"{name}.live_receive", f"{name}.live_set_ok", router_data, channels)
        for channel, tokens in self.handling.items():
            if channel in channels:
                tokens.add(token)
            else:
                tokens.discard(token)  # the tab moved to a page that does not handle it
        metrics.LIVE_TABS.set(len(self.tabs))
        if not known:
            logger.info("Live tab connected (%s); %d active", token[:8], len(self.tabs))

    def unregister(self, token: str) -> None:
        if (tab := self.tabs.pop(token, None)) is not None:
            for channel in tab.channels:
                self.handling[channel].discard(token)
            metrics.LIVE_TABS.set(len(self.tabs))
            logger.info("Live tab left (%s); %d active", token[:8], len(self.tabs))

    async def history_after(self, last_id: int) -> list[CommunityEvent] | None:
        """Events after `last_id` from the Redis stream, or None if they can't all be had."""
        bus = self.fanout.bus
        try:
            if not await bus.covers(last_id):
                return None
            stored = await bus.read_after(last_id, limit=_MAX_CATCH_UP + 1)
        except Exception as exc:  # noqa: BLE001 (any failure: the tab reloads instead)
            logger.warning("Cannot read event history for a reconnecting tab: %s", exc)
            return None
        if len(stored) > _MAX_CATCH_UP:
            return None
        events = []
        for item in stored:
            with contextlib.suppress(MalformedEvent):
                events.append(parse_event(item.channel, item.data))
        return events

    async def _send(self, token: str, handler: str, payload: dict, tab: _Tab) -> None:
        await self.app.event_processor.enqueue(
            token, Event(name=handler, router_data=dict(tab.router_data), payload=payload)
        )

    async def join(self, sid: str, room: str | None) -> None:
        if room and self.app.event_namespace is not None:
            await self.app.event_namespace.enter_room(sid, room)

    async def leave(self, sid: str, room: str | None) -> None:
        if room and self.app.event_namespace is not None:
            await self.app.event_namespace.leave_room(sid, room)

    def room_size(self, room: str) -> int:
        namespace = self.app.event_namespace
        if namespace is None or self.app.sio is None:
            return 0
        return len(self.app.sio.manager.rooms.get(namespace.namespace, {}).get(room, ()))

    async def broadcast(self, room: str, update: Any) -> int:
        """One frame, encoded once, written to every socket in `room` on this process."""
        namespace = self.app.event_namespace
        if namespace is None:
            return 0
        count = self.room_size(room)
        if count:
            await namespace.emit(str(rx.constants.SocketEvent.EVENT), update, to=room)
        return count

    async def deliver(self, event: CommunityEvent) -> int:
        """Hand `event` to every live tab this process serves: the broadcast
        feed's room in one frame, then the pages with a handler of their own."""
        if not event.public:
            return 0  # private events never reach tabs; the SSE API serves their owners
        changed = await live_feed.apply(event)
        broadcast = 0
        if changed:
            broadcast = await self.broadcast(live_feed.ROOM, live_feed.frame(changed))
        connected = self._connected()
        payload = {"data": {"channel": event.channel, "json": event.to_json()}}
        handled = 0
        for token in list(self.handling[event.channel]):
            if token not in connected:
                self.unregister(token)
                continue
            tab = self.tabs[token]
            await self._send(token, tab.handler, payload, tab)
            handled += 1
        metrics.EVENTS_DELIVERED.labels(event.channel, "tab").inc(broadcast + handled)
        logger.info(
            "Fanned out %s #%s to %d tabs (%d in one broadcast frame, %d by handler)",
            event.channel, event.id, broadcast + handled, broadcast, handled,
        )
        return broadcast + handled

    async def warm_feed(self) -> None:
        """Fill the broadcast feed from the stream, so a process that starts late
        shows readers the same recent arrivals as the others."""
        try:
            recent = await self.fanout.bus.read_last(200)
        except Exception as exc:  # noqa: BLE001 (the feed simply starts empty)
            logger.warning("Could not warm the live feed from history: %s", exc)
            return
        for item in recent:
            with contextlib.suppress(MalformedEvent):
                await live_feed.apply(parse_event(item.channel, item.data))

    def _connected(self) -> Mapping[str, str]:
        return self.app.event_namespace.token_to_sid if self.app.event_namespace else {}

    async def _broadcast_status(self, ok: bool) -> None:
        connected = self._connected()
        for token, tab in list(self.tabs.items()):
            if token not in connected:
                self.unregister(token)  # its disconnect was missed; a sweep as good as any
                continue
            await self._send(token, tab.status_handler, {"ok": ok}, tab)

    def _wrap_disconnect(self) -> None:
        namespace = self.app.event_namespace
        if namespace is None:
            return
        original = namespace.on_disconnect

        def on_disconnect(sid: str):
            token = namespace.sid_to_token.get(sid)
            result = original(sid)
            if token is not None:
                self.unregister(token)
            return result

        namespace.on_disconnect = on_disconnect

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.fanout.on_health_change(
            lambda ok: loop.create_task(self._broadcast_status(ok))
        )
        async with self.fanout.subscribe(maxsize=100_000) as sub:
            await self.warm_feed()
            while (event := await sub.get()) is not None:
                try:
                    await self.deliver(event)
                except Exception:
                    logger.exception("Delivering %s #%s to tabs failed", event.channel, event.id)
            logger.error("Live tab feed overflowed; tabs will catch up on reconnect")


@contextlib.asynccontextmanager
async def lifespan(app: rx.App) -> AsyncIterator[None]:
    """Runs the process's TabHub (registered on the app after the event service)."""
    tune_gc()  # this worker is about to hold many tabs: see fictures.server_limits
    hub = TabHub(app)
    hub._wrap_disconnect()
    TabHub._current = hub
    task = asyncio.create_task(hub.run(), name="fictures-live-tabs")
    logger.info("Live tab hub started (poll fallback every %ss)", settings.poll_seconds)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        TabHub._current = None
