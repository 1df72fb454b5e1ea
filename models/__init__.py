"""The vocabulary of sluicegate: pure domain types (models.domain) and the ledger (models.db)."""
