"""What the publish path's parts cost on this machine, each alone, cold and hot.

    .venv/bin/python benchmarks/publish_floor.py [--samples 200] [--gap 0.05]
        [--redis-url URL] [--database-url URL]

`benchmarks/fanout.py --publish-path` measures a publish API call to its Redis
PUBLISH end to end. This measures the parts that path is made of, one at a
time, with the app's own code wherever there is some:

- http: a round trip to a bare ASGI app (one answer, no middleware, no
  framework) served by Granian as the app is: the floor of any API call;
- hop: the event loop hands a no-op to a worker thread and gets its result
  back (`starlette.concurrency.run_in_threadpool`, as the API's `in_db`);
- token: `fictures.auth.user_for_token` in a new session (every API call's
  bearer check);
- write: `fictures.stories.create_story` with its outbox row and commit (no
  relay runs here, so nothing is published);
- unsent: `fictures.events.outbox._unsent_rows` in a new session (what the
  committing thread reads for the relay);
- send: `fictures.events.bus.EventBus.send` (the relay's publish script) on a
  real Redis, one round trip.

Each part is timed --samples times "cold", after a pause of --gap seconds (as
between fanout.py's publish calls, and as an author's call meets an idle
server), and "hot", back to back. It prints p50/p99 per part and the sum of the
p50s: what the path costs before any of its parts waits for another.

Then the least a publish call can cost on this machine, end to end and on
fanout.py's clocks: the same bare app, POSTed to, PUBLISHes the body with one
command; first alone, then after committing it as a row of a raw sqlite3 WAL
database (on the event loop, then in a worker thread as the app does). No
framework, ORM, token check or outbox: what is left is Granian, the loopback,
one commit and Redis. Timed from the request's first byte written (the whole
request in one write) to the kernel's receive time of the PUBLISH at an
outside subscriber (SO_TIMESTAMPNS). With --database-url the bare app still
uses SQLite: the bound is for fanout.py's own set-up.

It reports figures; it never passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import _clients  # noqa: E402

_BARE_APP = '''
import os
import sqlite3

import redis.asyncio
from starlette.concurrency import run_in_threadpool

# The least a publish call can do: commit a row (raw sqlite3, WAL, as the app's
# SQLite), then PUBLISH it (one command, no script). GET answers at once.
db = sqlite3.connect(os.environ["BOUND_DB"], check_same_thread=False, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS story (id INTEGER PRIMARY KEY, title TEXT)")
bus = None


def commit(title):
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO story (title) VALUES (?)", (title,))
    db.execute("COMMIT")


async def app(scope, receive, send):
    global bus
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "POST":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if bus is None:
            bus = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
        if scope["path"] == "/commit-in-thread":
            await run_in_threadpool(commit, body.decode())
        elif scope["path"] == "/commit":
            commit(body.decode())
        await bus.publish("bound", body)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
'''


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def timed(part: Callable[[], Awaitable[object]], samples: int, gap: float) -> list[float]:
    """Milliseconds per call of `part`, each after a pause of `gap` seconds (0: back to back)."""
    out = []
    for _ in range(samples):
        if gap:
            await asyncio.sleep(gap)
        t0 = time.perf_counter()
        await part()
        out.append((time.perf_counter() - t0) * 1000)
    return out


class BareHttp:
    """A bare ASGI app under Granian, and one keep-alive client connection to it."""

    def __init__(self, workdir: Path) -> None:
        (workdir / "bare_app.py").write_text(_BARE_APP)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1", "bare_app:app"],
            cwd=workdir, stdout=(workdir / "granian.log").open("wb"), stderr=subprocess.STDOUT,
            env={**os.environ, "BOUND_DB": str(workdir / "bound.db")},
        )
        self.sock: socket.socket | None = None
        self.request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()

    def connect(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port))
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.round_trip()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def reconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.connect()

    def round_trip(self) -> None:
        assert self.sock is not None
        self.sock.sendall(self.request)
        self._read_answer()

    def _read_answer(self) -> None:
        """Read the answer's head (the bare app's answers have no body)."""
        assert self.sock is not None
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            got += chunk

    def publish_call(self, path: str, marker: bytes, watch: PublishWatch) -> float:
        """POST `marker` to `path` (the request in one write); milliseconds from its
        first byte written to the kernel's receive time of its PUBLISH at `watch`."""
        assert self.sock is not None
        request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                   f"Content-Length: {len(marker)}\r\n\r\n").encode() + marker
        sent_at = time.time_ns()
        self.sock.sendall(request)
        published_at = watch.wait_for(marker)
        self._read_answer()
        return (published_at - sent_at) / 1e6

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class PublishWatch:
    """A raw Redis subscriber to the bare app's channel: the kernel's receive time
    of each PUBLISH (SO_TIMESTAMPNS, as fanout.py's outside subscriber). Blocking:
    the bound's calls are made one at a time, each waiting for its PUBLISH."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self.sock.setsockopt(socket.SOL_SOCKET, _clients.SO_TIMESTAMPNS, 1)
        self.sock.settimeout(10)
        if parts.password:
            self.sock.sendall(_clients.resp("AUTH", *([parts.username] if parts.username else []),
                                            parts.password))
            if not self.sock.recv(4096).startswith(b"+OK"):
                raise ConnectionError("the subscriber's AUTH was refused")
        self.sock.sendall(_clients.resp("SUBSCRIBE", "bound"))
        if b"subscribe" not in self.sock.recv(4096):
            raise ConnectionError("the subscriber could not subscribe")

    def wait_for(self, marker: bytes) -> int:
        """The kernel's receive time (ns) of the read that completed `marker`'s message."""
        seen = b""
        while marker not in seen:
            data, ancillary, _flags, _addr = self.sock.recvmsg(_clients.READ_SIZE, _clients.ANCILLARY_SIZE)
            if not data:
                raise ConnectionError("the subscriber's connection closed")
            seen += data
        stamped = _clients.kernel_time_ns(ancillary)
        if stamped is None:
            raise RuntimeError("the kernel gave no receive time")
        return stamped

    def close(self) -> None:
        self.sock.close()


def _database(args: argparse.Namespace, workdir: Path) -> tuple[str, Callable[[], None]]:
    """The DB URL to use, and how to clean up: a temp SQLite file, or a schema of
    its own on the given PostgreSQL server (dropped at the end)."""
    if not args.database_url:
        return f"sqlite:///{workdir}/floor.db", lambda: None
    import sqlalchemy as sa

    url = sa.make_url(args.database_url)
    if not url.drivername.startswith("postgresql"):
        return args.database_url, lambda: None
    schema = f"fictures_floor_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False), drop


Part = Callable[[], Awaitable[object]]
# The parts summed as the path; the others (the token check alone, and what it is
# made of) show where a part's time goes. `write` includes its token check.
_ON_PATH = ("http", "hop", "write", "unsent", "send")


def _parts(token: str, bus: object, http: BareHttp) -> tuple[dict[str, Part], Part]:
    """Each part of the path, as the app runs it; and what to run before the unsent
    read is timed."""
    import sqlalchemy as sa
    from starlette.concurrency import run_in_threadpool

    from fictures import auth, db, stories
    from fictures.events import outbox
    from fictures.models import StoryCreate, StoryStatus, utcnow

    n = 0

    def check_token() -> None:
        with db.session() as s:
            assert auth.user_for_token(session=s, token=token) is not None

    def open_session() -> None:
        with db.session() as s:
            s.connection()

    with db.session() as s:
        engine = s.get_bind()
    raw_token_check = None
    if engine.dialect.name == "sqlite":
        import sqlite3

        raw = sqlite3.connect(engine.url.database, check_same_thread=False)
        statement = str(auth._TOKEN_OWNER.compile(engine)).replace(":token_hash", "?")

        def raw_token_check() -> None:
            assert raw.execute(statement, (auth._token_hash(token),)).fetchone() is not None

    def write() -> None:
        nonlocal n
        n += 1
        with db.session() as s:
            author = auth.user_for_token(session=s, token=token)
            assert author is not None
            data = StoryCreate(title=f"Floor {n}", status=StoryStatus.published)
            stories.create_story(session=s, author=author, data=data)

    def unsent() -> None:
        with db.session() as s:
            outbox._unsent_rows(s, 200)

    def one_unsent() -> None:
        """Leave one row unsent, as the committing thread usually finds (no relay runs
        here to mark the rows `write` left)."""
        table = outbox.OutboxEvent.__table__
        with db.session() as s:
            newest = s.connection().execute(sa.select(sa.func.max(table.c.id))).scalar_one()
            s.connection().execute(
                table.update().where(table.c.sent_at.is_(None), table.c.id < newest).values(sent_at=utcnow())
            )
            s.commit()

    async def send() -> None:
        await bus.send("story:published", '{"story_id":1}', dedupe_key=uuid.uuid4().hex)  # type: ignore[attr-defined]

    async def here(fn: Callable[[], None]) -> None:
        fn()

    async def http_round_trip() -> None:
        http.round_trip()

    # `token`, `write` and `unsent` run in the calling thread: the hop is its own part.
    return ({
        "http (bare ASGI app under Granian, round trip)": http_round_trip,
        "hop (to a worker thread and back)": lambda: run_in_threadpool(lambda: None),
        "token (auth.user_for_token, new session)": lambda: here(check_token),
        "session (a new session's connection, no statement)": lambda: here(open_session),
        **({"token's statement on a raw sqlite3 connection": lambda: here(raw_token_check)}
           if raw_token_check else {}),
        "write (token + stories.create_story + commit)": lambda: here(write),
        "unsent (outbox._unsent_rows, new session)": lambda: here(unsent),
        "send (EventBus.send: the publish script)": send,
    }, lambda: here(one_unsent))


_BOUNDS = {
    "/publish": "PUBLISH only (no database)",
    "/commit": "commit a row on the event loop, then PUBLISH",
    "/commit-in-thread": "commit a row in a worker thread, then PUBLISH",
}


async def _bounds(http: BareHttp, samples: int, gap: float) -> list[tuple[str, list[float], list[float]]]:
    """The bare app's publish calls, cold and hot: first byte written -> PUBLISH."""
    watch = PublishWatch(os.environ["REDIS_URL"])
    await asyncio.to_thread(http.reconnect)  # the server may have closed the idle keep-alive
    rows = []
    n = 0
    try:
        for path, name in _BOUNDS.items():
            times: dict[float, list[float]] = {}
            for g, count in ((0, 20), (gap, samples), (0, samples)):  # warm-up, cold, hot
                times[g] = []
                for _ in range(count):
                    if g:
                        await asyncio.sleep(g)
                    n += 1
                    try:
                        times[g].append(http.publish_call(path, b"bound-%d;" % n, watch))
                    except TimeoutError:
                        raise RuntimeError(f"no PUBLISH for call {n} to {path}") from None
            rows.append((name, times[gap], times[0]))
            log(f"{name}: cold p50 {pct(times[gap], 50):.3f} ms, hot p50 {pct(times[0], 50):.3f} ms")
    finally:
        watch.close()
    return rows


