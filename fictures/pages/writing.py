"""/writing: an author's own stories, drafts and published; create, edit, publish, delete."""

from __future__ import annotations

import dataclasses

import reflex as rx
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fictures import db, feed, live_receipts, reads, stories, toasts
from fictures.components.forms import field_error, label
from fictures.components.layout import loading, page
from fictures.components.live import live_indicator
from fictures.components.when import when
from fictures.errors import DomainError
from fictures.forms import field_errors
from fictures.live import LiveState
from fictures.models import RowId, StoryCreate, StoryStatus, StoryUpdate, User
from fictures.settings import GENRES
from fictures.state import SessionState

NO_GENRE = "none"


@dataclasses.dataclass(frozen=True)
class MyStory:
    id: int = 0
    title: str = ""
    genre: str = ""
    summary: str = ""
    content: str = ""
    status: str = ""
    updated_at: str = ""
    # Readers of a published story, when the page loaded (live: WriterRoom).
    reads: int = 0


def _mine(user: User) -> list[MyStory]:
    with db.session() as s:
        counts = reads.counts_for_author(s, user.id)
        return [
            MyStory(
                id=st.id,
                title=st.title,
                genre=st.genre or "",
                summary=st.summary,
                content=st.content,
                status=st.status,
                updated_at=feed.iso(st.updated_at),
                reads=counts.get(st.id, 0),
            )
            for st in stories.list_by_author(session=s, author=user)
        ]


def _save(user: User, story_id: int, data: StoryCreate | StoryUpdate, status: StoryStatus | None) -> MyStory:
    """Create, or edit (and publish or unpublish, `status`) in one transaction."""
    with db.session() as s:
        if story_id:
            story = stories.update_story(session=s, author=user, story_id=story_id, data=data, status=status)
        else:
            story = stories.create_story(session=s, author=user, data=data)
        return MyStory(id=story.id, status=story.status)


def _set_visibility(user: User, story_id: int, status: StoryStatus) -> None:
    with db.session() as s:
        stories.set_visibility(session=s, author=user, story_id=story_id, status=status)


def _delete(user: User, story_id: int) -> None:
    with db.session() as s:
        stories.delete_story(session=s, author=user, story_id=story_id)


