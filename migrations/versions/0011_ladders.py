"""Feature ladders in the ledger: each request's task type and the rung it was routed to.

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("task_type", sa.String(64), nullable=True))
        batch.add_column(sa.Column("rung", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("rung")
        batch.drop_column("task_type")
