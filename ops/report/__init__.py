"""The spend report: ledger figures, PNG charts and one HTML page (``sluice report``)."""
