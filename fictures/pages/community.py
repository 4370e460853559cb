"""/community: published stories (newest first, genre filter) and recent posts, live.

Two kinds of NEW, side by side:

- **arrivals**: stories published while this page is open (the broadcast slots
  of `live_feed.CommunityRoom`), with the sticky "N new stories published"
  banner and "View now", for every reader as before;
- **new since your last visit** (logged-in readers): stories others published
  after the reader's previous visit began that the account has not seen
  (fictures.visits), with the banner "N new stories since your last visit".

For a logged-in reader a card of either kind counts as seen once it has been in
view for a second (`SeenTracker`, an IntersectionObserver in the browser, then
one `mark_seen` event): the account remembers it, its badge clears in every tab
of the account (fictures.live_receipts), and both banners count only what is
still unseen. Readers who are not logged in keep per-tab arrivals only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import operator
import time
from functools import reduce
from typing import Any, ClassVar

import reflex as rx
from reflex.vars import LiteralArrayVar, ObjectVar, Var, VarData

from fictures import auth, db, feed, live_feed, live_receipts, rooms, visits
from fictures.components import presence as presence_ui
from fictures.components.cards import load_more, post_card, story_card
from fictures.components.forms import label
from fictures.components.layout import loading, page
from fictures.components.live import live_indicator
from fictures.errors import NotFound
from fictures.events.schema import PostDeleted, PostUpdated, StoryDeleted, StoryUpdated
from fictures.feed import PostCard, StoryCard
from fictures.live import LiveState, TabHub
from fictures.live_feed import post_slots, story_slots
from fictures.models import RowId
from fictures.settings import GENRES
from fictures.state import SessionState

ALL = "all"
# How long a reload waits for this process to fan out stories the DB already has.
CATCH_UP_SECONDS = 2.0
# Ids of stories a tab remembers as seen (arrivals' badges); older ones fall off.
MAX_SEEN = 200
# At most this many stories published while a tab was away come back NEW (the
# newest; any older ones are in the list as usual).
MAX_MISSED = 1_000


def _visit(token: str, story_ids: list[int]) -> tuple[int, list[int]]:
    """(the logged-in reader's id, or 0; which of `story_ids` are new since their
    last visit), beginning a new visit if one is due (fictures.visits)."""
    with db.session() as s:
        user = auth.user_for_token(session=s, token=token)
        if user is None:
            return 0, []
        previous = visits.enter_community(
            session=s, user_id=user.id, login_at=auth.logged_in_at(session=s, token=token)
        )
        return user.id, visits.new_since(session=s, user_id=user.id, since=previous, story_ids=story_ids)


@dataclasses.dataclass(frozen=True)
class _Read:
    missed: list[StoryCard]
    stories: feed.Page
    posts: feed.Page
    viewer_id: int
    visit_new_ids: list[int]


def _read(token: str, genre: str | None, stories_limit: int, posts_limit: int, since_id: int | None) -> _Read:
    """What the page reads at load, in one trip to a worker thread (a reconnect
    storm queues hundreds of loads for the thread pool; each trip is a wait).

    `since_id` (a reload this process cannot answer from memory): the stories
    published after it, from the outbox, as the missed arrivals they are (each
    card carrying the event that published it); the list reads that many more,
    so none falls off its end."""
    published = feed.published_since(since_id, MAX_MISSED) if since_id is not None else {}
    stories = feed.published_cards(genre, stories_limit + len(published))
    missed = [dataclasses.replace(c, event_id=published[c.id]) for c in stories.cards if c.id in published]
    posts = feed.recent_post_cards(posts_limit)
    viewer_id, visit_new_ids = _visit(token, [c.id for c in stories.cards])
    return _Read(missed, stories, posts, viewer_id, visit_new_ids)


def _new_since_visit(user_id: int, story_ids: list[int]) -> list[int]:
    """Which of `story_ids` (a further page) are new since the reader's last visit."""
    with db.session() as s:
        since = visits.previous_visit(session=s, user_id=user_id)
        return visits.new_since(session=s, user_id=user_id, since=since, story_ids=story_ids)


