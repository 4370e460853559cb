"""Live pages: community events pushed into open browser tabs.

A page becomes live by mixing `LiveState` into its state, calling
`live_start` from its `on_load`, and overriding the handlers it cares about::

    class MyState(LiveState, rx.State):
        titles: list[str] = []

        def on_story_published(self, event: StoryPublished):
            self.titles = [event.title, *self.titles]
            return toasts.info(f"New story: {event.title}")

    @rx.page(route="/mine", on_load=MyState.live_start)
    def mine():
        return rx.vstack(live_indicator(MyState), rx.foreach(MyState.titles, rx.text))

Each `on_<channel>` handler (`on_story_published`, `on_story_updated`,
`on_story_deleted`, `on_post_created`, `on_post_updated`, `on_post_deleted`)
receives the typed event and runs like any Reflex event handler: change vars,
return a toast (`fictures.toasts`: never `rx.toast` with user text). `live_reload`
runs when the page must refetch from the database (on resume after a pause, and
while polling when live updates are unavailable). These hooks are plain methods:
no browser can call them (only `live_start`, `live_poll` and `live_toggle_pause`
are events a page wires).

Under it, `TabHub` (one per backend process) takes every event from the
process's fan-out subscription and runs the hook in each tab whose websocket
this process serves, under that tab's state lock (`reflex_compat.run_in_tab`),
so each tab's server-side state always matches what its browser shows. A tab
that reconnects replays what it missed from the Redis stream, and every handler
sees each event id once. A page whose `on_load` reads all its data again right
after `live_start` (the community page) sets `live_loads_on_reconnect = True`
and skips that replay: its load is the catch-up.

Private events (one user's: their notifications) reach that user's tabs only,
on any page: every login check files the tab under its user (`set_user`), and
the handler a channel registered with `on_private` runs `run_in_tab` for that
user's tabs (`tabs_of_user`), so such an event costs O(that user's tabs).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import redis.exceptions
import reflex as rx

from fictures import analytics, live_feed, metrics, online, reflex_compat, rooms, toasts
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
from fictures.state import SessionState

logger = logging.getLogger(__name__)

# How many missed events a reconnecting tab replays before it just reloads.
_MAX_CATCH_UP = 500


_HOOKS = (
    *("on_" + channel.replace(":", "_") for channel in PUBLIC_CHANNELS),
    "live_reload",
)


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
                # Reflex would otherwise expose the override to the browser as an
                # event handler that any client could call with a forged event.
                reflex_compat.keep_plain(fn)
        super().__init_subclass__(**kwargs)
        if "live_rooms" in cls.get_fields():
            # A plain tuple would have become a state var sent to every browser.
            raise TypeError(f"{cls.__name__}: declare its rooms as `live_rooms = rooms.of(...)`")

    # The Room states this page shows (fictures.rooms): `live_start` joins their
    # rooms, so the page gets their values in one frame per change.
    live_rooms = rooms.of()
    # True when the page's `on_load` reads all its data again after `live_start`:
    # a reconnecting tab then needs no replay of what it missed (reading and
    # applying up to 500 events per tab, for a result the load replaces).
    live_loads_on_reconnect: ClassVar[bool] = False

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
        the events this tab missed, so counts and badges include them, with one
        summary toast for all of them (see `_catch_up`).
        """
        hub = TabHub.current()
        token = self.router.session.client_token
        session = await self.get_state(SessionState)
        user = (session.user_id, session.username) if session.user_id > 0 else None
        hub.register(token, type(self), dict(self.router_data), user)
        await hub.enter(token, self.router.session.session_id, self._live_room_names(),
                        receive=self.live_paused != "1")
        await rooms.refresh(self, self.live_rooms)
        self.live_ok = hub.healthy
        if self.live_last_id < 0 or self.live_paused == "1" or self.live_loads_on_reconnect:
            # A fresh page load, or a page whose load (next in its on_load) reads
            # everything again: start from now.
            self.live_last_id = hub.last_id
            return None
        missed = await hub.history_after(self.live_last_id)
        if missed is None:
            self.live_last_id = hub.last_id
            return self.live_reload()
        return self._catch_up(missed)

    def _catch_up(self, missed: list[CommunityEvent]) -> list | None:
        """Apply the events a reconnecting tab missed. Their toasts become one
        summary ("3 new posts while you were away"); a single one shows as is."""
        results: list = []
        toasted: list[tuple[CommunityEvent, toasts.Held]] = []
        for event in missed:
            with toasts.holding() as held:
                result = self._apply(event)
            results.extend(result if isinstance(result, list | tuple) else [result])
            toasted.extend((event, h) for h in held)
        if len(toasted) == 1:
            results.append(toasted[0][1].show())
        elif toasted:
            results.append(toasts.info(_away_summary([event for event, _ in toasted])))
        return [r for r in results if r is not None] or None

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
        token = self.router.session.client_token
        if self.live_paused == "1":
            self.live_paused = ""
            self.live_last_id = hub.last_id
            await hub.enter(token, sid, self._live_room_names(), receive=True)
            await rooms.refresh(self, self.live_rooms)  # what changed while paused
            return self.live_reload()
        self.live_paused = "1"
        await hub.enter(token, sid, self._live_room_names(), receive=False)
        return None

    def _live_room_names(self) -> list[str]:
        """The rooms this tab is in now (a page may override it, e.g. to stay out
        of a room until it knows what it shows)."""
        return [name for cls in self.live_rooms if (name := cls.room_name(self.router))]

    async def _live_follow_rooms(self) -> None:
        """Enter the rooms `_live_room_names` gives now (call it when they may have
        changed: the page loaded another item, or its item became hidden)."""
        hub = TabHub._current
        token = self.router.session.client_token
        if hub is None or token not in hub.tabs:
            return
        await hub.enter(token, self.router.session.session_id, self._live_room_names(),
                        receive=self.live_paused != "1")
        await rooms.refresh(self, self.live_rooms)

    # -- run by the TabHub (never browser-callable) --------------------------------

    def _live_receive(self, event: CommunityEvent) -> Any:
        if self.live_paused == "1":
            return None
        return self._apply(event)

    def _live_set_ok(self, ok: bool) -> None:
        self.live_ok = ok

    def _apply(self, event: CommunityEvent) -> Any:
        if event.id is None or event.id <= self.live_last_id:
            return None  # already applied (a replay overlapping live delivery)
        self.live_last_id = event.id
        if event.channel not in PUBLIC_CHANNELS:
            return None
        handler = getattr(self, "on_" + event.channel.replace(":", "_"))
        return handler(event)


