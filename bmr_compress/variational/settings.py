"""Settings of the variational stage: what to wrap (PosteriorSpec), how to fit (FinetuneSettings).

Both are frozen dataclasses loaded strictly from plain data (unknown keys are an error).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bmr_compress.errors import InputError

_T = TypeVar("_T")

GATE_KINDS = ("lognormal", "gaussian")


def _strict(cls: type[_T], data: Mapping[str, Any]) -> _T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**dict(data))


@dataclass(frozen=True)
class PosteriorSpec:
    """What `wrap_` puts around a model.

    init_std_ratio: posterior sigma at start = ratio * RMS(tensor) (floor 1e-8), so the
        posterior starts as a narrow bump around the pretrained weights.
    prior: "empirical_bayes" (s^2 = mean(mu^2 + sigma^2), closed form) or "gamma"
        (Markovic et al.: Gamma(gamma_a0, gamma_b0) hyperprior on the tensor's prior
        precision; the mean-field update gives s^2 = (b0 + sum(mu^2+sigma^2)/2) / (a0 + n/2)).
    gate_kind: "lognormal" (BMRS truncated log-normal on x = ln theta in [gate_log_a,
        gate_log_b], log-uniform prior) or "gaussian" (N(mu, sigma^2) on theta, prior N(0, 1)).
    gates: (module qualified name, unit_size) pairs: one gate per unit_size consecutive
        output channels of that module (1 for neurons/filters, head_dim for heads).
    wrap_norms: also wrap normalisation affine parameters and unknown parameter holders
        (weight-space sampling); if False they are reported as skipped.
    """

    init_std_ratio: float = 1e-2
    prior: str = "empirical_bayes"
    gamma_a0: float = 2.0
    gamma_b0: float = 2.0
    gate_kind: str = "lognormal"
    gates: tuple[tuple[str, int], ...] = ()
    gate_log_a: float = -20.0
    gate_log_b: float = 0.0
    wrap_norms: bool = True

    def __post_init__(self) -> None:
        if self.prior not in ("empirical_bayes", "gamma"):
            raise InputError(f"unknown prior {self.prior!r} (empirical_bayes or gamma)")
        if self.gate_kind not in GATE_KINDS:
            raise InputError(f"unknown gate kind {self.gate_kind!r} ({', '.join(GATE_KINDS)})")
        if not self.init_std_ratio > 0:
            raise InputError("init_std_ratio must be > 0")
        object.__setattr__(self, "gates", tuple((str(m), int(u)) for m, u in self.gates))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PosteriorSpec:
        return _strict(cls, data)


@dataclass(frozen=True)
class FinetuneSettings:
    """How the short variational fine-tune runs (the maths: docs/theory.md §5).

    The loss minimised per step is the negative tempered ELBO divided by N:

        loss = mean_b[ -ln p(y_b | x_b, w) ] + temperature * KL(q || p) / n_data

    n_data (N, effective data-set size): how many independent examples the data term
        stands for. Larger N = narrower posterior (less pruning), smaller N = wider (more).
        None: the number of examples in `batches`, but at least `min_n_data`.
    min_n_data: floor of the default N (a smaller proper-ELBO N collapsed the posterior
        onto the prior on the digits models; docs/theory.md §5 has the measurements).
    temperature (lambda): weight of the KL term. 1 is the proper ELBO; < 1 a cold posterior.
    objective: "auto" (supervised when batches carry `labels`, else distillation),
        "distill", "supervised" or "both" (sum of the two data terms).
    distill: "auto" (KL on logits when the output has logits, else Gaussian on hidden
        states), "logits_kl", "hidden_gaussian" (every token state) or "pooled_gaussian"
        (the mean-pooled sentence embedding; the pipeline uses it for embedding models).
    distill_temperature: softmax temperature of the logits KL.
    hidden_noise_std: std (relative to the teacher output's RMS) of the Gaussian likelihood
        on hidden states/embeddings.
    lr / log_var_lr: Adam learning rates of the means and of log-variances and gates.
    laplace_batches: batches used to start the posterior at its diagonal Gauss-Newton
        Laplace approximation (variational/laplace_start.py) before the first step; 0 starts at
        the pretrained weights with sigma = init_std_ratio * RMS.
    prior_update_every: steps between closed-form prior (empirical-Bayes) updates.
    grad_clip: max global gradient norm (0 disables).
    """

    steps: int = 200
    lr: float = 1e-4
    log_var_lr: float = 0.1
    n_data: int | None = None
    min_n_data: int = 10_000
    temperature: float = 1.0
    objective: str = "auto"
    distill: str = "auto"
    distill_temperature: float = 1.0
    hidden_noise_std: float = 0.1
    laplace_batches: int = 0
    prior_update_every: int = 1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    progress: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    resume: bool = False
    output_dir: str | None = None

    def __post_init__(self) -> None:
        if self.objective not in ("auto", "distill", "supervised", "both"):
            raise InputError(f"unknown objective {self.objective!r}")
        if self.distill not in ("auto", "logits_kl", "hidden_gaussian", "pooled_gaussian"):
            raise InputError(f"unknown distill mode {self.distill!r}")
        if self.steps < 0 or self.temperature < 0 or (self.n_data is not None and self.n_data <= 0):
            raise InputError("steps and temperature must be >= 0 and n_data > 0")
        for name in ("lr", "log_var_lr"):
            v = float(getattr(self, name))
            if not 0 < v < float("inf"):
                raise InputError(f"{name} must be a finite number > 0, got {v}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneSettings:
        return _strict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