class CommunityState(LiveState, rx.State):
    """Per reader: the list read from the DB at load, the filter, and two marks.

    Live arrivals are not in this state: they are the broadcast slots of
    `live_feed.CommunityRoom` (one frame per event for every reader); this tab shows
    those that arrived after `since_id`, and the banner counts those after `seen_id`.
    A tab that was away (its connection dropped, perhaps to another instance)
    may have missed more arrivals than the slots hold: on its reload those come
    in the list, each card carrying the `event_id` that published it, so they are
    NEW and counted just the same (`_missed`).
    """

    live_rooms = rooms.of(live_feed.CommunityRoom)
    # `load` follows `live_start` in on_load and is this page's catch-up.
    live_loads_on_reconnect: ClassVar[bool] = True

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
    # Logged in: who (0: nobody), which listed stories are new since their last
    # visit and still unseen, and what the account saw since this tab loaded
    # (clears arrivals' badges).
    viewer_id: int = 0
    visit_new_ids: list[int] = []
    seen_ids: list[int] = []
    # "Load more": whether each list has older items, and whether a page is on its way.
    more_stories: bool = False
    more_posts: bool = False
    loading_more: bool = False
    # Where each list continues (a keyset cursor, feed.cursor_after; "": at its end)
    # and how many it reads (a reload reads as many again). Backend only.
    _stories_after: str = ""
    _posts_after: str = ""
    _stories_limit: int = feed.STORIES_PAGE
    _posts_limit: int = feed.POSTS_PAGE

    def _genre_filter(self) -> str | None:
        return None if self.genre == ALL else self.genre

    def _missed(self) -> list[StoryCard]:
        """Listed stories published after this tab's page loaded: arrivals it missed
        while away that the broadcast slots no longer hold (see `load`)."""
        return [c for c in self.stories if c.event_id > self.since_id]

    def _arrived(self, ring: live_feed.Ring) -> set[int]:
        """Ids this tab shows as live arrivals (kept out of the lists read from the DB)."""
        return {c.id for c in ring.slots if c.event_id > self.since_id}

    async def _arrivals_caught_up(self, cards: list[StoryCard]) -> set[int]:
        """The stories this tab shows as arrivals, once this process has fanned out
        those of `cards` (read from the DB) that are newer than its newest arrival.

        A tab reloading after a reconnect (often on another instance) can read a
        story the DB already holds before this process's fan-out brought it into
        the ring: it would land in the list, without its NEW badge, and its
        broadcast would then be ignored (tests/e2e/test_failover.py)."""
        arrived = self._arrived(live_feed.stories)
        newest = max((c.published_at for c in live_feed.stories.slots if c.event_id), default="")
        pending = {c.id for c in cards if newest and c.id not in arrived and c.published_at > newest}
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while pending - arrived and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            arrived = self._arrived(live_feed.stories)
        return arrived

    @rx.event
    async def load(self):
        """Read the lists from the DB. Arrivals this tab shows live (after
        `since_id`) stay out of them, so a reconnect keeps their NEW badges."""
        reload = self.since_id >= 0 and self.live_paused != "1"
        if not reload:
            self.since_id = self.seen_id = TabHub.current().last_id
        token = (await self.get_state(SessionState)).auth_token
        # Reloading (a reconnect): the stories published since this page loaded
        # come back as the arrivals they are, NEW, beyond the ring's 20 slots:
        # from this process's memory (live_feed.published), or, when it does
        # not reach back that far (it started since), from the outbox.
        known = live_feed.published.since(self.since_id, MAX_MISSED) if reload else []
        genre = self._genre_filter()
        read = await db.page_read(
            _read, token, genre, self._stories_limit, self._posts_limit,
            self.since_id if known is None else None,
        )
        missed = read.missed if known is None else [c for c in known if genre is None or c.genre == genre]
        # The missed cards (NEW: they carry their event id) in place of the list's
        # copies; both newest first, merged keeping each one's order.
        missed_ids = {c.id for c in missed}
        cards = list(heapq.merge(missed, (c for c in read.stories.cards if c.id not in missed_ids),
                                 key=lambda c: (c.published_at, c.id), reverse=True))
        live_stories = (await self._arrivals_caught_up(cards) if reload
                        else self._arrived(live_feed.stories))
        live_posts = self._arrived(live_feed.posts)
        # Built as plain lists first: reading them back from the state would wrap
        # every card in Reflex's change-tracking proxy.
        stories = [c for c in cards if c.id not in live_stories]
        posts = [p for p in read.posts.cards if p.id not in live_posts]
        self.stories, self.story_ids = stories, [c.id for c in stories]
        self.posts, self.post_ids = posts, [p.id for p in posts]
        self._stories_after, self.more_stories = read.stories.next, read.stories.next != ""
        self._posts_after, self.more_posts = read.posts.next, read.posts.next != ""
        listed = {c.id for c in stories}
        self.viewer_id = read.viewer_id
        # A missed arrival counts as an arrival, not also as new since the last visit.
        self.visit_new_ids = [i for i in read.visit_new_ids if i in listed and i not in missed_ids]
        live_receipts.watch_seen(self.router.session.client_token, self.viewer_id)
        self.loading = False

    def live_reload(self):
        return CommunityState.load

    @rx.event
    def set_genre(self, genre: str):
        self.genre = genre if genre in GENRES else ALL
        self.loading = True
        self._stories_limit = feed.STORIES_PAGE
        return CommunityState.load

    @rx.event
    async def load_more_stories(self):
        """The next page of older stories, after the last one shown."""
        if not self._stories_after or self.loading_more:
            return
        self.loading_more = True
        yield
        try:
            page = await db.page_read(
                feed.published_cards, self._genre_filter(), feed.STORIES_PAGE, self._stories_after
            )
            shown = set(self.story_ids) | self._arrived(live_feed.stories)
            added = [c for c in page.cards if c.id not in shown]
            self.stories = [*self.stories, *added]
            self.story_ids = [c.id for c in self.stories]
            self._stories_after, self.more_stories = page.next, page.next != ""
            self._stories_limit += feed.STORIES_PAGE
            if self.viewer_id and added:
                new = await db.page_read(_new_since_visit, self.viewer_id, [c.id for c in added])
                self.visit_new_ids = [*self.visit_new_ids, *new]
        finally:
            self.loading_more = False

    @rx.event
    async def load_more_posts(self):
        """The next page of older posts, after the last one shown."""
        if not self._posts_after or self.loading_more:
            return
        self.loading_more = True
        yield
        try:
            page = await db.page_read(feed.recent_post_cards, feed.POSTS_PAGE, self._posts_after)
            shown = set(self.post_ids) | self._arrived(live_feed.posts)
            self.posts = [*self.posts, *(p for p in page.cards if p.id not in shown)]
            self.post_ids = [p.id for p in self.posts]
            self._posts_after, self.more_posts = page.next, page.next != ""
            self._posts_limit += feed.POSTS_PAGE
        finally:
            self.loading_more = False

    @rx.event
    def view_new(self):
        self.seen_id = max(self.seen_id, live_feed.stories.head(), *(c.event_id for c in self._missed()))
        return rx.scroll_to("new-stories")

    @rx.event
    async def mark_seen(self, story_id: RowId):
        """A card with a NEW badge was in view for a second (see SeenTracker).
        Taken only for a logged-in reader and a story this tab shows as new."""
        if not self.viewer_id or story_id in self.seen_ids:
            return
        arrived = any(
            c.id == story_id and c.event_id > self.since_id
            for c in (*live_feed.stories.slots, *self._missed())
        )
        if not arrived and story_id not in self.visit_new_ids:
            return
        user = await (await self.get_state(SessionState))._current_user()
        if user is None or user.id != self.viewer_id:
            return
        try:
            await live_receipts.story_seen(user_id=user.id, story_id=story_id)
        except NotFound:
            pass  # unpublished or deleted this instant: its card is going anyway
        self._seen_elsewhere(user.id, story_id)

    def _seen_elsewhere(self, user_id: int, story_id: int) -> None:
        """The account saw a story (here or in another tab): clear its badge."""
        if user_id != self.viewer_id:
            return
        if story_id in self.visit_new_ids:
            self.visit_new_ids = [i for i in self.visit_new_ids if i != story_id]
        if story_id not in self.seen_ids:
            self.seen_ids = [*self.seen_ids[-(MAX_SEEN - 1):], story_id]

    # -- live handlers for the per-reader lists (arrivals are broadcast) ----------

    def on_story_updated(self, event: StoryUpdated):
        if event.status != "published" or self._genre_filter() not in (None, event.genre):
            self._drop_story(event.story_id)
            return
        if event.story_id in self.story_ids and (
            card := feed.story_card_of(event) or feed.story_card(event.story_id, event.id)
        ):
            # A missed arrival stays one (its event id marks it NEW).
            self.stories = [dataclasses.replace(card, event_id=c.event_id) if c.id == card.id else c
                            for c in self.stories]

    def on_story_deleted(self, event: StoryDeleted):
        self._drop_story(event.story_id)

    def _drop_story(self, story_id: int) -> None:
        if story_id in self.story_ids:
            self.stories = [c for c in self.stories if c.id != story_id]
            self.story_ids = [c.id for c in self.stories]
        if story_id in self.visit_new_ids:
            self.visit_new_ids = [i for i in self.visit_new_ids if i != story_id]
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


