"""/community/story/<id>: one story and its posts, with a form to write a post; live."""

from __future__ import annotations

from typing import Any

import reflex as rx
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fictures import db, feed, posts, ratelimit, rooms, stories, toasts
from fictures.components.cards import genre_badge, post_card
from fictures.components.forms import field_error
from fictures.components.layout import loading, page
from fictures.components.live import live_indicator
from fictures.errors import DomainError
from fictures.events.schema import PostCreated, PostDeleted, PostUpdated, StoryDeleted, StoryUpdated
from fictures.feed import PostCard
from fictures.forms import field_errors
from fictures.live import LiveState
from fictures.models import PostCreate, PostType, User
from fictures.state import SessionState


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


def _story_id(path: str) -> int:
    raw = path.rstrip("/").rpartition("/")[2]
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0


class StoryRoom(rooms.Room):
    """The room of a story page's tabs ("story:<id>"): how many tabs read each
    story (the admin page's "top stories by readers now" counts its tabs)."""

    @classmethod
    def room_name(cls, router: Any) -> str | None:
        story_id = _story_id(router.url.path)
        return f"story:{story_id}" if story_id > 0 else None


class StoryState(LiveState, rx.State):
    live_rooms = (StoryRoom,)

    current_id: int = 0
    found: bool = True
    loading: bool = True
    title: str = ""
    genre: str = ""
    summary: str = ""
    content: str = ""
    author: str = ""
    status: str = ""
    posts: list[PostCard] = []
    post_errors: dict[str, str] = {}
    post_type: str = PostType.discussion.value
    posting: bool = False

    @rx.event
    async def load(self):
        raw = self.router.url.path.rstrip("/").rpartition("/")[2]
        try:
            self.current_id = int(raw)
        except (TypeError, ValueError):
            self.current_id = 0
        session = await self.get_state(SessionState)
        viewer = await session._current_user()
        data = await run_in_threadpool(_load_story, self.current_id, viewer) if self.current_id > 0 else None
        self.found = data is not None
        if data:
            for key, value in data.items():
                setattr(self, key, value)
            self.posts = await run_in_threadpool(feed.story_post_cards, self.current_id)
        self.loading = False

    def live_reload(self):
        return StoryState.load

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
            yield rx.set_value("post-title", "")
            yield rx.set_value("post-body", "")
            yield toasts.success("Posted")
        finally:
            self.posting = False

    # -- live handlers: only this story's events matter ----------------------------

    def on_post_created(self, event: PostCreated):
        if event.story_id != self.current_id:
            return None
        card = feed.post_card(event.post_id, event.id)
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
            return toasts.warning("This story was deleted by its author")
        return None



def _post_form() -> rx.Component:
    return rx.cond(
        SessionState.logged_in,
        rx.form(
            rx.vstack(
                rx.heading("Write a post", size="3"),
                rx.select(
                    [t.value for t in PostType],
                    value=StoryState.post_type,
                    on_change=StoryState.set_post_type,
                    id="post-type",
                ),
                rx.input(placeholder="Title", name="title", id="post-title", width="100%"),
                field_error(StoryState.post_errors, "title", "post-error"),
                rx.text_area(placeholder="Say something…", name="body", id="post-body", width="100%", rows="4"),
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
            rx.heading(StoryState.title, size="8", id="story-title"),
            genre_badge(StoryState.genre),
            rx.cond(StoryState.status == "draft", rx.badge("Draft (only you see it)", color_scheme="amber")),
            align="center",
        ),
        rx.text("by ", StoryState.author, color_scheme="gray"),
        rx.text(StoryState.summary, style={"font_style": "italic"}),
        rx.text(StoryState.content, white_space="pre-wrap", id="story-content"),
        rx.divider(),
        _post_form(),
        rx.heading("Posts", size="4"),
        rx.vstack(rx.foreach(StoryState.posts, post_card), width="100%", id="story-posts"),
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
                    rx.heading("Story not found", size="6"),
                    rx.link("Back to the community", href="/community"),
                    id="story-not-found",
                ),
            ),
        ),
        extra=live_indicator(StoryState),
    )
