"""cli stage (see docs/INTERNALS.md)."""
