"""An instance started as deploy starts one: `python3 scripts/dev.py serve`
(production mode, FICTURES_WORKERS workers, a metrics directory of its own), on
a free port, with its own Redis (which a test may stop) and SQLite database,
migrated first (a copy of the test session's migrated database); and SSE streams read in threads."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from tests.e2e.conftest import (
    BIN,
    ROOT,
    AppServer,
    RedisControl,
    _free_port,
    _wait_for,
    http,
    migrated_database,
)

START_TIMEOUT = 600


@contextlib.contextmanager
def serving_instance(workers: int = 2, **settings: str) -> Iterator[AppServer]:
    """`scripts/dev.py serve` with `workers` workers; `settings` are extra environment
    variables. Yields once /api/health/ready answers 200."""
    workdir = Path(tempfile.mkdtemp(prefix="fictures-instance-"))
    redis = RedisControl(port=_free_port())
    redis.start()
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FICTURES_PORT": str(port),
        "FICTURES_WORKERS": str(workers),
        "FICTURES_ENV": "test",
        "DATABASE_URL": f"sqlite:///{workdir}/instance.db",
        "REDIS_URL": redis.url,
        "FICTURES_STREAM_KEY": f"fictures-instance-{uuid.uuid4().hex[:8]}:events",
        "FICTURES_SSE_MAX_PER_IP": "100",
        "FICTURES_LOGIN_LIMIT_PER_ADDRESS": "100000/minute",
        "FICTURES_REGISTER_LIMIT_PER_ADDRESS": "100000/minute",
        "FICTURES_VAPID_KEY_FILE": str(workdir / "vapid.pem"),
        "FICTURES_PUSH_SERVICES": "http://127.0.0.1:*",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    for name in ("FICTURES_EMBEDDED_REDIS_URL", "GRANIAN_WORKERS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    migrated_database(workdir / "instance.db", env)
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "scripts/dev.py", "serve", "--loglevel", "info"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = AppServer(
        url=f"http://127.0.0.1:{port}", log_path=log_path, process=process, redis=redis,
        stream_key=env["FICTURES_STREAM_KEY"], env=env,
    )
    try:
        _wait_for(f"{server.url}/ping", process, log_path, START_TIMEOUT)
        _wait_for(f"{server.url}/api/health/ready", process, log_path, 60)
        yield server
    finally:
        tree = process_tree(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if process.poll() is None:
            process.kill()
            process.wait()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and everything it started (dev.py, reflex/Granian, its workers)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    return []


def worker_pids(server: AppServer) -> set[int]:
    """The instance's workers: the processes that logged their event service starting."""
    return {int(pid) for pid in re.findall(
        r"\[(\d+)\] INFO fictures\.events\.service: Event service started", server.log_path.read_text()
    )}


def unsent_outbox_rows(server: AppServer) -> int:
    db = server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT count(*) FROM outboxevent WHERE sent_at IS NULL").fetchone()[0]


class Stream(threading.Thread):
    """One SSE stream, read line by line in a thread until it ends."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.lines: list[str] = []
        self.request_id = ""
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.connected = threading.Event()
        self._leave = threading.Event()

    def run(self) -> None:
        try:
            with http.stream("GET", self.url, timeout=httpx.Timeout(10, read=60)) as r:
                self.request_id = r.headers.get("x-request-id", "")
                for line in r.iter_lines():
                    self.lines.append(line)
                    if line == "event: connected":
                        self.connected.set()
                    if self._leave.is_set():
                        break
        except BaseException as exc:  # noqa: BLE001 (recorded: the test asserts on it)
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.connected.set()

    def open(self, timeout: float = 15) -> Stream:
        self.start()
        assert self.connected.wait(timeout) and self.error is None, f"stream did not open: {self.error!r}"
        return self

    def close(self, timeout: float = 10) -> None:
        """The client leaves (at the next line it reads: a ping at the latest)."""
        self._leave.set()
        self.join(timeout)
        assert not self.is_alive(), "the stream did not end"

    def count(self, line: str) -> int:
        return self.lines.count(line)

    def served_by(self, server: AppServer) -> int | None:
        """The pid of the worker that opened this stream (from its request id in the log)."""
        match = re.search(
            r"\[(\d+)\] INFO fictures\.api\.sse: SSE stream opened .*\[request " + re.escape(self.request_id),
            server.log_path.read_text(),
        )
        return int(match.group(1)) if match else None
