"""Math core: closed-form evidence changes of Bayesian model reduction (torch + stdlib only).

**Sign convention (the only one used in bmr-compress):** ΔlnZ = ln p̃(D) − ln p(D), the log
evidence of the reduced model (reduced prior p̃, same likelihood) minus that of the full one,
≈ ln E_q[p̃(w)/p(w)]. **ΔlnZ ≥ 0 ⇒ the reduced (pruned) model is at least as good ⇒ prune.**
Free-energy differences (F = −lnZ, the opposite sign used in the seed papers' code) are never
used anywhere in this package.

Every function is element-wise over broadcastable tensors of any shape, takes log-variances
or log-sigmas (never raw precisions), computes in the input dtype (float32-safe,
float64-exact; checked against quadrature and Monte Carlo in tests/bmr) and raises
ValueError for invalid inputs. No nn.Module, no I/O. Formulas, and the test that
checks each: docs/theory.md.
The exception is `correlated` (reduced means of whole weight rows, and the joint spike
reduction of a coordinate set, under a correlated Gaussian posterior: float64, precisions as
inputs); its docstring derives it.
"""

from .correlated import joint_spike_delta_lnz, reduced_row_means, row_scales
from .dirichlet import dirichlet_delta_lnz, model_posterior
from .gates import bmrs_n_delta_lnz, bmrs_u_delta_lnz, trunc_lognormal_kl, trunc_lognormal_mean
from .gaussian import GaussianReduction, gaussian_delta_lnz, group_delta_lnz, spike_delta_lnz
from ._fast import COMPILE_MIN_NUMEL, compile_failed, score_spike_
from .precision import GRIDS, KEEP
from .threshold import beta_bernoulli_threshold

__all__ = [
    "COMPILE_MIN_NUMEL",
    "GRIDS",
    "GaussianReduction",
    "KEEP",
    "beta_bernoulli_threshold",
    "bmrs_n_delta_lnz",
    "bmrs_u_delta_lnz",
    "compile_failed",
    "dirichlet_delta_lnz",
    "gaussian_delta_lnz",
    "joint_spike_delta_lnz",
    "group_delta_lnz",
    "model_posterior",
    "reduced_row_means",
    "row_scales",
    "score_spike_",
    "spike_delta_lnz",
    "trunc_lognormal_kl",
    "trunc_lognormal_mean",
]
