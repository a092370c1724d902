"""Model-zoo recipes (TOML), shipped as package data."""
