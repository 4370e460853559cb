"""/community/story/<id>: one story and its posts, with a form to write a post; live."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import reflex as rx
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fictures import (
    client_address,
    db,
    feed,
    live_receipts,
    posts,
    presence,
    ratelimit,
    rooms,
    stories,
    toasts,
    typing_indicator,
)
from fictures.components import presence as presence_ui
from fictures.components.cards import genre_badge, load_more, post_card
from fictures.components.forms import field_error, label
from fictures.components.layout import loading, page
from fictures.components.live import live_indicator
from fictures.errors import DomainError
from fictures.events.schema import PostCreated, PostDeleted, PostUpdated, StoryDeleted, StoryUpdated
from fictures.feed import PostCard
from fictures.forms import field_errors
from fictures.live import LiveState, TabHub
from fictures.live_receipts import ReadsRoom
from fictures.models import MAX_ROW_ID, PostCreate, PostType, User
from fictures.presence import Readers
from fictures.settings import settings
from fictures.state import BrowserState, SessionState

_ID = re.compile(r"[0-9]{1,10}")


def _story_id_in(router: Any) -> int:
    """The story id in the page's URL (/community/story/<id>), 0 if there is none."""
    raw = router.url.path.rstrip("/").rpartition("/")[2]
    return int(raw) if _ID.fullmatch(raw) and 0 < int(raw) <= MAX_ROW_ID else 0


class StoryRoom(rooms.Room):
    """What every tab on one story page shows alike (room "story:<id>"): who is
    reading it (fictures.presence) and who is writing a post (fictures.typing_indicator).
    A tab is in the room only while the story it shows is published."""

    kind: ClassVar[str] = presence.STORY

    @classmethod
    def room_name(cls, router: Any) -> str | None:
        story_id = _story_id_in(router)
        return presence.story_room(story_id) if story_id else None

    readers = rooms.value("readers", Readers, Readers())
    typers = rooms.value("typers", list[str], [])


def _load_story(story_id: int, viewer: User | None) -> dict | None:
    with db.session() as s:
        try:
            story = stories.get_readable_story(session=s, story_id=story_id, viewer=viewer)
        except DomainError:
            return None
        author = s.get(User, story.author_id)
        return {
            "title": story.title,
            "genre": story.genre or "",
            "summary": story.summary,
            "content": story.content,
            "status": story.status,
            "author": author.username if author else "?",
        }


def _create_post(user: User, story_id: int, data: PostCreate) -> int:
    with db.session() as s:
        return posts.create_post(session=s, author=user, story_id=story_id, data=data).id


