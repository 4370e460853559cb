"""A push service and a subscribed browser, for tests, on 127.0.0.1 only.

`PushService` stands in for FCM / Mozilla's autopush: a real HTTP server that
records each push it is sent and answers with the statuses a test queues.
`new_browser` makes what a browser makes when it subscribes (a P-256 key pair
and an auth secret), and `Browser.decrypt` reads a push as that browser would.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def browser_keys() -> tuple[ec.EllipticCurvePrivateKey, bytes, dict[str, str]]:
    """What a browser makes when it subscribes: a P-256 key pair and an auth secret."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth = os.urandom(16)
    return private, auth, {"p256dh": b64url(public), "auth": b64url(auth)}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class PushService:
    """A push service on 127.0.0.1: records every request; answers each path with
    the statuses queued for it (201 once they run out)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: dict[str, deque[tuple[int, dict[str, str]]]] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                service.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                queued = service.statuses.get(self.path)
                status, headers = queued.popleft() if queued else (201, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def endpoint(self) -> tuple[str, str]:
        path = f"/push/{uuid.uuid4().hex}"
        return self.origin + path, path

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Browser:
    """A subscribed browser: its endpoint and the private half of its keys."""

    endpoint: str
    path: str
    private: ec.EllipticCurvePrivateKey
    auth: bytes
    keys: dict[str, str]

    @property
    def subscription(self) -> dict:
        """What `PushSubscription.toJSON()` gives in the browser."""
        return {"endpoint": self.endpoint, "expirationTime": None, "keys": self.keys}

    def decrypt(self, body: bytes) -> dict:
        return json.loads(http_ece.decrypt(body, private_key=self.private, auth_secret=self.auth,
                                           version="aes128gcm"))



def new_browser(service: PushService) -> Browser:
    """A browser subscribed at `service` (not yet saved anywhere): see `Browser.subscription`."""
    endpoint, path = service.endpoint()
    private, auth, keys = browser_keys()
    return Browser(endpoint, path, private, auth, keys)
