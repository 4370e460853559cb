"""Start and stop the app in production mode (and its Redis) for the benchmark.

The same approach as tests/e2e/conftest.py: `reflex db migrate`, then
`reflex run --env prod --single-port` in its own process group, with a temp
SQLite database and an embedded Valkey unless URLs are given.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit as far as allowed; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (wanted, hard):
        if target == resource.RLIM_INFINITY or target <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
            return target
        except (ValueError, OSError):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))
                return min(target, hard)
            except (ValueError, OSError):
                continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class App:
    port: int
    workers: int
    redis_url: str
    database_url: str
    stream_key: str
    workdir: Path
    log_path: Path
    app_dir: Path = ROOT
    process: subprocess.Popen | None = None
    _redis: object | None = None
    _owns_workdir: bool = True
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the server's process tree, for CPU and memory figures ---------------------

    def tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_bytes(self) -> int:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (the deepest Python processes of the tree)."""
        procs = self.tree()
        leaves = [p for p in procs if not p.children()]
        return [p.pid for p in leaves]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count_in_log(self, needle: str) -> int:
        return self.log_text().count(needle)

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()
        if self._redis is not None:
            self._redis.stop()  # type: ignore[attr-defined]
            self._redis = None


def _wait_for(url: str, app: App, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.process is not None and app.process.poll() is not None:
            raise RuntimeError(
                f"the app exited ({app.process.returncode}):\n{app.log_text()[-4000:]}"
            )
        try:
            if httpx.get(url, timeout=2, follow_redirects=True).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app did not answer {url} within {timeout}s:\n{app.log_text()[-4000:]}")


def start_app(
    *,
    workers: int = 1,
    redis_url: str | None = None,
    database_url: str | None = None,
    fd_limit: int = 65536,
    stream_maxlen: int = 20_000,
    start_timeout: float = 600,
    app_dir: Path = ROOT,
) -> App:
    """Start Redis (unless given), migrate the DB, and run the app in production mode."""
    workdir = Path(tempfile.mkdtemp(prefix="fictures-bench-"))
    redis_server = None
    if not redis_url:
        from fictures.embedded_redis import EmbeddedRedis

        redis_server = EmbeddedRedis(port=free_port()).start()
        redis_url = redis_server.url
    database_url = database_url or f"sqlite:///{workdir}/bench.db"
    port = free_port()
    stream_key = f"fictures-bench-{uuid.uuid4().hex[:8]}:events"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "REFLEX_USE_NPM": "1",
        "GRANIAN_WORKERS": str(workers),
        "FICTURES_WORKERS": str(workers),
        "FICTURES_ENV": "test",  # "production" refuses SQLite and the dev secret
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "FICTURES_STREAM_KEY": stream_key,
        "FICTURES_STREAM_MAXLEN": str(stream_maxlen),
        # Every simulated reader connects from 127.0.0.1.
        "FICTURES_SSE_MAX_PER_IP": "100000",
        "FICTURES_SSE_QUEUE_SIZE": "100000",
        "FICTURES_SSE_SEND_TIMEOUT": "120",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("FICTURES_EMBEDDED_REDIS_URL", None)
    app = App(
        port=port, workers=workers, redis_url=redis_url, database_url=database_url,
        stream_key=stream_key, workdir=workdir, log_path=workdir / "server.log",
        _redis=redis_server, env=env, app_dir=app_dir,
    )
    try:
        reflex = str(BIN / "reflex")
        r = subprocess.run(
            [reflex, "db", "migrate"], cwd=app_dir, env=env, capture_output=True, text=True,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"reflex db migrate failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        cmd = " ".join(
            shlex.quote(a)
            for a in [
                reflex, "run", "--env", "prod", "--single-port",
                "--frontend-port", str(port), "--backend-port", str(port), "--loglevel", "info",
            ]
        )
        with app.log_path.open("wb") as log:
            app.process = subprocess.Popen(
                ["bash", "-c", f"ulimit -n {fd_limit} 2>/dev/null || ulimit -n hard; exec {cmd}"],
                cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _wait_for(f"{app.url}/ping", app, start_timeout)
        _wait_for(f"{app.url}/community", app, 60)
    except BaseException:
        app.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return app


def cleanup(app: App) -> None:
    app.stop()
    shutil.rmtree(app.workdir, ignore_errors=True)
