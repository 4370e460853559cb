"""The SSE stream at /api/community/events, against the running app and its real Redis."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from httpx_sse import connect_sse
from playwright.sync_api import expect

from tests.e2e.conftest import SSE_MAX_PER_IP, AppServer, http

EVENTS = "/api/community/events"


@dataclass
class Received:
    event: str
    id: int | str | None  # "<public>.<private>" on a stream with private events
    data: dict


def _event_id(raw: str) -> int | str | None:
    if not raw:
        return None
    return raw if "." in raw else int(raw)


@dataclass
class StreamReader:
    """Reads one SSE stream in a background thread."""

    url: str
    params: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    events: list[Received] = field(default_factory=list)
    status: int | None = None
    response_headers: httpx.Headers | None = None
    closed: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _client: httpx.Client | None = None

    def start(self) -> StreamReader:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.wait(lambda: self.status is not None, what="the response")
        return self

    def _run(self) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=60))
        try:
            with connect_sse(self._client, "GET", self.url, params=self.params, headers=self.headers) as source:
                with self._cond:
                    self.status = source.response.status_code
                    self.response_headers = source.response.headers
                    self._cond.notify_all()
                if self.status != 200:
                    return
                for sse in source.iter_sse():
                    if self._stop.is_set():
                        return
                    if not sse.data:
                        continue  # a keep-alive comment
                    item = Received(sse.event, _event_id(sse.id), json.loads(sse.data))
                    with self._cond:
                        self.events.append(item)
                        self._cond.notify_all()
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            with self._cond:
                self.closed = True
                if self.status is None:
                    self.status = -1
                self._cond.notify_all()
            self._client.close()

    def stop(self) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait(self, predicate, *, timeout: float = 10.0, what: str = "condition") -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                seen = [(e.event, e.id, str(e.data)[:120]) for e in self.events[-5:]]
                raise AssertionError(f"timed out waiting for {what}; last events: {seen}")

    def of(self, *kinds: str) -> list[Received]:
        return [e for e in self.events if e.event in kinds]

    def wait_for_event(self, kind: str, where=lambda data: True, *, timeout: float = 10.0) -> Received:
        self.wait(lambda: any(e.event == kind and where(e.data) for e in self.events),
                  timeout=timeout, what=f"a {kind} event")
        return next(e for e in self.events if e.event == kind and where(e.data))

    def ids(self) -> list[int]:
        return [e.id for e in self.events if e.id is not None]


@contextmanager
def stream(app_server: AppServer, **kwargs) -> Iterator[StreamReader]:
    reader = StreamReader(f"{app_server.url}{EVENTS}", **kwargs).start()
    try:
        yield reader
    finally:
        reader.stop()


def _connected(reader: StreamReader) -> None:
    reader.wait_for_event("connected")


def test_stream_headers_connected_and_ordered_events(app_server: AppServer):
    _, token = app_server.register()
    with stream(app_server) as reader:
        assert reader.status == 200
        assert reader.response_headers["content-type"].startswith("text/event-stream")
        assert reader.response_headers["cache-control"] == "no-cache"
        assert reader.response_headers["x-accel-buffering"] == "no"
        _connected(reader)
        created = [app_server.create_story(token, f"Ordered {i}", genre="mystery") for i in range(5)]
        reader.wait(lambda: len(reader.of("story:published")) >= 5, what="five events")
        published = [e for e in reader.of("story:published") if e.data["storyId"] in {s["id"] for s in created}]
        assert [e.data["storyId"] for e in published] == [s["id"] for s in created]
        ids = [e.id for e in published]
        assert ids == sorted(ids) and len(set(ids)) == 5
        for e in published:
            assert e.id == e.data["id"]
            assert e.data["genre"] == "mystery" and e.data["title"].startswith("Ordered")
            assert "T" in e.data["timestamp"]


def test_the_stream_answers_cors_and_request_ids_as_every_route_does(app_server: AppServer):
    # The stream is served ahead of the middleware (fictures.fast_paths):
    # what a client sees of CORS and request ids must not differ from other routes.
    headers = {"Origin": "https://elsewhere.example", "X-Request-ID": "stream-e2e-0001"}
    other = http.get(f"{app_server.url}/api/health/live", headers=headers, timeout=10)
    with http.stream("GET", f"{app_server.url}{EVENTS}", headers=headers, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "stream-e2e-0001"
        cors = {k: v for k, v in response.headers.items() if k.startswith("access-control-")}
        assert cors == {k: v for k, v in other.headers.items() if k.startswith("access-control-")}
        assert next(response.iter_lines()) == "event: connected"


def test_keepalive_ping_comments(app_server: AppServer):
    with http.stream("GET", f"{app_server.url}{EVENTS}", timeout=10) as response:
        lines = []
        started = time.monotonic()
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith(": ping") or time.monotonic() - started > 5:
                break
    assert any(line.startswith(": ping") for line in lines), lines


def test_channel_and_story_filters(app_server: AppServer):
    _, token = app_server.register()
    a = app_server.create_story(token, "Filter A")
    b = app_server.create_story(token, "Filter B")
    with stream(app_server, params={"channels": "post:created"}) as posts_only, \
            stream(app_server, params={"story_id": str(a["id"])}) as story_a:
        _connected(posts_only)
        _connected(story_a)
        for story in (b, a):
            r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token,
                               json={"title": f"On {story['title']}", "body": "Nice."})
            assert r.status_code == 201
        assert app_server.api("PATCH", f"/api/stories/{b['id']}", token, json={"title": "B2"}).status_code == 200
        assert app_server.api("PATCH", f"/api/stories/{a['id']}", token, json={"title": "A2"}).status_code == 200

        posts_only.wait(lambda: len(posts_only.of("post:created")) >= 2, what="two posts")
        story_a.wait_for_event("story:updated")
        assert {e.event for e in posts_only.events} == {"connected", "post:created"}
        assert [e.data["storyId"] for e in posts_only.of("post:created")] == [b["id"], a["id"]]
        assert {e.data["storyId"] for e in story_a.events if e.id} == {a["id"]}
        assert [e.event for e in story_a.events if e.id] == ["post:created", "story:updated"]


@pytest.mark.parametrize(
    ("params", "headers", "status", "needle"),
    [
        ({"channels": "story:published,story:exploded"}, {}, 422, "story:exploded"),
        ({"story_id": "abc"}, {}, 422, "story_id"),
        ({"last_event_id": "12x"}, {}, 400, "malformed event id"),
        ({}, {"Last-Event-ID": "-5"}, 400, "malformed event id"),
        ({"last_event_id": "4.5.6"}, {}, 400, "malformed event id"),
        ({}, {"Last-Event-ID": "4."}, 400, "malformed event id"),
        ({"channels": "private:draft"}, {}, 401, "bearer token"),
        ({}, {"Authorization": "Bearer not-a-token"}, 401, "invalid bearer token"),
    ],
)
def test_bad_requests_get_clear_errors(app_server: AppServer, params, headers, status, needle):
    r = http.get(f"{app_server.url}{EVENTS}", params=params, headers=headers, timeout=10)
    assert r.status_code == status
    assert needle in r.json()["detail"]


def test_resume_seam_has_no_gap_and_no_duplicate(app_server: AppServer):
    """Publish continuously while a client drops and resumes with Last-Event-ID."""
    _, token = app_server.register()
    story = app_server.create_story(token, "Seam")
    total = 120
    done = threading.Event()

    def publish() -> None:
        for i in range(total):
            r = app_server.api("PATCH", f"/api/stories/{story['id']}", token, json={"summary": f"rev {i}"})
            assert r.status_code == 200
        done.set()

    mine = {"story_id": str(story["id"]), "channels": "story:updated"}
    with stream(app_server, params=mine) as reference:
        _connected(reference)
        first = StreamReader(f"{app_server.url}{EVENTS}", params=mine).start()
        _connected(first)
        publisher = threading.Thread(target=publish)
        publisher.start()
        first.wait(lambda: len(first.of("story:updated")) >= 20, what="twenty events")
        first.stop()
        last = first.ids()[-1]
        # Stay away while ten more events are published.
        reference.wait(lambda: len(reference.ids()) >= len(first.ids()) + 10, what="events while away")
        with stream(app_server, params=mine, headers={"Last-Event-ID": str(last)}) as resumed:
            publisher.join(timeout=120)
            assert done.is_set()
            reference.wait(lambda: len(reference.of("story:updated")) >= total, timeout=30, what="all events")
            expected = reference.ids()
            resumed.wait(lambda: resumed.ids() and resumed.ids()[-1] == expected[-1], timeout=30,
                         what="the resumed stream to reach the end")
        got = first.ids() + resumed.ids()
    missing = sorted(set(expected) - set(got))
    duplicates = len(got) - len(set(got))
    print(f"seam: {len(expected)} events, resumed after #{last}: missing={len(missing)} duplicates={duplicates}")
    assert len(expected) == total
    assert got == expected, f"missing {missing}, duplicates {duplicates}"


def test_too_old_or_future_id_gets_reset(app_server: AppServer):
    _, token = app_server.register()
    with stream(app_server, params={"last_event_id": str(10**15)}) as future:
        reset = future.wait_for_event("reset")
        assert reset.data["reason"] == "history"
        # After a reset the stream carries on live.
        story = app_server.create_story(token, "After the reset")
        future.wait_for_event("story:published", lambda d: d["storyId"] == story["id"])

    # Trim the retained history (as MAXLEN does over time): an old id is now too old.
    app_server.create_story(token, "Before trimming")
    r = redis.Redis.from_url(app_server.redis.url)
    try:
        r.xtrim(app_server.stream_key, maxlen=0)
    finally:
        r.close()
    app_server.create_story(token, "After trimming")
    with stream(app_server, params={"last_event_id": "1"}) as old:
        assert old.wait_for_event("reset").data["reason"] == "history"


def test_per_ip_limit_is_429(app_server: AppServer):
    readers = [StreamReader(f"{app_server.url}{EVENTS}").start() for _ in range(SSE_MAX_PER_IP)]
    try:
        for reader in readers:
            assert reader.status == 200
            _connected(reader)
        r = http.get(f"{app_server.url}{EVENTS}", timeout=10)
        assert r.status_code == 429
        assert f"limit {SSE_MAX_PER_IP}" in r.json()["detail"]
        readers.pop().stop()
        deadline = time.monotonic() + 10
        while True:
            with stream(app_server) as again:
                if again.status == 200:
                    break
            assert time.monotonic() < deadline, "a freed slot was never reusable"
            time.sleep(0.1)
    finally:
        for reader in readers:
            reader.stop()


def test_private_draft_events_only_for_their_author(app_server: AppServer):
    _, author = app_server.register()
    _, other = app_server.register()
    with stream(app_server) as anonymous, \
            stream(app_server, headers={"Authorization": f"Bearer {other}"}) as someone_else, \
            stream(app_server, headers={"Authorization": f"Bearer {author}"}) as own:
        for reader in (anonymous, someone_else, own):
            _connected(reader)
        draft = app_server.create_story(author, "Secret Draft Title", status="draft")
        app_server.api("PATCH", f"/api/stories/{draft['id']}", author, json={"title": "Still Secret"})
        marker = app_server.create_story(author, "Public marker")
        own.wait(lambda: len(own.of("private:draft")) >= 2, what="the author's private events")
        for reader in (anonymous, someone_else):
            reader.wait_for_event("story:published", lambda d: d["storyId"] == marker["id"])
            assert not reader.of("private:draft")
            assert all(e.data.get("storyId") != draft["id"] for e in reader.events if e.id)
            assert "Secret" not in json.dumps([e.data for e in reader.events])
        assert [e.data["action"] for e in own.of("private:draft")] == ["created", "updated"]


def test_authenticated_stream_resumes_both_sequences_from_a_two_part_id(app_server: AppServer):
    """Drafts have their own id sequence: public ids show no gap where a draft changed,
    and the author's stream, which gets both, resumes each after its part of the id."""
    _, author = app_server.register()
    _, other = app_server.register()
    auth = {"Authorization": f"Bearer {author}"}

    def draft_event(story: dict, action: str):
        return lambda d: d["storyId"] == story["id"] and d["action"] == action

    with stream(app_server, headers=auth) as reference, stream(app_server) as anonymous:
        _connected(reference)
        _connected(anonymous)
        first = StreamReader(f"{app_server.url}{EVENTS}", headers=auth).start()
        try:
            _connected(first)
            a = app_server.create_story(author, "Two-part A")
            draft = app_server.create_story(author, "Two-part draft", status="draft")
            first.wait_for_event("private:draft", draft_event(draft, "created"))
        finally:
            first.stop()
        last = [e.id for e in first.events if e.id is not None][-1]

        # While away: both sequences move on, someone else's draft in between.
        app_server.create_story(other, "Someone else's draft", status="draft")
        r = app_server.api("PATCH", f"/api/stories/{draft['id']}", author, json={"title": "Edited away"})
        assert r.status_code == 200
        b = app_server.create_story(author, "Two-part B")
        later = app_server.create_story(author, "Two-part later draft", status="draft")
        reference.wait_for_event("private:draft", draft_event(later, "created"))

        with stream(app_server, headers={**auth, "Last-Event-ID": str(last)}) as resumed:
            _connected(resumed)
            c = app_server.create_story(author, "Two-part C")
            r = app_server.api("PATCH", f"/api/stories/{later['id']}", author, json={"title": "Live"})
            assert r.status_code == 200
            reference.wait_for_event("private:draft", draft_event(later, "updated"))
            resumed.wait_for_event("private:draft", draft_event(later, "updated"))
            anonymous.wait_for_event("story:published", lambda d: d["storyId"] == c["id"])
            got = [(e.event, e.id) for e in first.events + resumed.events if e.id is not None]
        expected = [(e.event, e.id) for e in reference.events if e.id is not None]

    assert [kind for kind, _ in expected] == [
        "story:published", "private:draft", "private:draft", "story:published",
        "private:draft", "story:published", "private:draft",
    ]
    assert got == expected, f"resumed after {last}"
    assert all(re.fullmatch(r"[0-9]+\.[0-9]+", event_id) for _, event_id in expected)
    # The anonymous stream: plain ids, no gap where the drafts changed.
    public = [(e.event, e.id, e.data["storyId"]) for e in anonymous.events if e.id is not None]
    assert [story_id for _, _, story_id in public] == [a["id"], b["id"], c["id"]]
    first_id = public[0][1]
    assert [event_id for _, event_id, _ in public] == [first_id, first_id + 1, first_id + 2]


