"""Database sessions, on the URL from settings (the same one `reflex db` migrates)."""

from __future__ import annotations

import reflex as rx
import sqlmodel


def session() -> sqlmodel.Session:
    """A new session; use as ``with db.session() as s:``."""
    return rx.session()
