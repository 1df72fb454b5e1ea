"""Deployments: the deployment each ledger row and each provider attempt went through.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # '' on older rows: they went through their provider's one client (spend shows the
    # provider's name for them); no backfill, so the migration is quick on a large ledger.
    for table in ("ledger", "attempts"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("deployment", sa.String(64), nullable=False,
                                       server_default=""))


def downgrade() -> None:
    for table in ("attempts", "ledger"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("deployment")
