"""Test-wide settings: hermetic (no hub access), deterministic, quiet."""

from __future__ import annotations

import os

# Nothing may be downloaded in tests: every hub call must hit the local cache or fail.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

# The tool's per-user state (report signing key) goes to a throw-away directory, never ~/.config.
if "BMR_COMPRESS_HOME" not in os.environ:
    import tempfile

    os.environ["BMR_COMPRESS_HOME"] = tempfile.mkdtemp(prefix="bmr-home-")