class WritingState(LiveState, rx.State):
    """The author's stories and the editor. Live only for read counts: the page
    handles no community event, and its tabs join the author's WriterRoom."""

    mine: list[MyStory] = []
    loading: bool = True
    # Whose text the editor holds: another user's never survives a load.
    editor_user_id: int = 0
    # The editor: 0 while writing a new story; the edited story's status ("draft"
    # or "published": its buttons say what saving does).
    editing_id: int = 0
    editing_status: str = ""
    title: str = ""
    genre: str = NO_GENRE
    summary: str = ""
    content: str = ""
    errors: dict[str, str] = {}
    saving: bool = False

    async def _user(self) -> User | None:
        return await (await self.get_state(SessionState))._current_user()

    @rx.event
    async def load(self):
        user = await self._user()
        if user is None or user.id != self.editor_user_id:
            # Logged out, or someone else's editor: start empty (unsaved text of
            # the same user survives a reconnect, which runs this load again).
            self._clear_editor()
            self.editor_user_id = user.id if user else 0
        if user is None:
            self.mine, self.loading = [], True
            return
        self.mine = await run_in_threadpool(_mine, user)
        self.loading = False

    def live_reload(self):
        return WritingState.load

    def _live_room_names(self) -> list[str]:
        # The author's room, named from the account `load` checked (a URL
        # cannot name it: /writing is everyone's own page).
        own = [live_receipts.writer_room(self.editor_user_id)] if self.editor_user_id else []
        return [*super()._live_room_names(), *own]

    def _clear_editor(self) -> None:
        self.editing_id, self.title, self.genre, self.summary, self.content = 0, "", NO_GENRE, "", ""
        self.editing_status = ""
        self.errors = {}

    @rx.event
    def new_story(self):
        self._clear_editor()

    @rx.event
    def edit(self, story_id: RowId):
        story = next((s for s in self.mine if s.id == story_id), None)
        if story is None:
            return
        self.editing_id, self.editing_status = story.id, story.status
        self.title, self.summary, self.content = story.title, story.summary, story.content
        self.genre = story.genre or NO_GENRE
        self.errors = {}

    @rx.event
    def set_title(self, value: str):
        self.title = value

    @rx.event
    def set_genre(self, value: str):
        if value == NO_GENRE or value in GENRES:
            self.genre = value

    @rx.event
    def set_summary(self, value: str):
        self.summary = value

    @rx.event
    def set_content(self, value: str):
        self.content = value

    @rx.event
    async def save(self, publish: bool = False):
        """Save the editor: a new story or a draft stays a draft, or is published
        (`publish`); a published story is updated and stays published."""
        status = StoryStatus.published if publish else None
        async for update in self._save_editor(status, "Published" if publish else "Saved"):
            yield update

    @rx.event
    async def save_as_draft(self):
        """Save the edits of a published story as a draft: it is unpublished (the
        page asks first)."""
        if not self.editing_id:
            return
        async for update in self._save_editor(StoryStatus.draft, "Saved as a draft: readers no longer see it"):
            yield update

    async def _save_editor(self, status: StoryStatus | None, done: str):
        user = await self._user()
        if user is None:
            yield rx.redirect("/login")
            return
        fields = {
            "title": self.title,
            "genre": None if self.genre == NO_GENRE else self.genre,
            "summary": self.summary,
            "content": self.content,
        }
        try:
            if self.editing_id:
                data = StoryUpdate.model_validate(fields)
            else:
                data = StoryCreate.model_validate({**fields, "status": (status or StoryStatus.draft).value})
        except ValidationError as exc:
            self.errors = field_errors(exc)
            return
        # Shown (the buttons spin and are disabled) before the save starts.
        self.saving = True
        yield
        try:
            saved = await run_in_threadpool(_save, user, self.editing_id, data, status)
            self.mine = await run_in_threadpool(_mine, user)
        except DomainError as exc:
            self.errors = {"form": exc.detail}
            return
        finally:
            self.saving = False
        self.errors = {}
        self.editing_id, self.editing_status = saved.id, saved.status
        yield toasts.success(done)

    @rx.event
    async def toggle_visibility(self, story_id: RowId):
        user = await self._user()
        if user is None:
            return rx.redirect("/login")
        story = next((s for s in self.mine if s.id == story_id), None)
        if story is None:
            return None
        target = StoryStatus.draft if story.status == "published" else StoryStatus.published
        try:
            await run_in_threadpool(_set_visibility, user, story_id, target)
        except DomainError as exc:
            return toasts.error(exc.detail)
        self.mine = await run_in_threadpool(_mine, user)
        return toasts.success("Published" if target == StoryStatus.published else "Unpublished")

    @rx.event
    async def delete(self, story_id: RowId):
        user = await self._user()
        if user is None:
            return rx.redirect("/login")
        try:
            await run_in_threadpool(_delete, user, story_id)
        except DomainError as exc:
            return toasts.error(exc.detail)
        if self.editing_id == story_id:
            self._clear_editor()
        self.mine = await run_in_threadpool(_mine, user)
        return toasts.success("Deleted")



def _confirm_unpublish(trigger: rx.Component, on_confirm, confirm_id: str) -> rx.Component:
    """Unpublishing takes the story away from its readers: asked first."""
    return rx.alert_dialog.root(
        rx.alert_dialog.trigger(trigger),
        rx.alert_dialog.content(
            rx.alert_dialog.title("Unpublish this story?"),
            rx.alert_dialog.description(
                "Readers will no longer see it, and its page and posts are hidden until you publish it again."
            ),
            rx.hstack(
                rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray",
                                                 class_name="cancel-unpublish")),
                rx.alert_dialog.action(
                    rx.button("Unpublish", color_scheme="red", on_click=on_confirm, id=confirm_id,
                              class_name="confirm-unpublish"),
                ),
                justify="end",
                spacing="3",
                margin_top="1em",
            ),
        ),
    )


def _editor_buttons() -> rx.Component:
    """What saving does, in the buttons' words: a new story or a draft is saved as
    a draft or published; a published story is updated (it stays published), or
    saved as a draft, which unpublishes it (confirmed first). While saving, every
    button shows it and none can be pressed again."""
    saving = WritingState.saving
    published = WritingState.editing_status == "published"
    return rx.hstack(
        rx.cond(
            published,
            rx.fragment(
                rx.button("Update story", on_click=WritingState.save(False), loading=saving, disabled=saving,
                          id="update-story"),
                _confirm_unpublish(
                    rx.button("Save as draft…", loading=saving, disabled=saving, variant="soft",
                              color_scheme="gray", id="save-unpublish"),
                    WritingState.save_as_draft,
                    "confirm-save-unpublish",
                ),
            ),
            rx.fragment(
                rx.button("Save draft", on_click=WritingState.save(False), loading=saving, disabled=saving,
                          variant="soft", id="save-draft"),
                rx.button("Save & publish", on_click=WritingState.save(True), loading=saving, disabled=saving,
                          id="save-publish"),
            ),
        ),
        rx.button("New", on_click=WritingState.new_story, variant="ghost", disabled=saving, id="new-story"),
        rx.cond(saving, rx.text("Saving…", size="2", color_scheme="gray", id="saving-status")),
        wrap="wrap",
        align="center",
        # Screen readers hear "Saving…" too.
        aria_live="polite",
        aria_busy=saving,
    )


