"""export stage (see docs/INTERNALS.md)."""