class StoryState(LiveState, rx.State):
    # Presence and typing (StoryRoom, first: see _story_room) and the read count
    # (ReadsRoom, fictures.live_receipts) arrive in one frame per room; `reads`
    # is what this tab loaded.
    live_rooms = rooms.of(StoryRoom, ReadsRoom)

    current_id: int = 0
    found: bool = True
    loading: bool = True
    title: str = ""
    genre: str = ""
    summary: str = ""
    content: str = ""
    author: str = ""
    status: str = ""
    reads: int = 0
    posts: list[PostCard] = []
    post_errors: dict[str, str] = {}
    post_type: str = PostType.discussion.value
    posting: bool = False
    # "Load more" under the posts: whether there are older ones, and one on its way.
    more_posts: bool = False
    loading_more: bool = False
    # Where the list continues (feed.cursor_after; "": at its end) and how many
    # it reads (a reload of the same story reads as many again). Backend only.
    _posts_after: str = ""
    _posts_limit: int = feed.POSTS_PAGE

    @rx.event
    async def load(self):
        story_id = live_receipts.story_id_from_path(self.router.url.path)
        if story_id != self.current_id:
            self._posts_limit = feed.POSTS_PAGE
        self.current_id = story_id
        session = await self.get_state(SessionState)
        viewer = await session._current_user()
        data = await db.page_read(_load_story, self.current_id, viewer) if self.current_id > 0 else None
        self.found = data is not None
        if data:
            for key, value in data.items():
                setattr(self, key, value)
            page = await db.page_read(feed.story_post_cards, self.current_id, self._posts_limit)
            self.posts = page.cards
            self._posts_after, self.more_posts = page.next, page.next != ""
            await self._opened(viewer)
        self.loading = False
        await self._live_follow_rooms()  # the story's room, now that we know it is published

    async def _opened(self, viewer: User | None) -> None:
        """Count this reader (once per account or browser; never the author, never
        a draft) and show the story's readers."""
        browser = await self.get_state(BrowserState)
        result = await live_receipts.story_opened(
            story_id=self.current_id,
            viewer=viewer,
            browser_id=browser._browser_id(),
            address=client_address.from_router_headers(self.router.headers.raw_headers),
        )
        self.reads = result.reads if result is not None else 0

    def live_reload(self):
        return StoryState.load

    def _live_room_names(self) -> list[str]:
        # Only a published story has a room: nobody is shown reading, or writing
        # in, a draft (not even its author, nor someone guessing its URL). Until
        # `load` has read the story this URL names, the tab is in no room.
        if (
            self.loading or not self.found or self.status != stories.PUBLISHED
            or self.current_id != _story_id_in(self.router)
        ):
            return []
        return super()._live_room_names()

    def _story_room(self) -> str | None:
        """This tab's story room, if it is in one."""
        hub, token = TabHub._current, self.router.session.client_token
        names = self._live_room_names()
        if hub is None or not names or names[0] not in hub.page_rooms.get(token, ()):
            return None
        return names[0]

    @rx.event
    async def post_typing(self):
        """Someone types in the post form: the browser sends this at most once every
        `typing_throttle_seconds`, and the server drops whatever comes faster."""
        room = self._story_room()
        session = await self.get_state(SessionState)
        if room is None or session.user_id <= 0:
            return
        typing = typing_indicator.tracker()
        if not await typing.admit(room, session.user_id):
            return
        user = await session._current_user()  # the token may have been revoked meanwhile
        if user is None or user.id != session.user_id:
            return
        await typing.typed(
            room=room, user_id=user.id, username=user.username, token=self.router.session.client_token
        )

    @rx.event
    async def load_more_posts(self):
        """The next page of older posts on this story, after the last one shown."""
        if not self._posts_after or self.loading_more or not self.found:
            return
        self.loading_more = True
        yield
        try:
            page = await db.page_read(
                feed.story_post_cards, self.current_id, feed.POSTS_PAGE, self._posts_after
            )
            shown = {p.id for p in self.posts}
            self.posts = [*self.posts, *(p for p in page.cards if p.id not in shown)]
            self._posts_after, self.more_posts = page.next, page.next != ""
            self._posts_limit += feed.POSTS_PAGE
        finally:
            self.loading_more = False

    @rx.event
    def set_post_type(self, value: str):
        if value in {t.value for t in PostType}:
            self.post_type = value

    @rx.event
    async def submit_post(self, form: dict[str, str]):
        session = await self.get_state(SessionState)
        user = await session._current_user()
        if user is None:
            yield rx.redirect("/login")
            return
        try:
            data = PostCreate.model_validate(
                {"title": form.get("title", ""), "body": form.get("body", ""), "type": self.post_type}
            )
        except ValidationError as exc:
            self.post_errors = field_errors(exc)
            return
        self.posting = True
        yield
        try:
            await ratelimit.check_post(user.id)  # counted with the REST API's posts
            await run_in_threadpool(_create_post, user, self.current_id, data)
        except DomainError as exc:
            self.post_errors = {"form": exc.detail}
        else:
            self.post_errors = {}
            if (room := self._story_room()) is not None:
                await typing_indicator.tracker().stopped(room=room, user_id=user.id, username=user.username)
            yield rx.set_value("post-title", "")
            yield rx.set_value("post-body", "")
            yield toasts.success("Posted")
        finally:
            self.posting = False

    # -- live handlers: only this story's events matter ----------------------------

    def on_post_created(self, event: PostCreated):
        if event.story_id != self.current_id:
            return None
        card = feed.post_card_of(event) or feed.post_card(event.post_id, event.id)
        if card is None or any(p.id == card.id for p in self.posts):
            return None
        self.posts = [card, *self.posts]
        return toasts.info(
            f"New {card.type}: {card.title}",
            description=f"by {card.author}",
            action=("View", rx.scroll_to(f"post-{card.id}")),
        )

    def on_post_updated(self, event: PostUpdated):
        if event.story_id == self.current_id and (card := feed.post_card(event.post_id, event.id)):
            self.posts = [card if p.id == card.id else p for p in self.posts]

    def on_post_deleted(self, event: PostDeleted):
        if event.story_id == self.current_id:
            self.posts = [p for p in self.posts if p.id != event.post_id]

    def on_story_updated(self, event: StoryUpdated):
        if event.story_id == self.current_id:
            return StoryState.load
        return None

    def on_story_deleted(self, event: StoryDeleted):
        if event.story_id == self.current_id:
            self.found = False
            # `load` finds nothing, so the tab leaves the story's room.
            return [toasts.warning("This story was deleted by its author"), StoryState.load]
        return None



