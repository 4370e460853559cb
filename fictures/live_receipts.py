"""Live read receipts ("Read by N") and seen stories, across tabs, workers and instances.

**Read counts.** A reader opening a story (`story_opened`) is recorded in the
database (fictures.reads), then announced with one ephemeral signal
(`story-read`: story, author, readers now). Every process hears it once and,
only for rooms that have tabs here, sends ONE frame per room:

- `ReadsRoom`, room `reads:<story id>`: every tab on that story's page;
- `WriterRoom`, room `writer:<author id>`: the author's /writing tabs (the room
  holds the count of each of their stories read since its first tab joined).

Nothing runs per tab. Pages show the larger of the count they loaded from the
database and the room's (counts only grow), so a tab that joins between a
frame and the next, or a process whose room is new, is never behind the
database; a frame only ever raises what the page shows.

Why a signal and not a durable event: the reads themselves are durable (rows
in `StoryRead`); what travels is only "this count is now N", which the
database can always recompute. A lost signal (Redis or a subscription down)
is repaired when the subscription is back (`_resync` recounts every room with
tabs here) and on every page load. Durable events would add an outbox row and
a stream entry per first read, far more often than anything is published,
crowd the 10,000 events of replay history that reconnecting tabs and SSE
clients need, and tell every SSE client who reads what.

**Seen stories.** A logged-in reader whose card was in view for a second, or
who opened the story (`story_seen`), has it recorded (`SeenStory`), and one
`story-seen` signal clears its NEW badge in that account's other /community
tabs: each process runs a hook in its own tabs of that account (a handful, so
per tab is fine here), found in `_viewers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import reflex as rx

from fictures import db, ratelimit, reads, rooms, signals, visits
from fictures.errors import NotFound, TooManyRequests
from fictures.live import TabHub
from fictures.models import MAX_ROW_ID, User

logger = logging.getLogger(__name__)

READ = "story-read"
SEEN = "story-seen"
READS_ROOM = "reads:"
WRITER_ROOM = "writer:"
COMMUNITY_ROOM = "community"


@dataclasses.dataclass(frozen=True)
class ReadCount:
    """A story's readers, as a room value: which story, so a tab that moved on
    to another story never shows the previous one's count."""

    story_id: int = 0
    reads: int = 0


def story_id_from_path(path: str) -> int:
    """The story of a `/community/story/<id>` path (0: none)."""
    head, _, raw = path.rstrip("/").rpartition("/")
    if head != "/community/story" or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return 0
    story_id = int(raw)
    return story_id if 1 <= story_id <= MAX_ROW_ID else 0


def reads_room(story_id: int) -> str:
    return f"{READS_ROOM}{story_id}"


def writer_room(author_id: int) -> str:
    return f"{WRITER_ROOM}{author_id}"


class ReadsRoom(rooms.Room):
    """The story page's read count (room `reads:<story id>`)."""

    @classmethod
    def room_name(cls, router: Any) -> str | None:
        story_id = story_id_from_path(router.url.path)
        return reads_room(story_id) if story_id else None

    count = rooms.value("count", ReadCount, ReadCount())


class WriterRoom(rooms.Room):
    """An author's read counts on /writing (room `writer:<author id>`): story id
    (as text: a JSON object's key) -> readers, for the stories read since the
    room's first tab here joined. The writing page names the room from its
    logged-in author (`WritingState._live_room_names`), not from the URL, so
    hydration reads the default and the page falls back on what it loaded."""

    @classmethod
    def room_name(cls, router: Any) -> str | None:
        return None

    reads = rooms.value("reads", dict[str, int], {})


def shown_reads(loaded: rx.Var, story_id: rx.Var) -> rx.Var:
    """The story page's "Read by N": the room's count for this story when it is
    above what the page loaded (computed in the browser)."""
    live = ReadsRoom.count
    return rx.cond((live.story_id == story_id) & (live.reads > loaded), live.reads, loaded)


