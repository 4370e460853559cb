"""Serialise-once broadcast of the community feed: one frame per event for every tab.

The community page's live part is the same for every reader: the stories and
posts that arrived since the page loaded. So instead of running a handler per
tab (fictures.live's general path, ~0.65 ms a tab), each process keeps the
latest arrivals in a ring of fixed slots, and an event becomes ONE Socket.IO
frame emitted to the room of live community tabs: the one slot that changed,
plus the toast. The frame is encoded once and written to every socket.

The slots are computed vars of `LiveFeedState` that read the process's ring,
so a reload or reconnect hydrates exactly what the broadcast showed. What is
per reader (which arrivals are NEW for this tab, the banner count, the genre
filter) is compared in the browser against per-tab vars of the page
(`since_id`, `seen_id`): see fictures.pages.community.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import reflex as rx
from reflex.event import Event
from reflex.state import StateUpdate
from reflex_base.constants.state import FIELD_MARKER
from reflex_components_sonner.toast import ToastAction

from fictures import feed
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

logger = logging.getLogger(__name__)

SLOTS = 20
ROOM = "live:community"

C = TypeVar("C", StoryCard, PostCard)


class Ring(Generic[C]):
    """The latest `size` arrivals of one kind, in fixed slots (slot = arrival % size)."""

    def __init__(self, empty: C, size: int = SLOTS):
        self.empty = empty
        self.slots: list[C] = [empty] * size
        self.seq = 0

    def put(self, card: C, event_id: int) -> list[int]:
        """Add an arrival; returns the slots that changed (a repeat of the same item moves)."""
        changed = self.remove(lambda c: c.id == card.id)
        index = self.seq % len(self.slots)
        self.seq += 1
        self.slots[index] = dataclasses.replace(card, event_id=event_id, seq=self.seq)
        return [*changed, index]

    def update(self, item_id: int, card: C) -> list[int]:
        changed = []
        for i, c in enumerate(self.slots):
            if c.id == item_id and c.event_id:
                self.slots[i] = dataclasses.replace(card, event_id=c.event_id, seq=c.seq)
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


stories: Ring[StoryCard] = Ring(StoryCard())
posts: Ring[PostCard] = Ring(PostCard())


def _slot_var(ring: Ring, name: str, index: int, card_type: type) -> Any:
    def slot(self) -> Any:
        return ring.slots[index]

    slot.__name__ = name
    slot.__annotations__ = {"return": card_type}
    return rx.var(slot, cache=False)


class LiveFeedState(rx.State):
    """The broadcast part of the community page. No event handler changes it;
    only the broadcast frames (and hydration) carry its values."""

    # The newest event this browser tab was sent, kept in sessionStorage so that
    # after a reconnect the server knows which arrivals the tab missed.
    feed_seen: str = rx.SessionStorage("", name="fictures_feed_seen")

    for _i in range(SLOTS):
        locals()[f"story_{_i}"] = _slot_var(stories, f"story_{_i}", _i, StoryCard)
        locals()[f"post_{_i}"] = _slot_var(posts, f"post_{_i}", _i, PostCard)
    del _i


def story_slots() -> list[Any]:
    return [getattr(LiveFeedState, f"story_{i}") for i in range(SLOTS)]


def post_slots() -> list[Any]:
    return [getattr(LiveFeedState, f"post_{i}") for i in range(SLOTS)]


def _story_toast(card: StoryCard) -> Any:
    return rx.toast.success(
        f"New story: {card.title}",
        description=f"by {card.author}",
        action=ToastAction(label="View", on_click=rx.scroll_to(f"story-{card.id}")),
    )


def post_toast(card: PostCard) -> Any:
    return rx.toast.info(
        f"New {card.type}: {card.title}",
        description=f"on {card.story_title} by {card.author}",
        action=ToastAction(label="View", on_click=rx.redirect(f"/community/story/{card.story_id}")),
    )


async def apply(event: CommunityEvent) -> tuple[dict[str, Any], list[Any]]:
    """Apply an event to the rings: returns (changed slot vars, toasts) to broadcast.

    Cards are read from the DB in a worker thread (cached per event, so the
    per-tab handlers that follow read the same card without a query)."""
    changed: dict[str, Any] = {}
    toasts: list[Any] = []

    def stories_changed(indices: list[int]) -> None:
        changed.update({f"story_{i}": stories.slots[i] for i in indices})

    def posts_changed(indices: list[int]) -> None:
        changed.update({f"post_{i}": posts.slots[i] for i in indices})

    match event:
        case StoryPublished():
            if (card := await asyncio.to_thread(feed.story_card, event.story_id, event.id)) is not None:
                stories_changed(stories.put(card, event.id))
                toasts.append(_story_toast(card))
        case StoryUpdated(status="published"):
            if (card := await asyncio.to_thread(feed.story_card, event.story_id, event.id)) is not None:
                stories_changed(stories.update(event.story_id, card))
        case StoryUpdated() | StoryDeleted():
            stories_changed(stories.remove(lambda c: c.id == event.story_id))
            posts_changed(posts.remove(lambda c: c.story_id == event.story_id))
        case PostCreated():
            if (card := await asyncio.to_thread(feed.post_card, event.post_id, event.id)) is not None:
                posts_changed(posts.put(card, event.id))
                toasts.append(post_toast(card))
        case PostUpdated():
            if (card := await asyncio.to_thread(feed.post_card, event.post_id, event.id)) is not None:
                posts_changed(posts.update(event.post_id, card))
        case PostDeleted():
            posts_changed(posts.remove(lambda c: c.id == event.post_id))
    return changed, toasts


def frame(event: CommunityEvent, changed: dict[str, Any], toasts: list[Any]) -> StateUpdate:
    """The one update every live community tab receives for `event`."""
    delta = {f"{name}{FIELD_MARKER}": value for name, value in changed.items()}
    delta[f"feed_seen{FIELD_MARKER}"] = str(event.id)
    return StateUpdate(
        delta={LiveFeedState.get_full_name(): delta},
        events=[e for t in toasts for e in Event.from_event_type(t)],
    )


def missed_toasts(after_id: int) -> list[Any]:
    """Toasts for the arrivals after `after_id` (a tab that was away), oldest first."""
    missed = [c for c in stories.slots if c.event_id > after_id]
    missed += [c for c in posts.slots if c.event_id > after_id]
    missed.sort(key=lambda c: c.event_id)
    return [_story_toast(c) if isinstance(c, StoryCard) else post_toast(c) for c in missed]
