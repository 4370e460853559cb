"""Database sessions, on the URL from settings (the same one `reflex db` migrates)."""

from __future__ import annotations

import os
from typing import Any

import reflex as rx
import sqlmodel
from sqlalchemy.dialects import postgresql, sqlite

from fictures.reflex_compat import forget_inherited_db_connections


def session() -> sqlmodel.Session:
    """A new session; use as ``with db.session() as s:``."""
    return rx.session()


def insert_ignore(
    session: sqlmodel.Session, model: type[sqlmodel.SQLModel], conflict: list[str], **values: Any
) -> bool:
    """Insert one row unless a row with the same `conflict` columns exists (a
    unique constraint); True if it was inserted. One statement (`ON CONFLICT DO
    NOTHING`): concurrent inserts of the same row, from any worker, neither fail
    nor duplicate, where a check-then-insert would race."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"insert_ignore does not support {dialect}")
    statement = insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict)
    return session.exec(statement).rowcount == 1


# Production workers are forked from the `reflex` process, which has already
# used the engine (Reflex checks the schema there). A pooled connection
# inherited that way is the parent's socket: two workers sharing it corrupt
# each other's results (psycopg2 "error with status PGRES_TUPLES_OK").
os.register_at_fork(after_in_child=forget_inherited_db_connections)
