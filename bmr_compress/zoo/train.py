"""Train the seed architectures on 8x8 digits (seeded, CPU, seconds) and save in hub layout.

A zoo checkpoint directory holds ``model.safetensors``, ``config.json`` (``bmr_zoo_architecture``
+ the architecture kwargs + ``task``/``num_labels`` + training record) and ``README.md``.
``load_zoo_checkpoint(directory)`` rebuilds the model from that directory alone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmr_compress.errors import InputError
from bmr_compress.io.atomic import atomic_output_dir
from bmr_compress.io.checks import check_json_file
from bmr_compress.io.digits import digits_split
from bmr_compress.io.recipes import TrainSpec
from bmr_compress.io.split_zip import CACHE_ENV, cache_root  # noqa: F401 (CACHE_ENV re-exported)
from bmr_compress.zoo.architectures import ARCH_KEY, ZooModel, build_from_config_dict, build_model

log = logging.getLogger(__name__)



def zoo_cache_dir() -> Path:
    """Where ``zoo train`` writes by default: ``$BMR_COMPRESS_CACHE/zoo`` or ~/.cache/bmr-compress/zoo."""
    return cache_root() / "zoo"


@dataclass(frozen=True)
class TrainSettings(TrainSpec):
    """A recipe's [train] table (TrainSpec: epochs, batch size, lr, weight decay, seed) plus
    run-time-only options."""

    max_steps: int | None = None  # stop early (tests)


@dataclass(frozen=True)
class TrainResult:
    directory: Path
    architecture: str
    steps: int
    train_accuracy: float
    heldout_accuracy: float
    seconds: float


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def fit_digits(model: nn.Module, settings: TrainSettings) -> tuple[int, float, float]:
    """Train ``model`` in place with AdamW on the digits train split; returns (steps, train acc, held-out acc).

    Runs on one intra-op thread: these models are tiny, so more threads only add contention
    (and one thread keeps the float reductions in the same order on every machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_digits(model, settings)
    finally:
        torch.set_num_threads(threads)


def _fit_digits(model: nn.Module, settings: TrainSettings) -> tuple[int, float, float]:
    x_tr, y_tr, x_ho, y_ho = (torch.from_numpy(a.copy()) for a in digits_split())
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(1, settings.epochs * -(-len(x_tr) // settings.batch_size))
    )
    loss_fn = nn.CrossEntropyLoss()
    steps = 0
    for _epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen)
        for start in range(0, len(x_tr), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            if settings.max_steps is not None and steps >= settings.max_steps:
                return steps, _accuracy(model, x_tr, y_tr), _accuracy(model, x_ho, y_ho)
    return steps, _accuracy(model, x_tr, y_tr), _accuracy(model, x_ho, y_ho)


def save_zoo_checkpoint(
    model: ZooModel, directory: Path, *, extra_config: Mapping[str, Any] | None = None,
    readme: str | None = None,
) -> Path:
    """Write model.safetensors + config.json (+ README.md) into an existing ``directory``; read back."""
    from safetensors.torch import load_file, save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    weights = directory / "model.safetensors"
    save_file(state, str(weights), metadata={"format": "pt", ARCH_KEY: model.zoo_name})
    back = load_file(str(weights))
    if back.keys() != state.keys() or any(not torch.equal(back[k], state[k]) for k in state):
        raise OSError(f"read-back check failed for {weights}")
    config = {**model.zoo_config_dict(), "task": "classification",
              "num_labels": int(model.zoo_config.num_classes), **(extra_config or {})}
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if readme is not None:
        (directory / "README.md").write_text(readme)
    return weights


def is_zoo_checkpoint(directory: Path) -> bool:
    cfg = directory / "config.json"
    if not cfg.is_file():
        return False
    try:
        return ARCH_KEY in json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def load_zoo_checkpoint(directory: str | Path) -> nn.Module:
    """Rebuild a zoo model from ``directory`` (config.json + model.safetensors), eval mode."""
    from safetensors.torch import load_file

    d = Path(directory)
    cfg_path, weights = d / "config.json", d / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise InputError(f"zoo checkpoint is missing {p.name}: {d}")
    config = check_json_file(cfg_path)
    model = build_from_config_dict(config, origin=str(cfg_path))
    load_state_dict_strict(model, load_file(str(weights)), origin=str(weights))
    return model.eval()


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, origin: str) -> None:
    """load_state_dict(strict=True) with shape checks turned into one-line InputErrors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(f"{origin}: weights do not match the architecture "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise InputError(f"{origin}: shape mismatch for {k}: file {tuple(state[k].shape)} "
                         f"vs architecture {tuple(own[k].shape)}")
    model.load_state_dict(dict(state), strict=True)


def _readme(name: str, arch: str, kwargs: Mapping[str, Any], result: dict[str, Any]) -> str:
    return (
        f"# {name}\n\nA bmr-compress model-zoo seed checkpoint: zoo architecture `{arch}` "
        f"trained on scikit-learn's 8x8 digits (train split of the fixed seeded 80/20 split).\n\n"
        f"* architecture kwargs: `{json.dumps(dict(kwargs), sort_keys=True)}`\n"
        f"* held-out accuracy: {result['heldout_accuracy']:.4f} (360 images)\n"
        f"* train accuracy: {result['train_accuracy']:.4f}; steps: {result['steps']}; "
        f"seed: {result['seed']}\n\n"
        f"Reload with `bmr_compress.zoo.load_zoo_checkpoint(path)`; inputs are `pixel_values` "
        f"(B, 1, 8, 8) float in [0, 1], outputs logits (B, 10).\n"
    )


def train_zoo_model(
    architecture: str,
    arch_kwargs: Mapping[str, Any] | None,
    out_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    *,
    name: str | None = None,
    overwrite: bool = False,
    ours: bool = False,
) -> TrainResult:
    """Seed, build, train on digits, save in hub layout at ``out_dir`` (atomically).
    ``ours``: ``out_dir`` is the tool's own cache, replaced even without its marker."""
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    model = build_model(architecture, arch_kwargs or {}, origin=f"zoo architecture {architecture}")
    assert isinstance(model, ZooModel)
    steps, acc_tr, acc_ho = fit_digits(model, settings)
    record = {"steps": steps, "train_accuracy": acc_tr, "heldout_accuracy": acc_ho,
              **asdict(settings), "data": "sklearn-digits (seeded 80/20 split, seed 0)"}
    name = name or architecture
    log.info("trained %s: %d steps, held-out accuracy %.4f", name, steps, acc_ho)
    with atomic_output_dir(out_dir, overwrite=overwrite, ours=ours) as staging:
        save_zoo_checkpoint(
            model.eval(), staging,
            extra_config={"bmr_zoo_recipe": name, "bmr_zoo_training": record},
            readme=_readme(name, architecture, arch_kwargs or {}, record),
        )
    return TrainResult(Path(out_dir), architecture, steps, acc_tr, acc_ho, time.perf_counter() - t0)


def train_recipe(name: str, out: str | Path | None = None, *, overwrite: bool = False,
                 epochs: int | None = None, seed: int | None = None) -> TrainResult:
    """Train zoo recipe ``name``'s seed model with its [train] settings (CLI `zoo train`, and
    `compress zoo:NAME` on first use)."""
    import dataclasses

    from bmr_compress.io.recipes import load_recipe

    r = load_recipe(name)
    if not r.source.zoo:
        raise InputError(f"recipe {r.name!r} is a pretrained checkpoint, not a zoo model")
    spec = r.train or TrainSpec()
    over = {k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None}
    settings = TrainSettings(**{**dataclasses.asdict(spec), **over})
    target = Path(out) if out is not None else zoo_cache_dir() / r.name
    in_cache = target.expanduser().absolute() == (zoo_cache_dir() / r.name).absolute()
    return train_zoo_model(r.source.zoo, r.source.arch, target, settings, name=r.name,
                           overwrite=overwrite, ours=in_cache)
