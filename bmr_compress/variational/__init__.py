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
    "PosteriorSpec", "PosteriorState", "PosteriorTensor", "UnwrapReport", "WrapReport",
    "adam_kwargs", "enforce_masks_", "finetune", "fit_mode_", "gate_tensors", "heldout_elbo",
    "hidden_gaussian",
    "is_wrapped", "kl_divergence", "load_posterior", "masks", "posterior_tensors",
    "restore_posterior_", "save_posterior", "set_masks_", "set_noise_source_",
    "unwrap_", "update_priors_", "wrap_",
]
