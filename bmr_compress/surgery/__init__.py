"""surgery stage (see docs/INTERNALS.md)."""
