"""Database sessions, on the URL from settings (the same one `reflex db` migrates)."""

from __future__ import annotations

import os

import reflex as rx
import sqlmodel

from fictures.reflex_compat import forget_inherited_db_connections


def session() -> sqlmodel.Session:
    """A new session; use as ``with db.session() as s:``."""
    return rx.session()


# Production workers are forked from the `reflex` process, which has already
# used the engine (Reflex checks the schema there). A pooled connection
# inherited that way is the parent's socket: two workers sharing it corrupt
# each other's results (psycopg2 "error with status PGRES_TUPLES_OK").
os.register_at_fork(after_in_child=forget_inherited_db_connections)
