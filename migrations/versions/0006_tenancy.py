"""Tenancy: budgets belong to an org; keys carry the features and users they may bill.

Budgets gain ``org`` (part of their identity and of matching). Existing lane budgets become
deployment-wide (``*``: they applied to every org and paused the shared queues, and still do),
org budgets belong to their own org, and team, feature and user budgets to the ``default`` org;
such a budget that the ledger or a key shows in use by another org is copied to that org, with
that org's spend of the current window, so no org loses a limit it had. Pauses left by org
budgets are lifted: an org's limit no longer pauses the queues every org shares.

API keys gain a default feature, the other features and the users they may bill (NULL: any,
as before), and ``all_orgs`` for an operator key that acts in every org (existing operator keys
act in their own org only from now on).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMN = {"team": "team", "feature": "feature", "user": "user_id"}


def upgrade() -> None:
    with op.batch_alter_table("budgets") as batch:
        batch.add_column(sa.Column("org", sa.String(64), nullable=False,
                                   server_default="default"))
        batch.drop_constraint("uq_budgets_scope_key_window", type_="unique")
        batch.create_unique_constraint("uq_budgets_org_scope_key_window",
                                       ["org", "scope", "key", "window"])
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE budgets SET org = '*' WHERE scope = 'lane'"))
    conn.execute(sa.text("UPDATE budgets SET org = key WHERE scope = 'org'"))
    _copy_to_other_orgs(conn)
    conn.execute(sa.text("DELETE FROM pauses WHERE budget_id IN "
                         "(SELECT id FROM budgets WHERE NOT (scope = 'lane' AND org = '*'))"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("feature", sa.String(64), nullable=False,
                                   server_default="default"))
        batch.add_column(sa.Column("features", sa.Text, nullable=True))
        batch.add_column(sa.Column("users", sa.Text, nullable=True))
        batch.add_column(sa.Column("all_orgs", sa.Boolean, nullable=False,
                                   server_default=sa.false()))


def _copy_to_other_orgs(conn: sa.Connection) -> None:
    """A team/feature/user budget applied to that name in every org: give each other org that
    used the name its own copy, counting that org's spend of the window."""
    narrow = conn.execute(sa.text(
        "SELECT id, scope, key, \"window\", hard_limit, soft_limit, window_start, resets_at, "
        "webhook_url FROM budgets WHERE scope IN ('team', 'feature', 'user')")).all()
    for b in narrow:
        col = _COLUMN[b.scope]
        orgs = {r[0] for r in conn.execute(sa.text(
            f"SELECT DISTINCT org FROM ledger WHERE {col} = :k"), {"k": b.key})}
        if b.scope == "team":
            orgs |= {r[0] for r in conn.execute(sa.text(
                "SELECT DISTINCT org FROM api_keys WHERE team = :k"), {"k": b.key})}
        for org in sorted(orgs - {"default"}):
            since = "" if b.window == "total" else " AND created_at >= :since"
            spent = conn.execute(sa.text(
                f"SELECT coalesce(sum(cost), 0) FROM ledger WHERE {col} = :k AND org = :org"
                + since), {"k": b.key, "org": org, "since": b.window_start}).scalar()
            # Raw column values both ways: NUMERIC on PostgreSQL, integer pico-dollars on
            # SQLite (models.db.tables.MONEY), so nothing is converted on the way.
            conn.execute(sa.text(
                "INSERT INTO budgets (org, scope, key, \"window\", hard_limit, soft_limit, spent, "
                "reserved, window_start, resets_at, webhook_url, updated_at) VALUES (:org, "
                ":scope, :key, :window, :hard, :soft, :spent, 0, :start, :resets, :hook, :now)"),
                {"org": org, "scope": b.scope, "key": b.key, "window": b.window,
                 "hard": b.hard_limit, "soft": b.soft_limit, "spent": spent or 0,
                 "start": b.window_start, "resets": b.resets_at, "hook": b.webhook_url,
                 "now": datetime.now(timezone.utc)})


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name in ("all_orgs", "users", "features", "feature"):
            batch.drop_column(name)
    # Back to one budget per scope, key and window: keep each name's default-org copy.
    op.get_bind().execute(sa.text(
        "DELETE FROM budgets WHERE scope IN ('team', 'feature', 'user') AND org != 'default'"))
    with op.batch_alter_table("budgets") as batch:
        batch.drop_constraint("uq_budgets_org_scope_key_window", type_="unique")
        batch.create_unique_constraint("uq_budgets_scope_key_window", ["scope", "key", "window"])
        batch.drop_column("org")
