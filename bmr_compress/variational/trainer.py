"""The short variational fine-tune: minimise -ELBO/N over a wrapped model.

loss = data_term + temperature * KL / N (see FinetuneSettings). Runs on CUDA with bf16
autocast when available, else CPU float32; under torchrun each rank takes its contiguous
slice of every global batch, DDP averages gradients, and only rank 0 writes files.
During the fit the posterior is the only noise: dropout is switched off and BatchNorm
uses its running statistics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmr_compress.errors import DivergenceError, InputError
from bmr_compress.tasks import output_tensor
from bmr_compress.variational import checkpoint as ckpt
from bmr_compress.variational.objective import data_term, output_is_logits
from bmr_compress.variational.posterior import (
    enforce_masks_, gate_kl, gaussian_kl_grad_, kl_divergence, set_noise_source_,
    variance_parameters,
)
from bmr_compress.variational.settings import FinetuneSettings
from bmr_compress.variational.wrap import ddp_inner, wrap_state

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ElboTerms:
    """Per-example terms: elbo = -(data + temperature * kl / n_data); kl is the total KL."""

    elbo: float
    data: float
    kl: float
    n_data: int


@dataclass(frozen=True)
class FitResult:
    steps: int
    start_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    n_data: int = 0
    wall_s: float = 0.0
    steps_per_s: float = 0.0
    posterior_path: Path | None = None
    device: str = "cpu"


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _device(settings: FinetuneSettings) -> torch.device:
    if settings.device != "auto":
        return torch.device(settings.device)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", _dist()[0]))  # set by torchrun
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def _shard(batch: Batch, rank: int, world: int, device: torch.device) -> Batch:
    out = {}
    for k, v in batch.items():
        b = v.shape[0]
        if b % world:
            raise InputError(f"global batch of {b} is not divisible by {world} processes")
        s = b // world
        out[k] = v[rank * s:(rank + 1) * s].to(device)
    return out


def fit_mode_(model: nn.Module) -> None:
    """Posterior sampling on, everything else in eval behaviour (no dropout, BatchNorm on
    running statistics): every submodule is put in eval mode and only the root's flag,
    which the posterior hooks read, is set to training."""
    model.eval()
    model.training = True


def adam_kwargs(device: torch.device) -> dict[str, Any]:
    """The fused Adam kernel where this torch build has it for the device (one pass per tensor)."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    try:
        return {"fused": True} if device.type in _get_fused_kernels_supported_devices() else {}
    except Exception:  # private helper moved: fall back to the default implementation
        return {}


def count_examples(batches: Sequence[Batch]) -> int:
    return sum(int(next(iter(b.values())).shape[0]) for b in batches)