def _metric(app_server: AppServer, name: str) -> float:
    text = http.get(f"{app_server.url}/api/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /api/metrics")


def _redis_clients(app_server: AppServer) -> int:
    """Connections to the app's Redis, not counting this one nor the rate limits'
    pool (bounded, it keeps up to POOL_SIZE connections it has needed)."""
    from fictures.ratelimit import CLIENT_NAME, POOL_SIZE

    r = redis.Redis.from_url(app_server.redis.url)
    try:
        clients = r.client_list()
    finally:
        r.close()
    pooled = sum(c["name"] == CLIENT_NAME for c in clients)
    assert pooled <= POOL_SIZE
    return len(clients) - 1 - pooled


def test_disconnects_free_everything(app_server: AppServer):
    def settled() -> tuple[float, float, int]:
        return (_metric(app_server, "fictures_sse_clients"),
                _metric(app_server, "fictures_asyncio_tasks"),
                _redis_clients(app_server))

    baseline = settled()
    assert baseline[0] == 0
    with httpx.Client(timeout=10) as client:
        for _ in range(200):
            with connect_sse(client, "GET", f"{app_server.url}{EVENTS}") as source:
                assert next(source.iter_sse()).event == "connected"
    deadline = time.monotonic() + 15
    # Back where it started: no stream, and no more tasks or Redis connections than
    # before (fewer is fine: work left over from earlier tests may have finished).
    while not ((now := settled())[0] == 0 and now[1] <= baseline[1] and now[2] <= baseline[2]):
        assert time.monotonic() < deadline, f"after 200 cycles {now} vs baseline {baseline}"
        time.sleep(0.2)
    print(f"after 200 connect/disconnect cycles: sse clients, tasks, redis clients = {now}")