def _unseen(card) -> Var:
    """Not yet seen by the logged-in reader (always true for anyone else)."""
    return ~CommunityState.seen_ids.contains(card.id)


def _banner_count() -> Var:
    """Arrivals not yet viewed ("View now") nor seen: in the slots, and missed
    ones in the list (see CommunityState)."""
    in_slots = reduce(
        operator.add,
        [
            rx.cond(_is_new_story(c) & (c.event_id > CommunityState.seen_id) & _unseen(c), 1, 0)
            for c in story_slots()
        ],
    )
    probe = Var(_js_expr="c", _var_type=StoryCard).to(ObjectVar, StoryCard)
    condition = (probe.event_id > CommunityState.seen_id) & _unseen(probe)
    missed = Var(
        _js_expr=f"{CommunityState.stories!s}.filter((c) => {condition!s}).length",
        _var_type=int,
        _var_data=VarData.merge(CommunityState.stories._get_all_var_data(), condition._get_all_var_data()),
    ).to(int)
    return in_slots + missed


def _visit_banner() -> rx.Component:
    count = CommunityState.visit_new_ids.length()
    return rx.cond(
        count > 0,
        rx.callout.root(
            rx.callout.icon(rx.icon("history")),
            rx.callout.text(
                count.to_string(),
                rx.cond(count == 1, " new story", " new stories"),
                " since your last visit",
                id="visit-new-count",
            ),
            color_scheme="iris",
            high_contrast=True,
            id="visit-new-banner",
            width="100%",
        ),
    )


