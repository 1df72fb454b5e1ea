"""Stored text per org: a kept prompt is one org's and team's, as its judgement is.

Request ids are the callers' and unique only per tenant, but ``stored_text`` was keyed by the
id alone: a second org's text of an id was dropped, and ``router train --from-ledger`` (which
joined on id and team) could pair one org's verdict with another org's prompt.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def _table(*key: str, org: bool) -> sa.Table:
    """``stored_text`` as it stands, its primary key named: SQLite reflects 0004's key without
    the name PostgreSQL gave it, and a batch can drop only a named constraint."""
    return sa.Table(
        "stored_text", sa.MetaData(),
        *([sa.Column("org", sa.String(64), nullable=False, server_default="default")]
          if org else []),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint(*key, name="stored_text_pkey"),
        sa.Index("ix_stored_text_expires_at", "expires_at"),
    )


def upgrade() -> None:
    # Texts kept before this revision are the ``default`` org's (the org of requests that name
    # none), as 0015 did for routing moves.
    with op.batch_alter_table("stored_text",
                              copy_from=_table("request_id", org=False)) as batch:
        batch.drop_constraint("stored_text_pkey", type_="primary")
        batch.add_column(sa.Column("org", sa.String(64), nullable=False,
                                   server_default="default"))
        batch.create_primary_key("stored_text_pkey", ["org", "team", "request_id"])


def downgrade() -> None:
    # Back to one text per request id: of an id two tenants share, only the first tenant's by
    # (org, team) is kept, since the old key cannot hold both.
    op.execute("DELETE FROM stored_text WHERE EXISTS (SELECT 1 FROM stored_text o "
               "WHERE o.request_id = stored_text.request_id "
               "AND (o.org, o.team) < (stored_text.org, stored_text.team))")
    with op.batch_alter_table("stored_text", copy_from=_table(
            "org", "team", "request_id", org=True)) as batch:
        batch.drop_constraint("stored_text_pkey", type_="primary")
        batch.drop_column("org")
        batch.create_primary_key("stored_text_pkey", ["request_id"])