def shown_author_reads(loaded: rx.Var, story_id: rx.Var) -> rx.Var:
    """/writing's "Read by N" of one story (the author's room, else what the page loaded)."""
    live = WriterRoom.reads[story_id.to_string()]
    return rx.cond(live > loaded, live, loaded)


# ------------------------------------------------------------------ reads


def _lookup(story_id: int, browser_id: str) -> tuple[reads.ReadResult, bool] | None:
    """A story's readers, and whether this browser is one (None: not a published story)."""
    with db.session() as s:
        try:
            result = reads.get_reads(session=s, story_id=story_id, viewer=None)
        except NotFound:
            return None
        return result, reads.has_read(session=s, story_id=story_id, viewer=None, browser_id=browser_id)


def _record(story_id: int, viewer: User | None, browser_id: str | None) -> reads.ReadResult | None:
    with db.session() as s:
        try:
            return reads.record_read(session=s, story_id=story_id, viewer=viewer, browser_id=browser_id)
        except NotFound:
            return None


def _mark_seen(user_id: int, story_id: int) -> bool:
    with db.session() as s:
        return visits.mark_seen(session=s, user_id=user_id, story_id=story_id)


async def story_opened(
    *, story_id: int, viewer: User | None, browser_id: str, address: str
) -> reads.ReadResult | None:
    """`viewer` (or, logged out, the browser `browser_id`) opened a story page:
    count the read, tell every process, and mark the story seen for the
    account. Returns the story's readers now (None: not a story they may read).

    A browser that is not logged in is a new reader only within the
    per-address limit (a client can make up browser ids without end); over
    it, the page still opens, uncounted."""
    if viewer is None:
        looked = await asyncio.to_thread(_lookup, story_id, browser_id)
        if looked is None or looked[1]:
            return None if looked is None else looked[0]
        try:
            await ratelimit.check_anonymous_read(address)
        except TooManyRequests:
            return looked[0]
    result = await asyncio.to_thread(_record, story_id, viewer, browser_id)
    if result is None:
        return None
    if result.counted:
        logger.info("Story %s has a new reader (%d now)", result.story_id, result.reads)
        await signals.hub().send(READ, story_id=result.story_id, author_id=result.author_id, reads=result.reads)
    if viewer is not None and result.published and viewer.id != result.author_id:
        with contextlib.suppress(NotFound):  # unpublished this instant
            await story_seen(user_id=viewer.id, story_id=result.story_id)
    return result


def _ints(data: dict[str, Any], *names: str) -> tuple[int, ...] | None:
    values = tuple(data.get(name) for name in names)
    if all(type(v) is int and 0 < v <= 2**63 for v in values):
        return values  # type: ignore[return-value]
    logger.warning("Ignored a malformed %s signal: %.200r", names, data)
    return None


def _hub() -> TabHub | None:
    return TabHub._current


async def show_reads(story_id: int, author_id: int, count: int) -> None:
    """Show `count` readers of a story in this process's rooms that show it
    (one frame per room; never lower than what a room already shows)."""
    hub = _hub()
    if hub is None:
        return
    tabs = 0
    room = reads_room(story_id)
    if hub.room_size(room):
        shown = rooms.current(room, "count", ReadCount())
        if shown.story_id != story_id or count > shown.reads:
            tabs += await rooms.publish(ReadsRoom, room, count=ReadCount(story_id, count))
    room = writer_room(author_id)
    if hub.room_size(room):
        shown_counts: dict[str, int] = rooms.current(room, "reads", {})
        if count > shown_counts.get(str(story_id), 0):
            tabs += await rooms.publish(WriterRoom, room, reads={**shown_counts, str(story_id): count})
    if tabs:
        logger.info("Read by %d: story %s shown in %d tabs here", count, story_id, tabs)


async def _on_read(data: dict[str, Any]) -> None:
    if (values := _ints(data, "story_id", "author_id", "reads")) is not None:
        await show_reads(*values)