def test_slow_consumer_gets_reset_and_others_are_not_delayed(app_server: AppServer):
    from fictures.events.bus import EventBus
    from fictures.events.schema import StoryUpdated

    # More than the per-client queue (SSE_QUEUE_SIZE) plus what the socket buffers hold.
    big_title = "x" * 20_000
    count = 1_200
    with stream(app_server, params={"channels": "story:updated"}) as healthy:
        _connected(healthy)
        stalled = httpx.Client(timeout=30)
        response = stalled.send(stalled.build_request("GET", f"{app_server.url}{EVENTS}"), stream=True)
        assert response.status_code == 200

        async def send_all() -> None:
            bus = EventBus(app_server.redis.url, stream_key=app_server.stream_key, maxlen=10_000)
            try:
                for i in range(count):
                    event = StoryUpdated(story_id=10**6 + i, title=big_title, status="published")
                    await bus.send(event.channel, event.body_without_id(), dedupe_key=f"slow-{uuid.uuid4()}")
                    if i % 50 == 49:
                        # A steady stream a reading client keeps up with, not one burst.
                        await asyncio.sleep(0.05)
            finally:
                await bus.close()

        import asyncio

        started = time.monotonic()
        # Its own thread: Playwright's sync API may hold this thread's event loop.
        sender = threading.Thread(target=asyncio.run, args=(send_all(),))
        sender.start()
        sender.join(timeout=60)
        healthy.wait(lambda: len(healthy.of("story:updated")) >= count, timeout=60, what="all events")
        assert not healthy.of("reset")
        print(f"healthy client got {count} x 20 KB events in {time.monotonic() - started:.2f}s "
              "while another client was stalled")

        # The stalled client now reads: some events, then a final reset, then the end.
        kinds = []
        current = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                current = line.removeprefix("event: ")
                kinds.append(current)
        response.close()
        stalled.close()
        assert kinds[0] == "connected"
        assert kinds[-1] == "reset"
        assert 1 <= kinds.count("story:updated") < count