def _report(rows: list[tuple[str, list[float], list[float]]], args: argparse.Namespace,
            db_kind: str, redis_kind: str, bounds: list[tuple[str, list[float], list[float]]]) -> None:
    print(f"\nPublish path parts, each alone ({args.samples} samples; cold: after a {args.gap} s "
          f"pause; hot: back to back). DB: {db_kind}; Redis: {redis_kind}; {os.cpu_count()} cores.\n")
    print("| part | cold p50 / p99 ms | hot p50 / p99 ms |")
    print("|---|---|---|")
    for name, cold, hot in rows:
        print(f"| {name} | {pct(cold, 50):.2f} / {pct(cold, 99):.2f} | {pct(hot, 50):.2f} / {pct(hot, 99):.2f} |")
    # The path: http + hop + write (its token check included) + unsent + send.
    on_path = [r for r in rows if r[0].split()[0] in _ON_PATH]
    cold_sum = sum(pct(cold, 50) for _, cold, _ in on_path)
    hot_sum = sum(pct(hot, 50) for _, _, hot in on_path)
    print(f"\nSum of the p50s on the path (http + hop + write + unsent + send): cold {cold_sum:.2f} ms, "
          f"hot {hot_sum:.2f} ms.")
    print("\nThe least a publish call can cost here, end to end: a bare ASGI app under Granian (no "
          "framework, no ORM, no token check) takes the POST, commits a row in a raw sqlite3 WAL database "
          "and PUBLISHes it with one command. From the request's first byte written (the whole request in "
          "one write) to the kernel's receive time of the PUBLISH at an outside subscriber, as fanout.py's "
          "publish path:\n")
    print("| bare app | cold p50 / p99 ms | hot p50 / p99 ms |")
    print("|---|---|---|")
    for name, cold, hot in bounds:
        print(f"| {name} | {pct(cold, 50):.2f} / {pct(cold, 99):.2f} | {pct(hot, 50):.2f} / {pct(hot, 99):.2f} |")


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fictures-floor-"))
    os.environ["DATABASE_URL"], drop_database = _database(args, workdir)
    os.environ["FICTURES_STREAM_KEY"] = f"fictures:floor:{uuid.uuid4().hex[:8]}"
    embedded = None
    if args.redis_url:
        os.environ["REDIS_URL"] = args.redis_url
    else:
        from fictures.embedded_redis import EmbeddedRedis

        embedded = EmbeddedRedis(port=free_port()).start()
        os.environ["REDIS_URL"] = embedded.url

    import reflex as rx
    from sqlmodel import SQLModel

    from fictures import auth, db
    from fictures.events.bus import EventBus
    from fictures.models import Credentials
    from fictures.settings import redis_url, settings

    http = BareHttp(workdir)
    bus = EventBus(redis_url(), stream_key=settings.stream_key, maxlen=10_000)
    rows = []
    try:
        SQLModel.metadata.create_all(rx.model.get_engine())
        with db.session() as s:
            name = f"floor{uuid.uuid4().hex[:8]}"
            user = auth.register(session=s, data=Credentials(username=name, password="password123"))
            token = auth.issue_token(session=s, user=user)
        await asyncio.to_thread(http.connect)
        parts, settle = _parts(token, bus, http)
        for name, part in parts.items():
            if name.startswith("unsent"):
                await settle()
            await timed(part, 20, 0)  # warm up: first calls compile and connect
            cold = await timed(part, args.samples, args.gap)
            hot = await timed(part, args.samples, 0)
            rows.append((name, cold, hot))
            log(f"{name}: cold p50 {pct(cold, 50):.3f} ms, hot p50 {pct(hot, 50):.3f} ms")
        bounds = await _bounds(http, args.samples, args.gap)
    finally:
        http.stop()
        await bus.close()
        if embedded is not None:
            embedded.stop()
        rx.model.get_engine().dispose()
        drop_database()
    _report(rows, args, os.environ["DATABASE_URL"].split(":", 1)[0],
            "embedded Valkey" if embedded else "REDIS_URL", bounds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--gap", type=float, default=0.05, help="pause before each cold sample, seconds")
    p.add_argument("--redis-url", default="", help="use this Redis instead of an embedded Valkey")
    p.add_argument("--database-url", default="", help="use this DB instead of a temp SQLite file")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
