"""Budgets: limits per scope and window, reservations, durable queue pauses, alerts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.db.tables import MONEY

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("window", sa.String(16), nullable=False),
        sa.Column("hard_limit", MONEY, nullable=False),
        sa.Column("soft_limit", MONEY, nullable=True),
        sa.Column("spent", MONEY, nullable=False),
        sa.Column("reserved", MONEY, nullable=False),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("resets_at", _TS, nullable=True),
        sa.Column("webhook_url", sa.String(500), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("scope", "key", "window", name="uq_budgets_scope_key_window"),
        sa.CheckConstraint("spent >= 0", name="ck_budgets_spent_nonneg"),
        sa.CheckConstraint("reserved >= 0", name="ck_budgets_reserved_nonneg"),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("budget_ids", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actual", MONEY, nullable=True),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("closed_at", _TS, nullable=True),
    )
    op.create_index("ix_reservations_state_expires", "reservations", ["state", "expires_at"])
    op.create_index("ix_reservations_request_id", "reservations", ["request_id"])
    op.create_index("ix_reservations_closed_at", "reservations", ["closed_at"])
    op.create_table(
        "pauses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("cause", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("budget_id", sa.Integer, sa.ForeignKey("budgets.id", ondelete="CASCADE"),
                  nullable=True),
        sa.Column("window_start", _TS, nullable=True),
        sa.Column("hard_limit", MONEY, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("queue", "cause", name="uq_pauses_queue_cause"),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("budget_id", sa.Integer, sa.ForeignKey("budgets.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.UniqueConstraint("budget_id", "window_start", "kind", name="uq_alerts_once_per_window"),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("pauses")
    op.drop_index("ix_reservations_closed_at", "reservations")
    op.drop_index("ix_reservations_request_id", "reservations")
    op.drop_index("ix_reservations_state_expires", "reservations")
    op.drop_table("reservations")
    op.drop_table("budgets")