def _recount(story_ids: list[int], author_ids: list[int]) -> tuple[dict[int, int], dict[int, dict[int, int]]]:
    with db.session() as s:
        return reads.counts(s, story_ids), {a: reads.counts_for_author(s, a) for a in author_ids}


async def _resync() -> None:
    """Signals sent while this process was not subscribed are lost: recount
    every read room that has tabs here, from the database."""
    hub = _hub()
    if hub is None:
        return
    names = {room for page in list(hub.page_rooms.values()) for room in page}
    story_ids = [int(r[len(READS_ROOM):]) for r in names if r.startswith(READS_ROOM)]
    author_ids = [int(r[len(WRITER_ROOM):]) for r in names if r.startswith(WRITER_ROOM)]
    if not story_ids and not author_ids:
        return
    story_counts, author_counts = await asyncio.to_thread(_recount, story_ids, author_ids)
    for story_id in story_ids:
        if hub.room_size(room := reads_room(story_id)):
            await rooms.publish(ReadsRoom, room, count=ReadCount(story_id, story_counts.get(story_id, 0)))
    for author_id, counts in author_counts.items():
        if hub.room_size(room := writer_room(author_id)):
            await rooms.publish(WriterRoom, room, reads={str(k): v for k, v in counts.items()})
    logger.info("Read counts recounted for %d story rooms and %d writer rooms", len(story_ids), len(author_ids))


# ------------------------------------------------------------------ seen stories

# user id -> tokens of this process's /community tabs logged in as them.
_viewers: defaultdict[int, set[str]] = defaultdict(set)
_viewer_of: dict[str, int] = {}


def watch_seen(token: str, user_id: int) -> None:
    """This process's tab `token` shows /community to `user_id` (0: logged out)."""
    previous = _viewer_of.pop(token, None)
    if previous is not None:
        _viewers[previous].discard(token)
        if not _viewers[previous]:
            del _viewers[previous]
    if user_id:
        _viewer_of[token] = user_id
        _viewers[user_id].add(token)


async def story_seen(*, user_id: int, story_id: int) -> bool:
    """The account has seen a published story: record it once and clear its badge
    in the account's other tabs. NotFound for anything but a published story."""
    first = await asyncio.to_thread(_mark_seen, user_id, story_id)
    if first:
        await signals.hub().send(SEEN, user_id=user_id, story_id=story_id)
    return first


def _apply_seen(state: Any, user_id: int, story_id: int) -> None:
    hook = getattr(state, "_seen_elsewhere", None)
    if hook is not None:  # the tab is still on /community
        hook(user_id, story_id)


async def _on_seen(data: dict[str, Any]) -> None:
    if (values := _ints(data, "user_id", "story_id")) is None or (hub := _hub()) is None:
        return
    user_id, story_id = values
    for token in list(_viewers.get(user_id, ())):
        if not hub.run_hook(token, lambda state: _apply_seen(state, user_id, story_id)):
            watch_seen(token, 0)


# ------------------------------------------------------------------ rooms and the process


async def _rooms_changed(token: str, entered: frozenset[str], left: frozenset[str]) -> None:
    hub = _hub()
    if COMMUNITY_ROOM in left:
        watch_seen(token, 0)
    for room in left:
        # Nobody here shows it any more: drop its values, which no signal would
        # keep current (they are rebuilt when a tab joins again).
        if room.startswith((READS_ROOM, WRITER_ROOM)) and (
            hub is None or (not hub.room_size(room) and not hub.in_room(room))
        ):
            rooms.forget(room)


_registered: set[int] = set()


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Listen for read and seen signals (registered after the tab hub starts)."""
    hub = signals.hub()
    if id(hub) not in _registered:
        _registered.add(id(hub))
        hub.on(READ, _on_read)
        hub.on(SEEN, _on_seen)
        hub.on_resync(_resync)
    TabHub.current().on_rooms_changed(_rooms_changed)
    yield
    _viewers.clear()
    _viewer_of.clear()