# Typing is reported at most once per throttle interval per tab (Reflex throttles in
# the browser, one key for both fields); the server drops anything faster.
_TYPING = StoryState.post_typing.throttle(int(settings.typing_throttle_seconds * 1000))


def _post_form() -> rx.Component:
    return rx.cond(
        SessionState.logged_in,
        rx.form(
            rx.vstack(
                rx.heading("Write a post", size="3", as_="h2"),
                label("Kind of post", "post-type"),
                rx.select(
                    [t.value for t in PostType],
                    value=StoryState.post_type,
                    on_change=StoryState.set_post_type,
                    id="post-type",
                ),
                label("Title", "post-title"),
                rx.input(
                    placeholder="Title", name="title", id="post-title", width="100%", on_change=_TYPING,
                ),
                field_error(StoryState.post_errors, "title", "post-error"),
                label("Post", "post-body"),
                rx.text_area(
                    placeholder="Say something…", name="body", id="post-body", width="100%", rows="4",
                    on_change=_TYPING,
                ),
                field_error(StoryState.post_errors, "body", "post-error"),
                field_error(StoryState.post_errors, "form", "post-error"),
                rx.button("Post", type="submit", loading=StoryState.posting, id="post-submit"),
                width="100%",
            ),
            on_submit=StoryState.submit_post,
            width="100%",
        ),
        rx.text(rx.link("Log in", href="/login"), " to join the discussion."),
    )


def _story() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.heading(StoryState.title, size=rx.breakpoints(initial="7", sm="8"), id="story-title", as_="h1",
                       min_width="0"),
            genre_badge(StoryState.genre),
            rx.cond(StoryState.status == "draft", rx.badge("Draft (only you see it)", color_scheme="amber")),
            align="center",
            wrap="wrap",
        ),
        rx.hstack(
            rx.text("by ", StoryState.author, color_scheme="gray"),
            rx.cond(
                StoryState.status == "published",
                rx.badge(
                    rx.icon("eye", size=14), "Read by ",
                    live_receipts.shown_reads(StoryState.reads, StoryState.current_id),
                    variant="soft", color_scheme="gray", id="read-count",
                ),
            ),
            rx.spacer(),
            # A draft has no room (its last values would be stale): nothing shown.
            rx.cond(
                StoryState.status == stories.PUBLISHED,
                presence_ui.readers(StoryRoom.readers, "reading now", id="story-readers"),
            ),
            width="100%",
            align="center",
            wrap="wrap",
        ),
        rx.text(StoryState.summary, style={"font_style": "italic"}),
        rx.text(StoryState.content, white_space="pre-wrap", id="story-content"),
        rx.divider(),
        _post_form(),
        rx.cond(
            StoryState.status == stories.PUBLISHED,
            presence_ui.typing_line(StoryRoom.typers, SessionState.username),
        ),
        rx.heading("Posts", size="4", as_="h2"),
        rx.vstack(rx.foreach(StoryState.posts, post_card), width="100%", id="story-posts"),
        load_more(StoryState.more_posts, StoryState.load_more_posts, StoryState.loading_more,
                  "Load more posts", id="more-story-posts"),
        width="100%",
        spacing="4",
    )


@rx.page(
    route="/community/story/[story_id]",
    title="Story · Fictures",
    on_load=[SessionState.check_login, StoryState.live_start, StoryState.load],
)
def story_page() -> rx.Component:
    return page(
        rx.cond(
            StoryState.loading,
            loading(),
            rx.cond(
                StoryState.found,
                _story(),
                rx.vstack(
                    rx.heading("Story not found", size="6", as_="h1"),
                    rx.link("Back to the community", href="/community"),
                    id="story-not-found",
                ),
            ),
        ),
        extra=live_indicator(StoryState),
    )
