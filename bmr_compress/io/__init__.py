"""io stage (see docs/INTERNALS.md)."""
