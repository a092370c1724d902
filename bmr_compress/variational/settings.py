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
    """How the short variational fine-tune runs.

    The loss minimised per step is the negative tempered ELBO divided by N:

        loss = mean_b[ -ln p(y_b | x_b, w) ] + temperature * KL(q || p) / n_data

    i.e. -ELBO/N with ELBO = N * E_q[ln p(y|x,w)] - temperature * KL.

    n_data (N, effective data-set size): how many independent examples the data term
        stands for. Larger N = the likelihood dominates = narrower posterior (less pruning);
        smaller N = the prior dominates = wider posterior (more pruning). None means "the
        number of examples in `batches`, but at least `min_n_data`".
    min_n_data: floor of the default N, chosen from a measurement (digits, 1200 training
        images, label-free distillation, 500 steps, log_var_lr 0.1, init_std_ratio 1e-2):
        MLP 64-64-32-10: true N = 100 collapsed the posterior (data term 5.1 nats/example,
        mean-network test accuracy 92.6 % vs 96.8 %); N = 1200 and 12000 kept accuracy
        (48 % / 41 % of weights with spike dLnZ >= 0). LeNet5: the proper ELBO with its true
        N = 1200 collapsed (data 1.0 nats/example, accuracy 82.2 % vs 93.8 %), N = 12000 kept
        it exactly (43 % prunable). Hence the floor of 10000 examples.
    temperature (lambda): weight of the KL term. 1 is the proper ELBO; < 1 a cold posterior.
    objective: "auto" (supervised when batches carry `labels`, else distillation),
        "distill", "supervised" or "both" (sum of the two data terms).
    distill: "auto" (KL on logits when the output has logits, else Gaussian on hidden
        states), "logits_kl", "hidden_gaussian" (every token state) or "pooled_gaussian"
        (the mean-pooled sentence embedding; the pipeline uses it for embedding models).
    distill_temperature: softmax temperature of the logits KL.
    hidden_noise_std: std (relative to the teacher output's RMS) of the Gaussian likelihood
        on hidden states/embeddings.
    lr / log_var_lr: Adam learning rates of the means and of log-variances and gates (the
        variance parameters get a larger rate: they move slowly under a shared one; with
        log_var_lr 1e-2 sigma barely left its initial value in 300 steps on digits).
    laplace_batches: batches used to start the posterior at its diagonal Gauss-Newton
        Laplace approximation (precision N*F/lambda + 1/s^2, mean shrunk accordingly; see
        variational/laplace.py) before the first step; 0 (default) starts at the pretrained
        weights with sigma = init_std_ratio * RMS. Measured on the digits MLP (300 steps,
        structured BMR): without it N = 1e4 kept 0.978 top-1 agreement at 1.35x fewer
        parameters; with it N = 1e4 over-pruned (3x, 0.46), N = 1e6 kept 0.994 at 1.27x.
        It converges in a few steps where the plain start cannot (a 22 M-parameter encoder
        moved its KL by 4 % in 150 steps), so use it with a larger N on big models.
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
