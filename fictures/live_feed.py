"""Serialise-once broadcast of the community feed: one frame per event for every tab.

The community page's live part is the same for every reader: the stories and
posts that arrived since the page loaded. So instead of running a handler per
tab (fictures.live's general path, ~0.65 ms a tab), each process keeps the
latest arrivals in a ring of fixed slots, and an event becomes ONE Socket.IO
frame emitted to the room of live community tabs: the one slot that changed,
and nothing else (the browser raises the toast itself, see `FeedToaster`).
The frame is encoded once and written to every socket.

The slots are the room values of `CommunityRoom` (fictures.rooms), so a reload
or reconnect hydrates exactly what the broadcast showed. What is
per reader (which arrivals are NEW for this tab, the banner count, the genre
filter) is compared in the browser against per-tab vars of the page
(`since_id`, `seen_id`): see fictures.pages.community.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import reflex as rx
from reflex.vars import LiteralArrayVar, Var, VarData

from fictures import feed, reflex_compat, rooms
from fictures.events.schema import (
    CommunityEvent,
    PostCreated,
    PostDeleted,
    PostUpdated,
    StoryDeleted,
    StoryPublished,
    StoryUpdated,
)
from fictures.feed import PostCard, StoryCard
from fictures.presence import COMMUNITY, Readers

logger = logging.getLogger(__name__)

SLOTS = 20
ROOM = COMMUNITY
# localStorage key of LiveState.live_paused (the toaster stays quiet while paused).
PAUSED_KEY = "fictures_live_paused"

C = TypeVar("C", StoryCard, PostCard)


class Ring(Generic[C]):
    """The latest `size` arrivals of one kind, in fixed slots (slot = arrival % size)."""

    def __init__(self, empty: C, size: int = SLOTS):
        self.empty = empty
        self.slots: list[C] = [empty] * size
        self.arrivals = 0

    def put(self, card: C, event_id: int) -> list[int]:
        """Add an arrival; returns the slots that changed (a repeat of the same item moves)."""
        changed = self.remove(lambda c: c.id == card.id)
        index = self.arrivals % len(self.slots)
        self.arrivals += 1
        self.slots[index] = dataclasses.replace(card, event_id=event_id)
        return [*changed, index]

    def update(self, item_id: int, card: C) -> list[int]:
        changed = []
        for i, c in enumerate(self.slots):
            if c.id == item_id and c.event_id:
                self.slots[i] = dataclasses.replace(card, event_id=c.event_id)
                changed.append(i)
        return changed

    def remove(self, where: Callable[[C], bool]) -> list[int]:
        changed = []
        for i, c in enumerate(self.slots):
            if c.event_id and where(c):
                self.slots[i] = self.empty
                changed.append(i)
        return changed

    def head(self) -> int:
        return max((c.event_id for c in self.slots), default=0)


class Published:
    """The stories this process saw published, newest last: what a reconnecting
    tab missed beyond the ring's slots, without a query (a reconnect storm is
    hundreds of tabs asking at once).

    Complete for every publication after `complete_after` (an event id; None:
    not known yet, before the feed was warmed from the stream), up to `size` of
    them; kept current as stories are updated, unpublished and deleted."""

    def __init__(self, size: int):
        self.size = size
        self.cards: OrderedDict[int, StoryCard] = OrderedDict()  # story id -> card, by event id
        self.complete_after: int | None = None

    def put(self, card: StoryCard, event_id: int) -> None:
        self.cards.pop(card.id, None)
        self.cards[card.id] = dataclasses.replace(card, event_id=event_id)
        while len(self.cards) > self.size:
            _, oldest = self.cards.popitem(last=False)
            if self.complete_after is not None:
                self.complete_after = max(self.complete_after, oldest.event_id)

    def update(self, story_id: int, card: StoryCard) -> None:
        if (old := self.cards.get(story_id)) is not None:
            self.cards[story_id] = dataclasses.replace(card, event_id=old.event_id)

    def remove(self, story_id: int) -> None:
        self.cards.pop(story_id, None)

    def since(self, event_id: int, limit: int) -> list[StoryCard] | None:
        """Stories published after `event_id` and still published, newest first
        (at most `limit`); None when this process does not know them all."""
        if self.complete_after is None or event_id < self.complete_after:
            return None
        found: list[StoryCard] = []
        for card in reversed(self.cards.values()):
            if card.event_id <= event_id or len(found) == limit:
                break
            found.append(card)
        return found


stories: Ring[StoryCard] = Ring(StoryCard())
posts: Ring[PostCard] = Ring(PostCard())
# Three times what a tab takes back at most (fictures.pages.community.MAX_MISSED).
published = Published(size=3_000)


class CommunityRoom(rooms.Room):
    """The broadcast part of the community page (room "community"): the latest
    arrivals in fixed slots, and who is on the page (fictures.presence). No event
    handler changes it; only the broadcast frames (and hydration) carry its values."""

    kind: ClassVar[str] = ROOM
    keep_without_tabs: ClassVar[bool] = True  # rebuilt from events, which every process receives

    readers = rooms.value("readers", Readers, Readers())

    @classmethod
    def room_name(cls, router: Any) -> str:
        return ROOM

    # Slot vars s0..s19 (stories) and p0..p19 (posts): short names, small frames.
    for _i in range(SLOTS):
        locals()[f"s{_i}"] = rooms.value(f"s{_i}", StoryCard, StoryCard())
        locals()[f"p{_i}"] = rooms.value(f"p{_i}", PostCard, PostCard())
    del _i


def story_slots() -> list[Any]:
    return [getattr(CommunityRoom, f"s{i}") for i in range(SLOTS)]


def post_slots() -> list[Any]:
    return [getattr(CommunityRoom, f"p{i}") for i in range(SLOTS)]


async def apply(event: CommunityEvent) -> dict[str, Any]:
    """Apply an event to the rings: returns the changed slot vars to broadcast.

    The card comes from the event itself (it carries what a card shows), so
    the fan-out never waits on the DB; only an event stored by an older version
    has its card read from the DB in a worker thread (cached per event, so the
    per-tab handlers that follow read the same card without a query)."""
    changed: dict[str, Any] = {}

    def stories_changed(indices: list[int]) -> None:
        changed.update({f"s{i}": stories.slots[i] for i in indices})

    def posts_changed(indices: list[int]) -> None:
        changed.update({f"p{i}": posts.slots[i] for i in indices})

    match event:
        case StoryPublished():
            if (card := feed.story_card_of(event) or await asyncio.to_thread(
                    feed.story_card, event.story_id, event.id)) is not None:
                stories_changed(stories.put(card, event.id))
                published.put(card, event.id)
        case StoryUpdated(status="published"):
            if (card := feed.story_card_of(event) or await asyncio.to_thread(
                    feed.story_card, event.story_id, event.id)) is not None:
                stories_changed(stories.update(event.story_id, card))
                published.update(event.story_id, card)
        case StoryUpdated() | StoryDeleted():
            published.remove(event.story_id)
            stories_changed(stories.remove(lambda c: c.id == event.story_id))
            posts_changed(posts.remove(lambda c: c.story_id == event.story_id))
        case PostCreated():
            if (card := feed.post_card_of(event) or await asyncio.to_thread(
                    feed.post_card, event.post_id, event.id)) is not None:
                posts_changed(posts.put(card, event.id))
        case PostUpdated():
            if (card := await asyncio.to_thread(feed.post_card, event.post_id, event.id)) is not None:
                posts_changed(posts.update(event.post_id, card))
        case PostDeleted():
            posts_changed(posts.remove(lambda c: c.id == event.post_id))
    return changed


async def broadcast(changed: dict[str, Any]) -> int:
    """The one frame every live community tab receives for an event: the changed
    slots only (the browser raises the toast, see FeedToaster)."""
    return await rooms.publish(CommunityRoom, ROOM, **changed)


def warm(changed: dict[str, Any]) -> None:
    """Record slots rebuilt from history, without sending them."""
    rooms.store(ROOM, **changed)


class FeedToaster(rx.Fragment):
    """The browser half of the broadcast: toasts each arrival when its slot changes.

    The frame carries only the slot; this hook compares the slots with the
    newest one already toasted (kept in a ref), so nothing toasts on page load
    and a paused tab stays quiet. Arrivals missed while the tab was away (its
    websocket reconnected: the page rehydrates, `is_hydrated` false then true)
    make ONE summary toast, "3 new stories while you were away", instead of one
    per arrival (a single one toasts as usual); the banner and NEW badges show
    them all. A tab cut off before its first load finished (Live, but
    `is_hydrated` not yet true) counts from the newest arrival it had shown.

    A page that lists missed arrivals beyond the slots (cards carrying the
    `event_id` that published them, see fictures.pages.community) subclasses
    this with `missed` set to that list, and the summary counts them too.
    """

    missed: ClassVar[Var | None] = None

    def add_hooks(self) -> list[str | Var]:
        stories = LiteralArrayVar.create(story_slots())
        posts = LiteralArrayVar.create(post_slots())
        missed = self.missed if self.missed is not None else LiteralArrayVar.create([])
        hydrated = rx.State.is_hydrated
        lost = reflex_compat.connection_errors()
        effect = Var(
            _js_expr=f"""() => {{
  const stories = [...{stories!s}, ...{missed!s}.filter((c) => c.event_id > 0)];
  const posts = {posts!s};
  const newest = Math.max(0, ...stories.map((c) => c.event_id), ...posts.map((c) => c.event_id));
  const lost = {lost!s};
  if (lost || !{hydrated!s}) {{
    // Offline, or rehydrating after a reconnect: what arrives next is a catch-up.
    if (fxToasted.current === null && lost && fxShown.current > 0) {{
      // Cut off before the first load finished: what the page showed is the mark.
      fxToasted.current = fxShown.current;
    }}
    if (fxToasted.current !== null) fxFeedAway.current = true;
    else fxShown.current = newest;
    return;
  }}
  if (fxToasted.current === null
      || window.localStorage.getItem("{PAUSED_KEY}") === "1") {{
    fxToasted.current = newest;
    fxFeedAway.current = false;
    return;
  }}
  const fresh = [...stories, ...posts]
    .filter((c) => c.event_id > fxToasted.current)
    .sort((a, b) => a.event_id - b.event_id);
  const away = fxFeedAway.current;
  fxFeedAway.current = false;
  fxToasted.current = Math.max(fxToasted.current, newest);
  if (away && fresh.length > 1) {{
    const told = fresh.filter((c) => c.story_title === undefined);
    const posted = fresh.length - told.length;
    const parts = [];
    if (told.length) parts.push(told.length + (told.length === 1 ? " new story" : " new stories"));
    if (posted) parts.push(posted + (posted === 1 ? " new post" : " new posts"));
    const names = told.slice(-3).reverse().map((c) => c.title);
    fxToast?.info(parts.join(" and ") + " while you were away", {{
      description: names.length
        ? names.join(", ") + (told.length > names.length ? " and " + (told.length - names.length) + " more" : "")
        : undefined,
      action: told.length
        ? {{label: "View", onClick: () => document.getElementById("new-stories")?.scrollIntoView()}}
        : undefined,
    }});
    return;
  }}
  for (const c of fresh) {{
    if (c.story_title === undefined) {{
      fxToast?.success("New story: " + c.title, {{description: "by " + c.author,
        action: {{label: "View", onClick: () => document.getElementById("story-" + c.id)?.scrollIntoView()}}}});
    }} else {{
      fxToast?.info("New " + c.type + ": " + c.title, {{description: "on " + c.story_title + " by " + c.author,
        action: {{label: "View", onClick: () => window.location.assign("/community/story/" + c.story_id)}}}});
    }}
  }}
}}""",
            _var_data=VarData.merge(
                stories._get_all_var_data(), posts._get_all_var_data(), missed._get_all_var_data(),
                hydrated._get_all_var_data(), lost._get_all_var_data(),
            ),
        )
        react = VarData(imports={"react": [rx.ImportVar(tag="useRef")]})
        return [
            Var(f"const fxToast = {reflex_compat.toast_ref};"),
            Var("const fxToasted = useRef(null);", _var_data=react),
            Var("const fxFeedAway = useRef(false);", _var_data=react),
            # The newest arrival shown while the first load was still hydrating.
            Var("const fxShown = useRef(0);", _var_data=react),
            # A statement of its own (";"), so it cannot run on from the hook before it.
            Var(
                _js_expr=f"useEffect({effect!s});",
                _var_data=VarData.merge(
                    effect._get_all_var_data(),
                    VarData(imports={"react": [rx.ImportVar(tag="useEffect")]}),
                ),
            ),
        ]
