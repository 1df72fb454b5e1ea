"""Provider attempts as ledger facts; estimated cost, attempt count and heartbeat on the ledger.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.db.tables import MONEY

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("run", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("org", sa.String(64), nullable=False, server_default="default"),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("batch", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("billing", sa.String(16), nullable=False, server_default="none"),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cost", MONEY, nullable=False, server_default="0"),
        sa.Column("worst_case", MONEY, nullable=False, server_default="0"),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("settled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_attempts_request_id", "attempts", ["request_id"])
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("estimated_cost", MONEY, nullable=False, server_default="0"))
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("heartbeat_at", _TS, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("attempts")
        batch.drop_column("estimated_cost")
    op.drop_index("ix_attempts_request_id", "attempts")
    op.drop_table("attempts")