def _banner() -> rx.Component:
    """The sticky "N new stories published" banner. Its wrapper is always in the
    page, a polite live region (role="status"): screen readers announce the
    banner as it appears and as its count changes. The wrapper takes no room
    while empty (its negative margin cancels the page's gap)."""
    count = _banner_count()
    return rx.box(
        rx.cond(
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
                    rx.button("View now", on_click=CommunityState.view_new, size="1", id="view-now",
                              color_scheme="green", high_contrast=True),
                    align="center",
                    width="100%",
                ),
                color_scheme="green",
                high_contrast=True,
                id="new-stories-banner",
                width="100%",
                class_name="story-enter",
                background_color=rx.color("green", 2),
                margin_bottom="var(--space-5)",
            ),
        ),
        role="status",
        aria_live="polite",
        id="new-stories-status",
        width="100%",
        position="sticky",
        top="0.5em",
        z_index="10",
        margin_bottom="calc(-1 * var(--space-5))",
    )


# A card counts as seen once this much of it has been in view for SEEN_MS.
SEEN_RATIO = 0.5
SEEN_MS = 1000
# A "seen" the server did not act on (a dropped connection) may be sent again after this.
RESEND_MS = 10_000


class SeenTracker(rx.Fragment):
    """The browser half of "seen": for a logged-in reader, watches every story
    card with a NEW badge (`data-new="1"`) with one IntersectionObserver and,
    once a card has been at least half in view for a second while the page is
    visible, sends `CommunityState.mark_seen(id)` once. The server clears the
    badge (in every tab of the account); cards that render later (arrivals, a
    new genre) are picked up whenever the page's state changes.
    """

    def add_hooks(self) -> list[str | Var]:
        send = rx.Var.create(
            rx.EventChain.create(
                CommunityState.mark_seen,
                args_spec=lambda story_id: [story_id],
                key="seen",
            )
        )
        enabled = SessionState.logged_in & rx.State.is_hydrated & ~CommunityState.loading
        # Read so this component renders again when the cards may have changed.
        watched = LiteralArrayVar.create(
            [SessionState.user_id, CommunityState.visit_new_ids, CommunityState.seen_ids,
             CommunityState.story_ids, *[c.event_id for c in story_slots()]]
        )
        effect = Var(
            _js_expr=f"""() => {{
  const watched = {watched!s};
  if (!({enabled!s})) return;
  const user = watched[0];
  let s = fxSeen.current;
  if (s === null || s.user !== user) {{
    if (s !== null) {{ s.obs.disconnect(); s.timers.forEach(clearTimeout); }}
    const send = {send!s};
    const timers = new Map();
    const sent = new Map();
    const fire = (el) => {{
      timers.delete(el);
      if (!el.isConnected || el.dataset.new !== "1") return;
      if (document.visibilityState !== "visible") {{
        timers.set(el, setTimeout(() => fire(el), {SEEN_MS}));
        return;
      }}
      const id = Number(el.dataset.storyId);
      if (Date.now() - (sent.get(id) ?? -Infinity) < {RESEND_MS}) return;
      sent.set(id, Date.now());
      send(id);
    }};
    const obs = new IntersectionObserver((entries) => {{
      for (const e of entries) {{
        if (e.isIntersecting && e.intersectionRatio >= {SEEN_RATIO}) {{
          if (!timers.has(e.target)) timers.set(e.target, setTimeout(() => fire(e.target), {SEEN_MS}));
        }} else if (timers.has(e.target)) {{
          clearTimeout(timers.get(e.target));
          timers.delete(e.target);
        }}
      }}
    }}, {{threshold: [0, {SEEN_RATIO}, 1]}});
    s = fxSeen.current = {{user, obs, timers, sent}};
  }}
  document.querySelectorAll(".story-card[data-new='1'][data-story-id]").forEach((el) => s.obs.observe(el));
}}""",
            _var_data=VarData.merge(
                send._get_all_var_data(), enabled._get_all_var_data(), watched._get_all_var_data()
            ),
        )
        cleanup = Var(
            _js_expr="""() => () => {
  const s = fxSeen.current;
  if (s !== null) { s.obs.disconnect(); s.timers.forEach(clearTimeout); fxSeen.current = null; }
}"""
        )
        react = VarData(imports={"react": [rx.ImportVar(tag="useEffect"), rx.ImportVar(tag="useRef")]})
        return [
            Var("const fxSeen = useRef(null);", _var_data=react),
            Var(_js_expr=f"useEffect({effect!s});", _var_data=VarData.merge(effect._get_all_var_data(), react)),
            Var(_js_expr=f"useEffect({cleanup!s}, []);", _var_data=react),
        ]


