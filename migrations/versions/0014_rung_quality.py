"""Quality per rung: a judgement's task type, the rung that answered and the shadow's rung.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("judgements") as batch:
        batch.add_column(sa.Column("task_type", sa.String(64), nullable=True))
        batch.add_column(sa.Column("served_rung", sa.Integer, nullable=True))
        batch.add_column(sa.Column("shadow_rung", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("judgements") as batch:
        batch.drop_column("shadow_rung")
        batch.drop_column("served_rung")
        batch.drop_column("task_type")
