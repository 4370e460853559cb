"""A Reflex websocket client without a browser: it sends whatever a hostile page could.

Speaks what Reflex's frontend speaks (Engine.IO 4 / Socket.IO on `/_event`):
connect with a tab token, send the hydrate event in the Socket.IO CONNECT
packet, answer pings, and send `42/_event,["event", {...}]` frames.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from reflex import constants
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from fictures.state import SessionState

ROOT = "reflex___state____state"


class TabClosed(ConnectionError):
    """The server closed this tab's websocket."""


class RawTab:
    """One tab's websocket. `updates` holds every update the server sent."""

    def __init__(self, base_url: str, path: str = "/community", *, auth_token: str | None = None,
                 origin: str | None = None):
        self.token = str(uuid.uuid4())
        self.path = path
        url = base_url.replace("http://", "ws://") + f"/_event/?EIO=4&transport=websocket&token={self.token}"
        headers = {"Origin": origin} if origin else None
        self._connect = connect(
            url, subprotocols=[constants.Reflex.VERSION], additional_headers=headers, open_timeout=10
        )
        self.ws: ClientConnection = self._connect.__enter__()
        self.updates: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.closed = False
        # While held, the server's pings go unanswered, as over a connection that
        # died without closing (the socket stays open, nothing comes back).
        self._pongs_held = False
        self._pings_waiting = 0
        self._cond = threading.Condition()
        opening = self.ws.recv(timeout=10)
        assert opening.startswith("0{"), opening
        self.opening = json.loads(opening[1:])  # Engine.IO's handshake (pingInterval, ...)
        vars_ = {f"{SessionState.get_full_name()}.auth_token_rx_state_": auth_token} if auth_token else {}
        hydrate = self._event(f"{ROOT}.hydrate_and_load", {"vars": vars_} if vars_ else {})
        self.ws.send("40/_event," + json.dumps({"event": hydrate}))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _event(self, name: str, payload: Any) -> dict[str, Any]:
        return {"name": name, "payload": payload,
                "router_data": {"pathname": self.path, "asPath": self.path, "query": {}}}

    def _read(self) -> None:
        try:
            while True:
                message = self.ws.recv()
                if message == "2":
                    with self._cond:
                        if self._pongs_held:
                            self._pings_waiting += 1
                            continue
                    self.ws.send("3")
                    continue
                with self._cond:
                    self.raw.append(message)
                    if message.startswith("42/_event,"):
                        name, data = json.loads(message[len("42/_event,"):])[:2]
                        if name == "event":
                            self.updates.append(data)
                    self._cond.notify_all()
        except (ConnectionClosed, OSError):
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def hold_pongs(self) -> None:
        """The network goes silent: pings from now on are not answered."""
        with self._cond:
            self._pongs_held = True

    def release_pongs(self) -> None:
        """The network is back: the pings that arrived meanwhile are answered."""
        with self._cond:
            self._pongs_held = False
            waiting, self._pings_waiting = self._pings_waiting, 0
        for _ in range(waiting):
            self.ws.send("3")

    def send(self, name: str, payload: Any = None) -> None:
        """Send an event frame; `payload` may be anything, `name` any string."""
        self.send_frame(self._event(name, {} if payload is None else payload))

    def send_frame(self, frame: Any) -> None:
        self.ws.send("42/_event," + json.dumps(["event", frame]))

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10,
                 what: str = "an update") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.updates):
                if self.closed:
                    raise TabClosed(f"the server closed the websocket while waiting for {what}")
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {what} within {timeout}s; got {self.raw[-5:]}"
                self._cond.wait(remaining)

    def delta_values(self, var: str) -> list[Any]:
        """Every value the server sent for a var named `var` (any state)."""
        key = f"{var}_rx_state_"
        with self._cond:
            return [
                values[key]
                for update in self.updates
                for values in (update.get("delta") or {}).values()
                if key in values
            ]

    def hydrated(self) -> None:
        self.wait_for(lambda _: True in self.delta_values("is_hydrated"), what="hydration")

    def close(self) -> None:
        self._connect.__exit__(None, None, None)
