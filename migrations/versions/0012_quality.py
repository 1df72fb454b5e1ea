"""Quality guard: the ledger's purpose column, judgements, feedback and routing moves.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.db.tables import MONEY

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")



def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("purpose", sa.String(8), nullable=False,
                                   server_default="serve"))
    op.create_table(
        "judgements",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("org", sa.String(64), nullable=False, server_default="default"),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("served_tier", sa.String(16), nullable=False),
        sa.Column("served_model", sa.String(128), nullable=False),
        sa.Column("shadow_model", sa.String(128), nullable=False),
        sa.Column("judge", sa.String(16), nullable=False),
        sa.Column("agree", sa.Boolean, nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("detail", sa.String(200), nullable=False, server_default=""),
        sa.Column("vote_first", sa.Boolean, nullable=True),
        sa.Column("vote_second", sa.Boolean, nullable=True),
        sa.Column("served_cost", MONEY, nullable=False, server_default="0"),
        sa.Column("shadow_cost", MONEY, nullable=False, server_default="0"),
        sa.Column("judge_cost", MONEY, nullable=False, server_default="0"),
        sa.UniqueConstraint("org", "team", "request_id", name="uq_judgements_request"),
    )
    op.create_index("ix_judgements_feature_created", "judgements", ["feature", "created_at"])
    op.create_table(
        "feedback",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("org", sa.String(64), nullable=False, server_default="default"),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False, server_default=""),
        sa.Column("tier", sa.String(16), nullable=False, server_default=""),
        sa.Column("thumb", sa.Integer, nullable=True),
        sa.Column("metric", sa.String(64), nullable=True),
        sa.Column("value", sa.Float, nullable=True),
    )
    op.create_index("ix_feedback_request", "feedback", ["org", "team", "request_id"])
    op.create_table(
        "routing_moves",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("before", sa.Float, nullable=False),
        sa.Column("after", sa.Float, nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("actor", sa.String(128), nullable=False, server_default="quality-floor"),
        sa.Column("reverts", sa.Integer, nullable=True),
    )
    op.create_index("ix_routing_moves_feature", "routing_moves", ["feature", "id"])


def downgrade() -> None:
    op.drop_index("ix_routing_moves_feature", "routing_moves")
    op.drop_table("routing_moves")
    op.drop_index("ix_feedback_request", "feedback")
    op.drop_table("feedback")
    op.drop_index("ix_judgements_feature_created", "judgements")
    op.drop_table("judgements")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("purpose")
