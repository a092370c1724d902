"""variational stage (docs/INTERNALS.md section 2): posterior, priors, gates, ELBO, trainer.

What each layer type samples, and how, lives in bmr_compress.layers.

Importing this subpackage imports torch (the top-level `bmr_compress` does not import it).
"""

from bmr_compress.variational.posterior import (
    enforce_masks_, gate_tensors, kl_divergence, masks, posterior_tensors, set_masks_,
    set_noise_source_, update_priors_,
)
from bmr_compress.variational.objective import hidden_gaussian
from bmr_compress.variational.serialize import (
    PosteriorState, load_posterior, restore_posterior_, save_posterior,
)
from bmr_compress.variational.settings import FinetuneSettings, PosteriorSpec
from bmr_compress.variational.state import GateTensor, PosteriorTensor
from bmr_compress.variational.trainer import (
    ElboTerms, FitResult, adam_kwargs, finetune, fit_mode_, heldout_elbo,
)
from bmr_compress.variational.wrap import UnwrapReport, WrapReport, is_wrapped, unwrap_, wrap_

__all__ = [
    "ElboTerms", "FinetuneSettings", "FitResult", "GateTensor",
    "PosteriorSpec", "PosteriorState", "PosteriorTensor", "Shard", "UnwrapReport",
    "WrapReport", "adam_kwargs", "current_shard", "enforce_masks_", "finetune", "fit_mode_", "gate_tensors", "heldout_elbo",
    "hidden_gaussian",
    "is_wrapped", "kl_divergence", "load_posterior", "local_batches", "masks",
    "posterior_tensors", "process_group", "process_shard", "restore_posterior_", "save_posterior", "set_masks_", "set_noise_source_",
    "sharded", "unwrap_", "update_priors_", "wrap_",
]

# variational.ddp resolves on first use, so `python -m bmr_compress.variational.ddp` runs it
# once (as __main__), not also as a submodule the package imported
_LAZY = {"Shard": "ddp", "current_shard": "ddp", "local_batches": "ddp", "process_group": "ddp",
         "process_shard": "ddp", "sharded": "ddp"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