# What a catch-up summary calls the events of a channel (others: "update(s)").
_AWAY_NOUNS = {
    "story:published": ("new story", "new stories"),
    "post:created": ("new post", "new posts"),
}


def _away_summary(events: list[CommunityEvent]) -> str:
    """ "3 new stories and 2 new posts while you were away" (one count per kind of event)."""
    counts: dict[tuple[str, str], int] = {}
    for event in events:
        noun = _AWAY_NOUNS.get(event.channel, ("update", "updates"))
        counts[noun] = counts.get(noun, 0) + 1
    parts = [f"{n} {one if n == 1 else many}" for (one, many), n in counts.items()]
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{joined} while you were away"


def _tab_level(active: int) -> int:
    """Per-tab lines are INFO for a few tabs; with thousands they would flood it."""
    return logging.INFO if active <= settings.tab_log_threshold else logging.DEBUG


RoomListener = Callable[[str, frozenset[str], frozenset[str]], Awaitable[None]]
PrivateHandler = Callable[["TabHub", CommunityEvent], Awaitable[int]]

# channel -> what the hub does with a private event of that channel (e.g. the
# bell's notifications: fictures.bell). No handler: the event reaches no tab.
_private_handlers: dict[str, PrivateHandler] = {}


def on_private(channel: str, handler: PrivateHandler) -> None:
    """Let `handler(hub, event)` deliver the private events of `channel` to their
    owner's tabs (typically with `hub.tabs_of_user` and `hub.run_in_tab`)."""
    _private_handlers[channel] = handler


