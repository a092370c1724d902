"""Fine-tune checkpoints: safetensors (model, optimizer, RNG) + JSON (step, history). No pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmr_compress.errors import InputError

_ST, _JS = "checkpoint.safetensors", "checkpoint.json"


def _model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {f"param::{k}": v for k, v in model.named_parameters()}
    out.update({f"buffer::{k}": v for k, v in model.named_buffers()})
    return out


def save_checkpoint(directory: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, info: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().cpu().contiguous() for k, v in _model_tensors(model).items()}
    sd = optimizer.state_dict()
    for idx, st in sd["state"].items():
        for key, val in st.items():
            flat[f"optim::{idx}::{key}"] = torch.as_tensor(val).detach().cpu().contiguous()
    flat["rng::generator"] = generator.get_state().cpu()
    save_file(flat, str(d / (_ST + ".tmp")))
    os.replace(d / (_ST + ".tmp"), d / _ST)
    meta = dict(info, param_groups=sd["param_groups"])
    (d / (_JS + ".tmp")).write_text(json.dumps(meta, default=str))
    os.replace(d / (_JS + ".tmp"), d / _JS)
    return d


def has_checkpoint(directory: str | os.PathLike | None) -> bool:
    if directory is None:
        return False
    return (Path(directory) / _JS).is_file() and (Path(directory) / _ST).is_file()


def load_checkpoint(directory: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> dict[str, Any]:
    """Restore model tensors, optimizer state and generator in place; returns the JSON info."""
    from safetensors.torch import load_file

    d = Path(directory)
    flat = load_file(str(d / _ST))
    info = json.loads((d / _JS).read_text())
    with torch.no_grad():
        for k, v in _model_tensors(model).items():
            if k not in flat:
                raise InputError(f"checkpoint {d} lacks {k} (was it made for another model?)")
            v.copy_(flat[k])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        if k.startswith("optim::"):
            _, idx, key = k.split("::")
            state.setdefault(int(idx), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})
    generator.set_state(flat["rng::generator"].to(generator.get_state().device))
    return info
