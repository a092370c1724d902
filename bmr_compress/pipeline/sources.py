"""SOURCE resolution with every source kind registered.

io.sources knows hub repos, local transformers snapshots, weight files and hub/package
recipes; the layers above io add their own kinds when imported: the model zoo (zoo.sources:
zoo checkpoints and zoo recipes) and cutting (cutting.saved: `compress` outputs). This
module imports both, so its `resolve_source` takes every SOURCE the CLI accepts.
"""

from __future__ import annotations

import bmr_compress.cutting.saved  # noqa: F401  registers the "compressed" kind
import bmr_compress.zoo.sources  # noqa: F401  registers "zoo-checkpoint" and "zoo-recipe"
from bmr_compress.io.sources import SOURCE_KINDS, LoadedSource, resolve_source

__all__ = ["SOURCE_KINDS", "LoadedSource", "resolve_source"]
