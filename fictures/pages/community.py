"""/community: published stories (newest first, genre filter) and recent posts, live."""

from __future__ import annotations

import operator
from functools import reduce

import reflex as rx
from reflex.vars import Var
from starlette.concurrency import run_in_threadpool

from fictures import feed, live_feed
from fictures.components import presence as presence_ui
from fictures.components.cards import post_card, story_card
from fictures.components.layout import loading, page
from fictures.components.live import live_indicator
from fictures.events.schema import PostDeleted, PostUpdated, StoryDeleted, StoryUpdated
from fictures.feed import PostCard, StoryCard
from fictures.live import LiveState, TabHub
from fictures.live_feed import post_slots, story_slots
from fictures.settings import GENRES
from fictures.state import SessionState

ALL = "all"


class CommunityState(LiveState, rx.State):
    """Per reader: the list read from the DB at load, the filter, and two marks.

    Live arrivals are not in this state: they are the broadcast slots of
    `live_feed.CommunityRoom` (one frame per event for every reader); this tab shows
    those that arrived after `since_id`, and the banner counts those after `seen_id`.
    """

    live_rooms = (live_feed.CommunityRoom,)

    stories: list[StoryCard] = []
    story_ids: list[int] = []
    posts: list[PostCard] = []
    post_ids: list[int] = []
    genre: str = ALL
    loading: bool = True
    # Arrivals with a larger event id than this are NEW for this tab (-1: not loaded yet).
    since_id: int = -1
    # "View now" was clicked when the newest arrival had this id.
    seen_id: int = -1

    def _genre_filter(self) -> str | None:
        return None if self.genre == ALL else self.genre

    @rx.event
    async def load(self):
        """Read the lists from the DB. Arrivals this tab shows live (after
        `since_id`) stay out of them, so a reconnect keeps their NEW badges."""
        if self.since_id < 0 or self.live_paused == "1":
            self.since_id = self.seen_id = TabHub.current().last_id
        live_stories = {c.id for c in live_feed.stories.slots if c.event_id > self.since_id}
        live_posts = {c.id for c in live_feed.posts.slots if c.event_id > self.since_id}
        cards = await run_in_threadpool(feed.published_cards, self._genre_filter())
        posts = await run_in_threadpool(feed.recent_post_cards)
        self.stories = [c for c in cards if c.id not in live_stories]
        self.story_ids = [c.id for c in self.stories]
        self.posts = [p for p in posts if p.id not in live_posts]
        self.post_ids = [p.id for p in self.posts]
        self.loading = False

    def live_reload(self):
        return CommunityState.load

    @rx.event
    def set_genre(self, genre: str):
        self.genre = genre if genre in GENRES else ALL
        self.loading = True
        return CommunityState.load

    @rx.event
    def view_new(self):
        self.seen_id = max(self.seen_id, live_feed.stories.head())
        return rx.scroll_to("new-stories")

    # -- live handlers for the per-reader lists (arrivals are broadcast) ----------

    def on_story_updated(self, event: StoryUpdated):
        if event.status != "published" or self._genre_filter() not in (None, event.genre):
            self._drop_story(event.story_id)
            return
        if event.story_id in self.story_ids and (card := feed.story_card(event.story_id, event.id)):
            self.stories = [card if c.id == card.id else c for c in self.stories]

    def on_story_deleted(self, event: StoryDeleted):
        self._drop_story(event.story_id)

    def _drop_story(self, story_id: int) -> None:
        if story_id in self.story_ids:
            self.stories = [c for c in self.stories if c.id != story_id]
            self.story_ids = [c.id for c in self.stories]
        if any(p.story_id == story_id for p in self.posts):
            self.posts = [p for p in self.posts if p.story_id != story_id]
            self.post_ids = [p.id for p in self.posts]

    def on_post_updated(self, event: PostUpdated):
        if event.post_id in self.post_ids and (card := feed.post_card(event.post_id, event.id)):
            self.posts = [card if p.id == card.id else p for p in self.posts]

    def on_post_deleted(self, event: PostDeleted):
        if event.post_id in self.post_ids:
            self.posts = [p for p in self.posts if p.id != event.post_id]
            self.post_ids = [p.id for p in self.posts]


