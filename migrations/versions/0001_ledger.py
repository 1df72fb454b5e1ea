"""The ledger: one row per request.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.db.tables import MONEY

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("lane", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(8), nullable=False),
        sa.Column("route_reason", sa.String(200), nullable=False),
        sa.Column("route_score", sa.Float, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("cache_hit", sa.Boolean, nullable=False),
        sa.Column("batch", sa.Boolean, nullable=False),
        sa.Column("input_uncached", sa.Integer, nullable=False),
        sa.Column("cache_read", sa.Integer, nullable=False),
        sa.Column("cache_write_5m", sa.Integer, nullable=False),
        sa.Column("cache_write_1h", sa.Integer, nullable=False),
        sa.Column("output", sa.Integer, nullable=False),
        sa.Column("reasoning", sa.Integer, nullable=False),
        sa.Column("cost", MONEY, nullable=False),
        sa.Column("baseline_cost", MONEY, nullable=False),
        sa.Column("list_cost", MONEY, nullable=False),
        sa.Column("price_version", sa.String(32), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("queued_ms", sa.Float, nullable=False),
        sa.Column("provider_ms", sa.Float, nullable=False),
        sa.Column("volatile_prefix", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("prompt_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_ledger_created_at", "ledger", ["created_at"])
    op.create_index("ix_ledger_team_feature", "ledger", ["team", "feature"])


def downgrade() -> None:
    op.drop_index("ix_ledger_team_feature", "ledger")
    op.drop_index("ix_ledger_created_at", "ledger")
    op.drop_table("ledger")
