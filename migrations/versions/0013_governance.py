"""Governance: keys as policy (expiry, allow-lists, lanes, rate limits, metadata, rotation)
and the operators' rate limits.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("models", sa.Text, nullable=True))
        batch.add_column(sa.Column("lanes", sa.String(64), nullable=True))
        batch.add_column(sa.Column("rpm", sa.Integer, nullable=True))
        batch.add_column(sa.Column("tpm", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("meta", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("prev_salt", sa.String(32), nullable=True))
        batch.add_column(sa.Column("prev_digest", sa.String(64), nullable=True))
        batch.add_column(sa.Column("prev_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "rate_limits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("tpm", sa.BigInteger, nullable=True),
        sa.Column("window_s", sa.Integer, nullable=False),
    )
    op.create_index("ux_rate_limits_scope", "rate_limits", ["org", "scope", "key", "window_s"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ux_rate_limits_scope", table_name="rate_limits")
    op.drop_table("rate_limits")
    with op.batch_alter_table("api_keys") as batch:
        for name in ("prev_until", "prev_digest", "prev_salt", "meta", "tpm", "rpm", "lanes",
                     "models", "expires_at"):
            batch.drop_column(name)