class CommunityToaster(live_feed.FeedToaster):
    """The feed's toasts, counting the missed arrivals the list carries after a reconnect."""

    missed: ClassVar[Var | None] = CommunityState.stories


def _genre_filter() -> rx.Component:
    return rx.hstack(
        label("Genre", "genre-filter"),
        rx.select(
            [ALL, *GENRES],
            value=CommunityState.genre,
            on_change=CommunityState.set_genre,
            size="2",
            id="genre-filter",
        ),
        align="center",
        spacing="2",
    )


def _arrivals(slots: list[Var], is_new: Any, card_type: type) -> Var:
    """The slots that are new for this tab, newest first, as one array computed in
    the browser: cards are in the DOM in the order they are shown (screen readers
    and keyboard focus follow it), not placed by CSS `order`."""
    probe = Var(_js_expr="c", _var_type=card_type).to(ObjectVar, card_type)
    condition = is_new(probe)
    slots_var = LiteralArrayVar.create(slots)
    return Var(
        _js_expr=(
            f"{slots_var!s}.filter((c) => {condition!s})"
            ".sort((a, b) => b.event_id - a.event_id)"
        ),
        _var_type=list[card_type],
        _var_data=VarData.merge(slots_var._get_all_var_data(), condition._get_all_var_data()),
    )