def _editor() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.heading(rx.cond(WritingState.editing_id == 0, "New story", "Edit story"), size="4", as_="h2"),
            label("Title", "story-title-input"),
            rx.input(
                value=WritingState.title, on_change=WritingState.set_title,
                placeholder="Title", id="story-title-input", width="100%",
            ),
            field_error(WritingState.errors, "title"),
            label("Genre", "story-genre-input"),
            rx.select(
                [NO_GENRE, *GENRES], value=WritingState.genre, on_change=WritingState.set_genre,
                id="story-genre-input",
            ),
            field_error(WritingState.errors, "genre"),
            label("Summary", "story-summary-input"),
            rx.text_area(
                value=WritingState.summary, on_change=WritingState.set_summary,
                placeholder="Up to 1,000 characters", id="story-summary-input", width="100%",
            ),
            field_error(WritingState.errors, "summary"),
            label("Story", "story-content-input"),
            rx.text_area(
                value=WritingState.content, on_change=WritingState.set_content,
                placeholder="Once upon a time…", id="story-content-input", width="100%", rows="10",
            ),
            field_error(WritingState.errors, "content"),
            field_error(WritingState.errors, "form"),
            _editor_buttons(),
            width="100%",
        ),
        width="100%",
    )


def _row(story: MyStory) -> rx.Component:
    published = story.status == "published"
    return rx.card(
        rx.hstack(
            rx.vstack(
                rx.text(story.title, weight="bold", class_name="my-story-title"),
                rx.hstack(
                    rx.badge(story.status, color_scheme=rx.cond(published, "green", "amber")),
                    rx.text("edited ", when(story.updated_at), size="1", color_scheme="gray"),
                    rx.cond(
                        published,
                        rx.text(
                            "Read by ", live_receipts.shown_author_reads(story.reads, story.id),
                            size="1", color_scheme="gray", class_name="read-count",
                        ),
                    ),
                    align="center",
                    wrap="wrap",
                ),
                spacing="1",
                min_width="0",
            ),
            rx.spacer(),
            rx.button("Edit", on_click=WritingState.edit(story.id), size="1", variant="soft",
                      class_name="edit-story"),
            rx.cond(
                published,
                _confirm_unpublish(
                    rx.button("Unpublish", size="1", color_scheme="gray", class_name="toggle-visibility"),
                    WritingState.toggle_visibility(story.id),
                    "confirm-unpublish-" + story.id.to_string(),
                ),
                rx.button("Publish", on_click=WritingState.toggle_visibility(story.id), size="1",
                          color_scheme="green", class_name="toggle-visibility"),
            ),
            rx.alert_dialog.root(
                rx.alert_dialog.trigger(
                    rx.button("Delete", size="1", color_scheme="red", variant="soft", class_name="delete-story"),
                ),
                rx.alert_dialog.content(
                    rx.alert_dialog.title("Delete this story?"),
                    rx.alert_dialog.description(
                        "“", story.title, "” and its posts will be gone for good."
                    ),
                    rx.hstack(
                        rx.alert_dialog.cancel(rx.button("Cancel", variant="soft", color_scheme="gray")),
                        rx.alert_dialog.action(
                            rx.button("Delete", color_scheme="red", on_click=WritingState.delete(story.id),
                                      class_name="confirm-delete"),
                        ),
                        justify="end",
                        spacing="3",
                    ),
                ),
            ),
            align="center",
            width="100%",
            wrap="wrap",
        ),
        id="my-story-" + story.id.to_string(),
        width="100%",
    )


@rx.page(
    route="/writing",
    title="Writing · Fictures",
    on_load=[SessionState.require_login, WritingState.load, WritingState.live_start],
)
def writing() -> rx.Component:
    return page(
        rx.heading("Your writing", size="7", as_="h1"),
        rx.cond(
            SessionState.logged_in,
            rx.grid(
                _editor(),
                rx.vstack(
                    rx.heading("Your stories", size="4", as_="h2"),
                    rx.cond(
                        WritingState.loading,
                        loading(),
                        rx.vstack(rx.foreach(WritingState.mine, _row), width="100%", id="my-stories"),
                    ),
                    width="100%",
                ),
                columns=rx.breakpoints(initial="1", md="2"),
                spacing="5",
                width="100%",
            ),
            loading(),
        ),
        extra=live_indicator(WritingState),
    )