@dataclass
class _Tab:
    state_cls: type[LiveState]
    router_data: dict[str, Any]
    channels: frozenset[str]  # the channels whose handler the page overrides
    user: tuple[int, str] | None = None  # (id, username) if logged in (presence names them)

    @property
    def path(self) -> str:
        return str(self.router_data.get("pathname", ""))


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
        # The newest unfinished hook run per tab: the next one waits for it, so
        # each tab sees events in order while a slow tab holds up no other.
        self._pending: dict[str, asyncio.Task] = {}
        # token -> the rooms of the page it is on, and those whose frames it
        # receives (none while paused).
        self.page_rooms: dict[str, frozenset[str]] = {}
        self.receiving: dict[str, frozenset[str]] = {}
        self._room_listeners: list[RoomListener] = []
        self._listener_tasks: set[asyncio.Task] = set()
        # Every tab of this process whose login was checked (any page, live or
        # not): user id -> tokens, and back. A private event for a user costs a
        # loop over that user's tabs only.
        self.users: dict[int, set[str]] = {}
        self.user_id_of: dict[str, int] = {}
        self.fanout = service.fanout()
        # Tab state kept in Redis (several workers, production) is out of reach
        # while Redis is: said once per outage, not once per tab.
        self._tab_state_unreachable = False

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

    def register(
        self,
        token: str,
        state_cls: type[LiveState],
        router_data: dict,
        user: tuple[int, str] | None = None,
    ) -> None:
        known = token in self.tabs
        before = self.tabs[token].user if known else None
        channels = _handled_channels(state_cls)
        self.tabs[token] = _Tab(state_cls, router_data, channels, user)
        if user != before and (rooms_now := self.page_rooms.get(token)):
            # Same rooms, another reader (logged in or out): listeners see it
            # leave and enter again, under its new identity.
            self._rooms_changed(token, rooms_now, rooms_now)
        for channel, tokens in self.handling.items():
            if channel in channels:
                tokens.add(token)
            else:
                tokens.discard(token)  # the tab moved to a page that does not handle it
        metrics.LIVE_TABS.set(len(self.tabs))
        if not known:
            logger.log(_tab_level(len(self.tabs)), "Live tab connected (%s); %d active",
                       token[:8], len(self.tabs))

    def user_of(self, token: str) -> tuple[int, str] | None:
        """The logged-in user of a tab (None: anonymous, or not a tab of this process)."""
        tab = self.tabs.get(token)
        return tab.user if tab is not None else None

    def unregister(self, token: str) -> None:
        """The tab's websocket closed (Socket.IO already dropped it from its rooms)."""
        self.set_user(token, 0)
        self.receiving.pop(token, None)
        if (left := self.page_rooms.pop(token, None)) is not None:
            self._rooms_changed(token, frozenset(), left)
        if (tab := self.tabs.pop(token, None)) is not None:
            for channel in tab.channels:
                self.handling[channel].discard(token)
            metrics.LIVE_TABS.set(len(self.tabs))
            logger.log(_tab_level(len(self.tabs)), "Live tab left (%s); %d active",
                       token[:8], len(self.tabs))

    # -- users ------------------------------------------------------------------------

    def set_user(self, token: str, user_id: int) -> None:
        """The tab `token` is logged in as `user_id` (0: logged out). Called on
        every login check, on every page, so this index follows logins, logouts
        and tabs that moved to this process after a reconnect."""
        previous = self.user_id_of.get(token)
        if previous == (user_id or None):
            return
        if previous is not None:
            tokens = self.users.get(previous, set())
            tokens.discard(token)
            if not tokens:
                self.users.pop(previous, None)
            del self.user_id_of[token]
        if user_id > 0:
            self.user_id_of[token] = user_id
            self.users.setdefault(user_id, set()).add(token)
            online.tracker().enter(token, user_id)
        else:
            online.tracker().leave(token)

    def tabs_of_user(self, user_id: int) -> list[str]:
        """Tokens of `user_id`'s tabs connected to this process (stale ones are dropped)."""
        connected = reflex_compat.connected_tokens(self.app)
        tokens = []
        for token in list(self.users.get(user_id, ())):
            if token in connected:
                tokens.append(token)
            else:
                self.unregister(token)  # its disconnect was missed
        return tokens

    # -- rooms ------------------------------------------------------------------------

    def on_rooms_changed(self, listener: RoomListener) -> None:
        """`listener(token, entered, left)` runs (as a task) when a tab's page rooms
        change, or when its user does (then `entered` and `left` are the same rooms:
        handle `left` first)."""
        self._room_listeners.append(listener)

    async def enter(self, token: str, sid: str, names: list[str], *, receive: bool = True) -> None:
        """The tab is now on a page in rooms `names`; it receives their frames unless paused."""
        now = frozenset(names)
        before = self.page_rooms.get(token, frozenset())
        if now:
            self.page_rooms[token] = now
        else:
            self.page_rooms.pop(token, None)
        want = now if receive else frozenset()
        have = self.receiving.get(token, frozenset())
        for room in have - want:
            await reflex_compat.leave_room(self.app, sid, room)
        for room in want - have:
            await reflex_compat.enter_room(self.app, sid, room)
        if want:
            self.receiving[token] = want
        else:
            self.receiving.pop(token, None)
        if now != before:
            self._rooms_changed(token, now - before, before - now)

    async def navigated(self, token: str, sid: str, path: str) -> None:
        """A tab loads another page: it leaves the rooms of the one it was on
        (a live page then enters its own from `live_start`)."""
        tab = self.tabs.get(token)
        if tab is not None and tab.path != path and token in self.page_rooms:
            await self.enter(token, sid, [])

    def _rooms_changed(self, token: str, entered: frozenset[str], left: frozenset[str]) -> None:
        for listener in self._room_listeners:
            task = asyncio.get_running_loop().create_task(listener(token, entered, left))
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_done)

    def _listener_done(self, task: asyncio.Task) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("A room listener failed", exc_info=exc)

    def in_room(self, room: str) -> list[str]:
        """Tokens of this process's tabs whose page is in `room`."""
        return [token for token, names in self.page_rooms.items() if room in names]

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

    # -- running hooks in tabs ------------------------------------------------------

    def _in_tab(
        self, token: str, tab: _Tab, apply: Callable[[LiveState], Any],
        event: CommunityEvent | None = None,
    ) -> None:
        """Run `apply(state)` in the tab, after whatever the hub already sent it
        (delivering `event`, if given: counted once it reached the tab)."""
        self.run_in_tab(token, tab.state_cls, apply, tab.router_data, event=event)

    def run_in_tab(
        self,
        token: str,
        state_cls: type[rx.State],
        apply: Callable[[Any], Any],
        router_data: dict[str, Any] | None = None,
        *,
        event: CommunityEvent | None = None,
    ) -> None:
        """Run `apply(state)` on the tab's `state_cls` under the tab's state lock,
        after whatever the hub already sent that tab (a plain function: no browser
        can call it). Its changes reach the browser as one delta."""
        previous = self._pending.get(token)
        task = asyncio.create_task(
            self._run_in_tab(token, state_cls, apply, router_data, previous=previous, event=event)
        )
        self._pending[token] = task
        task.add_done_callback(functools.partial(self._forget_pending, token))

    async def _run_in_tab(
        self,
        token: str,
        state_cls: type[rx.State],
        apply: Callable[[Any], Any],
        router_data: dict[str, Any] | None,
        *,
        previous: asyncio.Task | None,
        event: CommunityEvent | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own; only the order matters
        try:
            await reflex_compat.run_in_tab(self.app, token, state_cls, apply, router_data)
        except redis.exceptions.ConnectionError as exc:
            # A Redis restart (BusyLoadingError included): no tab's state can change
            # now; each catches up when Redis is back (status) or it reconnects.
            if not self._tab_state_unreachable:
                self._tab_state_unreachable = True
                logger.warning("Tab state in Redis is unreachable (%s); live hooks skipped until it is back", exc)
        except Exception:
            logger.exception("A live hook of %s failed in tab %s", state_cls.__name__, token[:8])
        else:
            if self._tab_state_unreachable:
                self._tab_state_unreachable = False
                logger.info("Tab state in Redis is reachable again")
            if event is not None:
                analytics.delivered(event, "tab_handler")

    def run_hook(self, token: str, apply: Callable[[LiveState], Any]) -> bool:
        """Run `apply(state)` in one tab of this process (its page's LiveState),
        after whatever the hub already sent it. False if the tab is not here."""
        tab = self.tabs.get(token)
        if tab is None or token not in reflex_compat.connected_tokens(self.app):
            return False
        self._in_tab(token, tab, apply)
        return True

    def _forget_pending(self, token: str, task: asyncio.Task) -> None:
        if self._pending.get(token) is task:
            del self._pending[token]

    async def drain(self) -> None:
        """Wait until every hook run scheduled so far has finished (tests, shutdown)."""
        while self._pending:
            await asyncio.wait(list(self._pending.values()))

    def room_size(self, room: str) -> int:
        """Sockets of this process receiving `room`'s frames."""
        return reflex_compat.room_size(self.app, room)

    # -- events -----------------------------------------------------------------------

    async def deliver(self, event: CommunityEvent) -> int:
        """Hand `event` to every live tab this process serves: the broadcast
        feed's room in one frame, then the pages with a handler of their own."""
        if not event.public:
            # Only to their owner's tabs, by the channel's handler (drafts have
            # none: the SSE API serves their authors).
            handler = _private_handlers.get(event.channel)
            return await handler(self, event) if handler is not None else 0
        changed = await live_feed.apply(event)
        broadcast = await live_feed.broadcast(changed) if changed else 0
        # One call for the whole frame (and a record of the event, readers or not).
        analytics.delivered(event, "tab_broadcast", broadcast)
        connected = reflex_compat.connected_tokens(self.app)
        handled = 0
        for token in list(self.handling[event.channel]):
            if token not in connected:
                self.unregister(token)
                continue
            self._in_tab(token, self.tabs[token], lambda state: state._live_receive(event), event)
            handled += 1
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
            # What this process now knows every publication after (live_feed.Published):
            # the history it read, and all it receives from here on.
            known_after = recent[0].id - 1 if recent else await self.fanout.bus.head()
        except Exception as exc:  # noqa: BLE001 (the feed simply starts empty)
            logger.warning("Could not warm the live feed from history: %s", exc)
            return
        for item in recent:
            with contextlib.suppress(MalformedEvent):
                live_feed.warm(await live_feed.apply(parse_event(item.channel, item.data)))
        live_feed.published.complete_after = max(live_feed.published.complete_after or 0, known_after)

    def _broadcast_status(self, ok: bool) -> None:
        connected = reflex_compat.connected_tokens(self.app)
        for token, tab in list(self.tabs.items()):
            if token not in connected:
                self.unregister(token)  # its disconnect was missed; a sweep as good as any
                continue
            self._in_tab(token, tab, lambda state: state._live_set_ok(ok))

    async def run(self) -> None:
        self.fanout.on_health_change(self._broadcast_status)
        async with self.fanout.subscribe(maxsize=100_000) as sub:
            await self.warm_feed()
            while (event := await sub.get()) is not None:
                try:
                    await self.deliver(event)
                except Exception:
                    logger.exception("Delivering %s #%s to tabs failed", event.channel, event.id)
            logger.error("Live tab feed overflowed; tabs will catch up on reconnect")

    async def stop(self) -> None:
        # The process is stopping: its own Redis subscription ending next is no
        # news for its tabs, which are leaving. Telling each would take each tab's
        # state lock in Redis, and a lock the exiting process still holds keeps
        # the tab from hydrating on another instance until it expires (10 s).
        self.fanout.off_health_change(self._broadcast_status)
        for task in [*self._pending.values(), *self._listener_tasks]:
            task.cancel()
        await self.drain()


class FollowNavigation(rx.Middleware):
    """Tabs leave the rooms of a page when they load another one (a page that
    is not live never calls `live_start`, so nothing else would tell the hub)."""

    async def preprocess(self, app: rx.App, state: Any, event: Any) -> None:
        if not event.name.endswith(".on_load_internal") or TabHub._current is None:
            return
        session = state.router.session
        await TabHub._current.navigated(session.client_token, session.session_id, state.router.url.path)
        return


@contextlib.asynccontextmanager
async def lifespan(app: rx.App) -> AsyncIterator[None]:
    """Runs the process's TabHub (registered on the app after the event service)."""
    tune_gc()  # this worker is about to hold many tabs: see fictures.server_limits
    reflex_compat.lighter_socket_writer()  # no task per frame per tab
    rooms.values_by_hydrate_and_frames()  # not recomputed for every event of every tab
    hub = TabHub(app)
    reflex_compat.on_tab_disconnect(app, hub.unregister)
    rooms.attach(app)
    TabHub._current = hub
    task = asyncio.create_task(hub.run(), name="fictures-live-tabs")
    leases = asyncio.create_task(online.tracker().run(), name="fictures-online-leases")
    logger.info("Live tab hub started (poll fallback every %ss)", settings.poll_seconds)
    try:
        yield
    finally:
        for running in (task, leases):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        await hub.stop()
        with contextlib.suppress(Exception):
            await online.tracker().close()
        rooms.attach(None)
        TabHub._current = None