def _stories() -> rx.Component:
    # Arrivals (newest first) above the list read at load.
    return rx.flex(
        rx.box(id="new-stories", scroll_margin_top="4em"),
        rx.foreach(
            _arrivals(story_slots(), _is_new_story, StoryCard),
            lambda c: story_card(c, is_new=_unseen(c), arrived=True),
        ),
        rx.foreach(
            CommunityState.stories,
            lambda c: story_card(
                c,
                is_new=CommunityState.visit_new_ids.contains(c.id)
                | ((c.event_id > CommunityState.since_id) & _unseen(c)),
            ),
        ),
        rx.cond(
            CommunityState.stories.length() == 0,
            rx.text("No published stories yet.", color_scheme="gray"),
        ),
        load_more(CommunityState.more_stories, CommunityState.load_more_stories, CommunityState.loading_more,
                  "Load more stories", id="more-stories"),
        direction="column",
        gap="3",
        width="100%",
        id="story-list",
    )


def _posts() -> rx.Component:
    return rx.flex(
        rx.foreach(_arrivals(post_slots(), _is_new_post, PostCard), post_card),
        rx.foreach(CommunityState.posts, post_card),
        load_more(CommunityState.more_posts, CommunityState.load_more_posts, CommunityState.loading_more,
                  "Load more posts", id="more-posts"),
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
        rx.flex(
            rx.hstack(
                rx.heading("Community", size="7", as_="h1"),
                presence_ui.readers(
                    live_feed.CommunityRoom.readers, "readers online", singular="reader online",
                    id="community-readers",
                ),
                align="center",
                wrap="wrap",
            ),
            rx.spacer(),
            _genre_filter(),
            width="100%",
            align="center",
            wrap="wrap",
            gap="3",
        ),
        _visit_banner(),
        _banner(),
        CommunityToaster.create(),
        SeenTracker.create(),
        rx.grid(
            rx.vstack(
                rx.heading("Stories", size="4", as_="h2"),
                rx.cond(CommunityState.loading, loading(), _stories()),
                width="100%",
            ),
            rx.vstack(
                rx.heading("Recent posts", size="4", as_="h2"),
                rx.cond(CommunityState.loading, loading(), _posts()),
                width="100%",
            ),
            columns=rx.breakpoints(initial="1", md="3fr 2fr"),
            spacing="6",
            width="100%",
        ),
        extra=live_indicator(CommunityState),
    )
