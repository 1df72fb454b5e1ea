"""Alembic environment: migrates the ledger tables defined in models.db.tables."""

from __future__ import annotations

import os

from alembic import context

from models.db.engine import make_engine
# Every module that defines tables, so autogenerate sees the whole schema on Base.metadata.
import models.db.api_keys  # noqa: F401
import models.db.attempts  # noqa: F401
import models.db.audit  # noqa: F401
import models.db.budgets  # noqa: F401
import models.db.rate_limits  # noqa: F401
import models.db.stored_responses  # noqa: F401
import models.db.stored_text  # noqa: F401
from models.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = (context.get_x_argument(as_dictionary=True).get("url")
           or config.get_main_option("sqlalchemy.url")
           or os.environ.get("SLUICE_DATABASE__URL"))
    if not url:
        raise SystemExit("set SLUICE_DATABASE__URL (or pass -x url=...) to the ledger database")
    return url


def run_offline() -> None:
    """Emit SQL without a connection (`alembic upgrade head --sql`)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate a live database; SQLite gets batch mode for ALTER TABLE."""
    url = _url()
    engine = make_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
