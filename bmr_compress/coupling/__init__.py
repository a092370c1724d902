"""Coupling: which tensor slices each removable unit owns.

Family adapters (heads, KV groups, FFN neurons, hidden dimensions of registered transformer
families) or, for any other model, Torch-Pruning's dependency graph traced on example inputs.
Discovery only: nothing here changes a model. Submodules import torch; `import bmr_compress`
does not import this package.
"""

from bmr_compress.coupling.groups import Slice, UnitGroup
from bmr_compress.coupling.discover import discover_groups

__all__ = ["Slice", "UnitGroup", "discover_groups"]
