"""`python -m fictures.watch`: prints events, resumes after a dropped connection, stops on Ctrl+C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

from tests.e2e.conftest import ROOT, AppServer


class DroppingProxy:
    """A TCP proxy to the app whose open connections a test can cut (a network drop)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self) -> None:
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets.clear()

    def close(self) -> None:
        self.listener.close()
        self.drop()


def _wait_for_line(lines: list[str], needle: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not any(needle in line for line in lines):
        assert time.monotonic() < deadline, f"{needle!r} never printed; got {lines}"
        time.sleep(0.05)


def test_watch_prints_resumes_after_drop_and_stops_on_ctrl_c(app_server: AppServer):
    _, token = app_server.register()
    proxy = DroppingProxy(urlparse(app_server.url).port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fictures.watch", f"http://127.0.0.1:{proxy.port}",
         "--channels", "story:published"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    try:
        _wait_for_line(lines, "connected")
        first = app_server.create_story(token, "Watched One")
        _wait_for_line(lines, '"title":"Watched One"')

        proxy.drop()
        # Published while the watcher is disconnected: it must still print it, once.
        second = app_server.create_story(token, "Watched Two")
        _wait_for_line(lines, '"title":"Watched Two"')
        third = app_server.create_story(token, "Watched Three")
        _wait_for_line(lines, '"title":"Watched Three"')
        published = [line for line in lines if line.startswith("story:published")]
        ids = [int(line.split("\t")[1]) for line in published]
        assert ids == sorted(set(ids)), f"duplicated or out of order: {published}"
        titles = [line for line in published if "Watched" in line]
        assert len(titles) == 3, titles
        assert sum(line.startswith("connected") for line in lines) >= 2  # it did reconnect
        assert {first["id"], second["id"], third["id"]}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=10)
        finally:
            proxy.close()
    assert code == 0
    assert "Traceback" not in proc.stderr.read()
