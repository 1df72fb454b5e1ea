"""Versioned data files shipped with the package (prices and model catalogue)."""
