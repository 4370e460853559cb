"""/community: published stories (newest first, genre filter) and recent posts, live."""

from __future__ import annotations

import reflex as rx
from reflex_components_sonner.toast import ToastAction
from starlette.concurrency import run_in_threadpool

from fictures import feed
from fictures.components.cards import post_card, story_card
from fictures.components.layout import loading, page
from fictures.components.live import live_indicator
from fictures.events.schema import (
    PostCreated,
    PostDeleted,
    PostUpdated,
    StoryDeleted,
    StoryPublished,
    StoryUpdated,
)
from fictures.feed import PostCard, StoryCard
from fictures.live import LiveState
from fictures.settings import GENRES
from fictures.state import SessionState

ALL = "all"


class CommunityState(LiveState, rx.State):
    stories: list[StoryCard] = []
    # Stories that arrived live, newest first: kept apart so one arrival sends
    # one small delta instead of the whole list.
    arrivals: list[StoryCard] = []
    posts: list[PostCard] = []
    genre: str = ALL
    loading: bool = True
    # Arrivals already announced by the banner (reset by "View now").
    banner_seen: int = 0

    @rx.var
    def banner_count(self) -> int:
        return len(self.arrivals) - self.banner_seen

    def _genre_filter(self) -> str | None:
        return None if self.genre == ALL else self.genre

    def _known(self) -> set[int]:
        return {c.id for c in self.stories} | {c.id for c in self.arrivals}

    @rx.event
    async def load(self):
        """Read the page from the DB. On a reload (reconnect, polling) stories that
        appeared meanwhile become arrivals, so nothing is missed or shown twice."""
        cards = await run_in_threadpool(feed.published_cards, self._genre_filter())
        self.posts = await run_in_threadpool(feed.recent_post_cards)
        if self.loading:
            self.stories, self.arrivals, self.banner_seen = cards, [], 0
            self.loading = False
            return None
        current = {c.id: c for c in cards}
        newest_known = max(self._known(), default=0)
        fresh = [c for c in cards if c.id not in self._known() and c.id > newest_known]
        self.arrivals = fresh + [current[c.id] for c in self.arrivals if c.id in current]
        shown = {c.id for c in self.arrivals}
        self.stories = [c for c in cards if c.id not in shown]
        if fresh:
            return rx.toast.info(f"{len(fresh)} new stories published")
        return None

    def live_reload(self):
        return CommunityState.load

    @rx.event
    def set_genre(self, genre: str):
        self.genre = genre if genre in GENRES else ALL
        self.loading = True
        return CommunityState.load

    @rx.event
    def view_new(self):
        self.banner_seen = len(self.arrivals)
        return rx.scroll_to("new-stories")

    # -- live handlers -------------------------------------------------------------

    def on_story_published(self, event: StoryPublished):
        if event.story_id in self._known():
            return None
        if self._genre_filter() not in (None, event.genre):
            return None
        card = feed.story_card(event.story_id, event.id)
        if card is None:
            return None  # unpublished again before we got here
        self.arrivals = [card, *self.arrivals]
        return rx.toast.success(
            f"New story: {event.title}",
            description=f"by {card.author}",
            action=ToastAction(label="View", on_click=rx.scroll_to(f"story-{card.id}")),
            id=f"toast-story-{card.id}",
        )

    def on_story_updated(self, event: StoryUpdated):
        if event.status != "published" or self._genre_filter() not in (None, event.genre):
            self._drop_story(event.story_id)
            return
        card = feed.story_card(event.story_id, event.id)
        if card is None:
            self._drop_story(event.story_id)
            return
        if any(c.id == card.id for c in self.arrivals):
            self.arrivals = [card if c.id == card.id else c for c in self.arrivals]
        elif any(c.id == card.id for c in self.stories):
            self.stories = [card if c.id == card.id else c for c in self.stories]
        return

    def on_story_deleted(self, event: StoryDeleted):
        self._drop_story(event.story_id)

    def _drop_story(self, story_id: int) -> None:
        if any(c.id == story_id for c in self.arrivals):
            before = len(self.arrivals)
            self.arrivals = [c for c in self.arrivals if c.id != story_id]
            self.banner_seen = max(0, self.banner_seen - (before - len(self.arrivals)))
        if any(c.id == story_id for c in self.stories):
            self.stories = [c for c in self.stories if c.id != story_id]
        if any(p.story_id == story_id for p in self.posts):
            self.posts = [p for p in self.posts if p.story_id != story_id]

    def on_post_created(self, event: PostCreated):
        card = feed.post_card(event.post_id, event.id)
        if card is None or any(p.id == card.id for p in self.posts):
            return None
        self.posts = [card, *self.posts][:20]
        return rx.toast.info(
            f"New {card.type}: {card.title}",
            description=f"on {card.story_title} by {card.author}",
            action=ToastAction(
                label="View", on_click=rx.redirect(f"/community/story/{card.story_id}")
            ),
        )

    def on_post_updated(self, event: PostUpdated):
        card = feed.post_card(event.post_id, event.id)
        if card is not None:
            self.posts = [card if p.id == card.id else p for p in self.posts]

    def on_post_deleted(self, event: PostDeleted):
        self.posts = [p for p in self.posts if p.id != event.post_id]


def _banner() -> rx.Component:
    return rx.cond(
        CommunityState.banner_count > 0,
        rx.callout.root(
            rx.hstack(
                rx.callout.icon(rx.icon("sparkles")),
                rx.callout.text(
                    CommunityState.banner_count.to_string(),
                    rx.cond(CommunityState.banner_count == 1, " new story", " new stories"),
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
    return rx.vstack(
        rx.box(id="new-stories", scroll_margin_top="1em"),
        rx.foreach(CommunityState.arrivals, lambda c: story_card(c, is_new=True)),
        rx.foreach(CommunityState.stories, story_card),
        rx.cond(
            (CommunityState.stories.length() == 0) & (CommunityState.arrivals.length() == 0),
            rx.text("No published stories yet.", color_scheme="gray"),
        ),
        spacing="3",
        width="100%",
        id="story-list",
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
            rx.spacer(),
            _genre_filter(),
            width="100%",
            align="center",
        ),
        _banner(),
        rx.grid(
            rx.vstack(
                rx.heading("Stories", size="4"),
                rx.cond(CommunityState.loading, loading(), _stories()),
                width="100%",
            ),
            rx.vstack(
                rx.heading("Recent posts", size="4"),
                rx.foreach(CommunityState.posts, post_card),
                rx.cond(
                    CommunityState.posts.length() == 0,
                    rx.text("No posts yet.", color_scheme="gray"),
                ),
                width="100%",
                id="recent-posts",
            ),
            columns=rx.breakpoints(initial="1", md="3fr 2fr"),
            spacing="6",
            width="100%",
        ),
        extra=live_indicator(CommunityState),
    )