def test_event_published_during_redis_outage_arrives_once(app_server: AppServer, new_page):
    _, token = app_server.register()
    tab = new_page("/community")
    expect(tab.locator("#live-indicator")).to_have_attribute("data-status", "live")
    with stream(app_server, params={"channels": "story:published"}) as sse:
        _connected(sse)
        app_server.redis.stop()
        expect(tab.locator("#live-indicator")).to_have_attribute("data-status", "reconnecting", timeout=10_000)
        title = f"Through the Outage {uuid.uuid4().hex[:6]}"
        story = app_server.create_story(token, title)
        app_server.redis.start()
        got = sse.wait_for_event("story:published", lambda d: d["storyId"] == story["id"], timeout=20)
        assert got.data["title"] == title
        expect(tab.locator("#live-indicator")).to_have_attribute("data-status", "live", timeout=10_000)
        expect(tab.locator(".story-card", has_text=title)).to_have_count(1)
        # Delivered once even though the subscriber both caught up from the stream
        # and re-subscribed: one fan-out line for it, one SSE event, one card.
        app_server.wait_for_log(r"Fanned out story:published")
        assert len(re.findall(r"Fanned out story:published", app_server.log_since_mark())) == 1
        assert len([e for e in sse.of("story:published") if e.data["storyId"] == story["id"]]) == 1
        expect(tab.locator(".story-card", has_text=title)).to_have_count(1)


