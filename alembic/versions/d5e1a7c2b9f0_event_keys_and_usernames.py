"""Outbox events get a globally unique key; usernames unique regardless of case

Revision ID: d5e1a7c2b9f0
Revises: c4638bfef3e1
Create Date: 2026-11-28 14:30:00

"""
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = 'd5e1a7c2b9f0'
down_revision: str | Sequence[str] | None = 'c4638bfef3e1'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()

    # The relay's dedupe key was the row number, which a new or restored
    # database reuses: Redis then "remembered" events it never saw.
    with op.batch_alter_table('outboxevent', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('event_key', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
    rows = conn.execute(sa.text('SELECT id FROM outboxevent WHERE event_key IS NULL')).fetchall()
    for (row_id,) in rows:
        conn.execute(
            sa.text('UPDATE outboxevent SET event_key = :key WHERE id = :id'),
            {'key': uuid.uuid4().hex, 'id': row_id},
        )
    with op.batch_alter_table('outboxevent', schema=None) as batch_op:
        batch_op.alter_column(
            'event_key', existing_type=sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False
        )
        batch_op.create_index(batch_op.f('ix_outboxevent_event_key'), ['event_key'], unique=True)

    clashes = conn.execute(
        sa.text('SELECT lower(username) FROM "user" GROUP BY lower(username) HAVING count(*) > 1')
    ).fetchall()
    if clashes:
        names = ', '.join(name for (name,) in clashes)
        raise RuntimeError(
            f'usernames that differ only in case must be renamed before this migration: {names}'
        )
    op.create_index('ix_user_username_lower', 'user', [sa.text('lower(username)')], unique=True)


def downgrade() -> None:
    op.drop_index('ix_user_username_lower', table_name='user')
    with op.batch_alter_table('outboxevent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outboxevent_event_key'))
        batch_op.drop_column('event_key')
