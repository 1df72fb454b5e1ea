"""The ``sluice`` admin CLI (Typer and rich)."""
