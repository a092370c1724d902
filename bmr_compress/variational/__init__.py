"""variational stage (see docs/INTERNALS.md)."""
