"""The ledger: SQLAlchemy 2 tables and repository functions that take a Session."""
