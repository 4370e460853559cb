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

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
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
