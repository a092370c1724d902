"""bmr stage (see docs/INTERNALS.md)."""
