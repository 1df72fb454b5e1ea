"""The Alembic chain is linear and, applied to an empty SQLite database, matches the tables."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import models.db.api_keys  # noqa: F401
import models.db.attempts  # noqa: F401
import models.db.audit  # noqa: F401
import models.db.budgets  # noqa: F401
import models.db.rate_limits  # noqa: F401
import models.db.stored_responses  # noqa: F401
import models.db.stored_text  # noqa: F401
from models.db.engine import make_engine
from models.db.tables import Base
from ops.db import alembic_config, upgrade


def test_one_head_and_a_linear_history(tmp_path: Path) -> None:
    script = ScriptDirectory.from_config(alembic_config(f"sqlite:///{tmp_path}/x.db"))
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert [r.revision for r in reversed(revisions)][:1] == ["0001"]


def test_migrations_create_exactly_the_declared_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    # Type-affinity noise aside, no table, column or index may be missing on either side.
    structural = [d for d in diff if d[0] in ("add_table", "remove_table", "add_column",
                                             "remove_column")]
    assert structural == [], structural
