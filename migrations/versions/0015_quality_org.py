"""Quality per org: a routing move belongs to one org's feature, and the floor reads one org's
judged pairs (feature names are chosen per org, so keying by name alone let one org's pairs
move another's routing).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Moves made before this revision were applied to every org's feature of that name; they
    # are kept as the ``default`` org's (the org of requests that name none).
    with op.batch_alter_table("routing_moves") as batch:
        batch.add_column(sa.Column("org", sa.String(64), nullable=False,
                                   server_default="default"))
    op.drop_index("ix_routing_moves_feature", "routing_moves")
    op.create_index("ix_routing_moves_org_feature", "routing_moves", ["org", "feature", "id"])
    op.create_index("ix_judgements_org_feature", "judgements", ["org", "feature", "id"])


def downgrade() -> None:
    op.drop_index("ix_judgements_org_feature", "judgements")
    op.drop_index("ix_routing_moves_org_feature", "routing_moves")
    op.create_index("ix_routing_moves_feature", "routing_moves", ["feature", "id"])
    with op.batch_alter_table("routing_moves") as batch:
        batch.drop_column("org")