# -- what the browser computes from the broadcast slots and this tab's marks ------


def _genre_matches(card) -> Var:
    return (CommunityState.genre == ALL) | (card.genre == CommunityState.genre)


def _is_new_story(card) -> Var:
    return (
        (card.event_id > CommunityState.since_id)
        & ~CommunityState.story_ids.contains(card.id)
        & _genre_matches(card)
    )


def _is_new_post(card) -> Var:
    return (card.event_id > CommunityState.since_id) & ~CommunityState.post_ids.contains(card.id)


def _banner_count() -> Var:
    return reduce(
        operator.add,
        [rx.cond(_is_new_story(c) & (c.event_id > CommunityState.seen_id), 1, 0) for c in story_slots()],
    )


def _banner() -> rx.Component:
    count = _banner_count()
    return rx.cond(
        count > 0,
        rx.callout.root(
            rx.hstack(
                rx.callout.icon(rx.icon("sparkles")),
                rx.callout.text(
                    count.to_string(),
                    rx.cond(count == 1, " new story", " new stories"),
                    " published",
                    id="new-stories-count",
                ),
                rx.spacer(),
                rx.button("View now", on_click=CommunityState.view_new, size="1", id="view-now"),
                align="center",
                width="100%",
            ),
            color="green",
            id="new-stories-banner",
            width="100%",
            class_name="story-enter",
            position="sticky",
            top="0.5em",
            z_index="10",
            background_color=rx.color("green", 2),
        ),
    )


def _genre_filter() -> rx.Component:
    return rx.select(
        [ALL, *GENRES],
        value=CommunityState.genre,
        on_change=CommunityState.set_genre,
        size="2",
        id="genre-filter",
    )


def _stories() -> rx.Component:
    # A flex column ordered by CSS `order`: arrivals (newest first) above the list.
    return rx.flex(
        rx.box(id="new-stories", scroll_margin_top="4em", order=-(10**9)),
        *[
            rx.cond(_is_new_story(c), rx.box(story_card(c, is_new=True), order=-c.event_id, width="100%"))
            for c in story_slots()
        ],
        rx.foreach(CommunityState.stories, story_card),
        rx.cond(
            CommunityState.stories.length() == 0,
            rx.text("No published stories yet.", color_scheme="gray", order=1),
        ),
        direction="column",
        gap="3",
        width="100%",
        id="story-list",
    )


def _posts() -> rx.Component:
    return rx.flex(
        *[
            rx.cond(_is_new_post(c), rx.box(post_card(c), order=-c.event_id, width="100%"))
            for c in post_slots()
        ],
        rx.foreach(CommunityState.posts, post_card),
        direction="column",
        gap="3",
        width="100%",
        id="recent-posts",
    )


@rx.page(
    route="/community",
    title="Community · Fictures",
    on_load=[SessionState.check_login, CommunityState.live_start, CommunityState.load],
)
def community() -> rx.Component:
    return page(
        rx.hstack(
            rx.heading("Community", size="7"),
            presence_ui.readers(
                live_feed.CommunityRoom.readers, "readers online", singular="reader online",
                id="community-readers",
            ),
            rx.spacer(),
            _genre_filter(),
            width="100%",
            align="center",
        ),
        _banner(),
        live_feed.FeedToaster.create(),
        rx.grid(
            rx.vstack(
                rx.heading("Stories", size="4"),
                rx.cond(CommunityState.loading, loading(), _stories()),
                width="100%",
            ),
            rx.vstack(
                rx.heading("Recent posts", size="4"),
                rx.cond(CommunityState.loading, loading(), _posts()),
                width="100%",
            ),
            columns=rx.breakpoints(initial="1", md="3fr 2fr"),
            spacing="6",
            width="100%",
        ),
        extra=live_indicator(CommunityState),
    )