def _open_at_once(app_server: AppServer, count: int) -> list[StreamReader]:
    """`count` streams whose requests are all sent before any answer is awaited."""
    readers = [StreamReader(f"{app_server.url}{EVENTS}") for _ in range(count)]
    for reader in readers:
        reader._thread = threading.Thread(target=reader._run, daemon=True)
        reader._thread.start()
    for reader in readers:
        reader.wait(lambda r=reader: r.status is not None, timeout=30, what="the response")
    return readers


def assert_exactly_the_limit_opens(app_server: AppServer) -> None:
    """The report: 60 streams opened at once from one address gave 39 open (limit 20)."""
    readers = _open_at_once(app_server, 60)
    try:
        statuses = [r.status for r in readers]
        assert statuses.count(200) == SSE_MAX_PER_IP, sorted(statuses)
        assert statuses.count(429) == 60 - SSE_MAX_PER_IP, sorted(statuses)
        open_ = [r for r in readers if r.status == 200]
        for reader in open_:
            _connected(reader)
        open_[0].stop()
        deadline = time.monotonic() + 10
        while True:  # the slot is free once the server has seen the disconnect
            again = StreamReader(f"{app_server.url}{EVENTS}").start()
            readers.append(again)
            if again.status == 200:
                break
            again.stop()
            assert time.monotonic() < deadline, "a freed slot was never reusable"
        # It took the freed slot: full again.
        with stream(app_server) as over:
            assert over.status == 429
    finally:
        for reader in readers:
            reader.stop()


def test_sixty_streams_at_once_open_exactly_the_limit(app_server: AppServer):
    assert_exactly_the_limit_opens(app_server)