def _autocast(device: torch.device, settings: FinetuneSettings):
    if device.type == "cuda" and settings.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step_terms(model, teacher, batch: Batch, settings, device,
                full_kl: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(data term, KL) for one local batch; with full_kl=False only the gates' KL."""
    inputs = dict(batch)
    labels = inputs.pop("labels", None)
    with _autocast(device, settings):
        out = model(**inputs)
        t_out = None
        if teacher is not None:
            with torch.no_grad():
                t_out = output_tensor(teacher(**inputs))
    student = output_tensor(out)
    data = data_term(student, t_out, labels, inputs.get("attention_mask"), settings,
                     output_is_logits(out, student))
    return data, kl_divergence(model) if full_kl else gate_kl(model)


def finetune(model: nn.Module, teacher: nn.Module | None, batches: Sequence[Batch],
             settings: FinetuneSettings) -> FitResult:
    """Fit the posterior of a wrapped `model` (see wrap_) on `batches` (global batches)."""
    base = ddp_inner(model)
    st = wrap_state(base)
    if not batches:
        raise InputError("finetune needs at least one batch")
    rank, world = _dist()
    device = _device(settings)
    base.to(device)
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    torch.manual_seed(settings.seed)
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    set_noise_source_(base, gen, rank, world)
    n_data = settings.n_data or max(count_examples(batches), settings.min_n_data)
    means, variances = variance_parameters(base)
    opt = torch.optim.Adam([{"params": [p for p in means if p.requires_grad], "lr": settings.lr},
                            {"params": variances, "lr": settings.log_var_lr}],
                           **adam_kwargs(device))
    run = _Run(base, base, teacher, opt, gen, settings, device, rank, world, n_data,
               Path(settings.checkpoint_dir or ".") / DIVERGED_MARK)
    start = _resume_or_init(run, batches)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run.net = DDP(base, device_ids=[device.index] if device.type == "cuda" else None,
                      broadcast_buffers=False)
    fit_mode_(base)
    t0 = time.perf_counter()
    _fit_loop(run, batches, start)
    wall = time.perf_counter() - t0
    base.eval()
    path = None
    if settings.output_dir and rank == 0:
        from bmr_compress.variational.serialize import save_posterior

        meta = {"finetune": settings.to_dict(), "posterior_spec": _spec_dict(st.spec),
                "n_data": n_data}
        path = save_posterior(Path(settings.output_dir) / "posterior.safetensors", base, meta)
    done = settings.steps - start
    return FitResult(settings.steps, start, run.history, n_data, wall,
                     done / wall if wall > 0 else 0.0, path, str(device))


@dataclass
class _Run:
    """One fine-tune's state, shared by the step loop's parts."""

    base: nn.Module
    net: nn.Module  # base, or its DDP wrapper
    teacher: nn.Module | None
    opt: torch.optim.Optimizer
    gen: torch.Generator
    settings: FinetuneSettings
    device: torch.device
    rank: int
    world: int
    n_data: int
    diverged_mark: Path
    history: list[dict[str, float]] = field(default_factory=list)

    def checkpoint(self, step: int) -> None:
        ckpt.save_checkpoint(self.settings.checkpoint_dir, self.base, self.opt, self.gen,
                             {"step": step, "history": self.history,
                              "settings": self.settings.to_dict()})


def _resume_or_init(run: _Run, batches: Sequence[Batch]) -> int:
    """Resume from the checkpoint (unless it diverged) or Laplace-initialise; the start step."""
    settings, where = run.settings, run.settings.checkpoint_dir
    if settings.resume and ckpt.has_checkpoint(where) and run.diverged_mark.exists():
        log.warning("the run checkpointed in %s diverged: starting afresh (its state is kept "
                    "until this run checkpoints)", where)
    elif settings.resume and ckpt.has_checkpoint(where):
        info = ckpt.load_checkpoint(where, run.base, run.opt, run.gen)
        run.history = list(info["history"])
        for group, lr in zip(run.opt.param_groups, (settings.lr, settings.log_var_lr)):
            group["lr"] = lr  # this run's settings, not the checkpoint's
        log.info("resumed from %s at step %d", where, int(info["step"]))
        return int(info["step"])
    elif settings.laplace_batches > 0:
        from bmr_compress.variational.laplace_start import laplace_init_

        laplace_init_(run.base, batches, settings, run.n_data, run.device)
    return 0


def _fit_loop(run: _Run, batches: Sequence[Batch], start: int) -> None:
    """Steps start..settings.steps, with a progress bar; the end state is checkpointed."""
    settings = run.settings
    bar = _progress(settings, start, run.rank)
    t_prev, c_prev = time.perf_counter(), time.process_time()
    try:
        for step in range(start, settings.steps):
            rec = _step(run, batches, step, start)
            now, cpu = time.perf_counter(), time.process_time()
            rec.update(step_s=now - t_prev, step_cpu_s=cpu - c_prev)
            t_prev, c_prev = now, cpu
            run.history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(elbo=f"{rec['elbo']:.4g}", data=f"{rec['data']:.4g}",
                                kl=f"{rec['kl']:.4g}", refresh=False)
        every = settings.checkpoint_every
        if (settings.checkpoint_dir and every and settings.steps % every == 0
                and settings.steps > start and run.rank == 0):  # the completed run's end state
            run.checkpoint(settings.steps)
    finally:
        if bar is not None:
            bar.close()


def _step(run: _Run, batches: Sequence[Batch], step: int, start: int) -> dict[str, float]:
    """One optimiser step on global batch `step`; returns its record (without timings)."""
    settings, base, opt = run.settings, run.base, run.opt
    batch = _shard(batches[step % len(batches)], run.rank, run.world, run.device)
    data, gkl = _step_terms(run.net, run.teacher, batch, settings, run.device, full_kl=False)
    scale = settings.temperature / run.n_data
    opt.zero_grad(set_to_none=True)
    part = data.float() + scale * gkl  # the Gaussian KL's gradient is added in closed form
    bad = not bool(torch.isfinite(part.detach()))
    gnorm, kl, pending = float("nan"), gkl.item(), []
    if not bad:
        part.backward()
        every = settings.prior_update_every
        refresh = bool(every) and (step + 1) % every == 0
        gauss, pending = gaussian_kl_grad_(base, scale, update_prior=refresh)
        kl += gauss
        params = [p for g in opt.param_groups for p in g["params"]]
        clip = settings.grad_clip if settings.grad_clip > 0 else math.inf
        gnorm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        bad = not (math.isfinite(gnorm) and math.isfinite(kl))
    if bad:
        _diverged(settings, base, opt, run.gen, step, run.history, data.item(), kl, run.rank)
    # checkpoint the state *before* this step once its loss proved finite, so that
    # a checkpoint never holds parameters that have not been evaluated
    every = settings.checkpoint_every
    if (settings.checkpoint_dir and every and step % every == 0
            and (step != start or step == 0) and run.rank == 0):
        run.checkpoint(step)
        run.diverged_mark.unlink(missing_ok=True)
    opt.step()
    enforce_masks_(base)
    with torch.no_grad():
        for buf, value in pending:  # closed-form empirical-Bayes prior refresh
            buf.copy_(value.to(buf.dtype))
    loss = data.detach().float() + scale * kl
    lv, dv, kv = _global_mean(torch.stack([loss, data.detach().float(),
                                           torch.tensor(kl, device=loss.device)]), run.world)
    return {"step": step + 1, "loss": lv, "data": dv, "kl": kv, "elbo": -lv,
            "grad_norm": gnorm}


def _global_mean(x: torch.Tensor, world: int) -> list[float]:
    """Average logged scalars over ranks, so the record is the global batch's."""
    if world > 1:
        x = x.clone()
        torch.distributed.all_reduce(x)
        x /= world
    return [float(v) for v in x.tolist()]


def _spec_dict(spec: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(spec)


def _progress(settings: FinetuneSettings, start: int, rank: int):
    if not settings.progress or rank != 0:
        return None
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, nothing when stderr is a file or pipe (logs, CI)
    return tqdm(total=settings.steps, initial=start, file=sys.stderr, unit="step",
                desc="variational fine-tune", dynamic_ncols=True, disable=None)


DIVERGED_MARK = "DIVERGED"


def _diverged(settings, base, opt, gen, step, history, data, kl, rank) -> None:
    """Stop with a clear message. The last periodic checkpoint (written before the step that
    went non-finite) is the last good state and is kept as it is; with no checkpoint yet,
    the current parameters (which produced the non-finite loss) are not saved."""
    where = ""
    if (settings.checkpoint_dir and rank == 0 and not ckpt.has_checkpoint(settings.checkpoint_dir)
            and all(bool(torch.isfinite(p).all()) for p in base.parameters())):
        # no periodic checkpoint yet: keep the current (finite) parameters for inspection
        ckpt.save_checkpoint(settings.checkpoint_dir, base, opt, gen,
                             {"step": step, "history": history, "settings": settings.to_dict()})
    if settings.checkpoint_dir and ckpt.has_checkpoint(settings.checkpoint_dir):
        where = f"; last good state kept in {settings.checkpoint_dir}"
        if rank == 0:  # a rerun starts afresh instead of resuming into the divergence
            (Path(settings.checkpoint_dir) / DIVERGED_MARK).write_text(f"step {step + 1}\n")
    raise DivergenceError(
        f"fine-tune diverged at step {step + 1}: non-finite loss or gradient (data {data:.4g}, "
        f"KL {kl:.4g}); parameters kept at step {step}{where}; try a lower lr/log_var_lr")


@torch.no_grad()
def heldout_elbo(model: nn.Module, teacher: nn.Module | None, batches: Sequence[Batch],
                 settings: FinetuneSettings, *, samples: int = 1,
                 n_data: int | None = None) -> ElboTerms:
    """Monte Carlo ELBO per example on held-out batches (seeded by settings.seed; no update).

    n_data defaults to settings.n_data, else max(held-out examples, settings.min_n_data).
    """
    base = ddp_inner(model)
    st = wrap_state(base)
    device = next(base.parameters()).device
    old_noise = (st.noise.generator, st.noise.rank, st.noise.world)
    set_noise_source_(base, torch.Generator(device=device).manual_seed(settings.seed), 0, 1)
    was_training = base.training
    fit_mode_(base)
    try:
        total, count = 0.0, 0
        for _ in range(samples):
            for b in batches:
                batch = {k: v.to(device) for k, v in b.items()}
                data, _kl = _step_terms(base, teacher, batch, settings, device)
                bsz = int(next(iter(b.values())).shape[0])
                total += float(data) * bsz
                count += bsz
        kl = float(kl_divergence(base))
    finally:
        set_noise_source_(base, *old_noise)
        base.train(was_training)
    n = n_data or settings.n_data or max(count_examples(batches), settings.min_n_data)
    data_mean = total / max(count, 1)
    return ElboTerms(-(data_mean + settings.temperature * kl / n), data_mean, kl, n)
