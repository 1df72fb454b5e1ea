"""Security and data-handling tests: secrets, tenant isolation, audit, retention, dependencies."""
