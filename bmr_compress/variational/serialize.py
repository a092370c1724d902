"""posterior.safetensors: the fitted posterior as plain tensors (docs/INTERNALS.md section 2).

Keys "<param>::mu", "<param>::log_var", "<param>::prior_log_var" (0-d), and per gated
module "<module>::gate_mu", "<module>::gate_log_sigma"; header metadata "bmr_gates"
(JSON: module -> {axis, unit_size, kind, log_a, log_b}) and "bmr_settings" (JSON).
Every write is read back and compared.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmr_compress.errors import InputError
from bmr_compress.variational.state import GateTensor, PosteriorTensor


@dataclass(frozen=True)
class PosteriorState:
    tensors: dict[str, PosteriorTensor]
    gates: dict[str, GateTensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def _flatten(tensors: dict[str, PosteriorTensor],
             gates: dict[str, GateTensor]) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for n, t in tensors.items():
        flat[f"{n}::mu"] = t.mu
        flat[f"{n}::log_var"] = t.log_var
        flat[f"{n}::prior_log_var"] = t.prior_log_var
    for n, g in gates.items():
        flat[f"{n}::gate_mu"] = g.mu
        flat[f"{n}::gate_log_sigma"] = g.log_sigma
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in flat.items()}


def save_posterior(
    path: str | os.PathLike,
    model_or_tensors: nn.Module | PosteriorState | dict[str, PosteriorTensor],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the posterior of a wrapped model (or given tensors) and read it back."""
    from safetensors.torch import save_file

    from bmr_compress.variational.posterior import gate_tensors, posterior_tensors

    if isinstance(model_or_tensors, nn.Module):
        tensors, gates = posterior_tensors(model_or_tensors), gate_tensors(model_or_tensors)
    elif isinstance(model_or_tensors, PosteriorState):
        tensors, gates = model_or_tensors.tensors, model_or_tensors.gates
    else:
        tensors, gates = dict(model_or_tensors), {}
    flat = _flatten(tensors, gates)
    meta = {
        "format": "bmr-posterior/1",
        "bmr_gates": json.dumps({
            n: {"axis": g.axis, "unit_size": g.unit_size, "kind": g.kind, "log_a": g.log_a,
                "log_b": g.log_b} for n, g in gates.items()}),
        "bmr_settings": json.dumps(metadata or {}, sort_keys=True, default=str),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(flat, str(tmp), metadata=meta)
    back = load_posterior(tmp)
    for n, t in tensors.items():
        if not torch.equal(back.tensors[n].mu, flat[f"{n}::mu"]):
            raise OSError(f"read-back mismatch for {n} in {path}")
    os.replace(tmp, path)
    return path


def load_posterior(path: str | os.PathLike) -> PosteriorState:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"posterior file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"cannot read posterior file {path}: {exc}") from exc
    try:
        gate_meta = json.loads(meta.get("bmr_gates", "{}"))
        settings = json.loads(meta.get("bmr_settings", "{}"))
    except json.JSONDecodeError as exc:
        raise InputError(f"posterior file {path}: unreadable header metadata ({exc})") from None
    if not isinstance(gate_meta, dict) or not isinstance(settings, dict) or not all(
            isinstance(g, dict) for g in gate_meta.values()):
        raise InputError(f"posterior file {path}: header metadata is not a JSON object table")
    names = sorted({k.rsplit("::", 1)[0] for k in flat if k.endswith("::mu")})
    try:
        tensors = {n: PosteriorTensor(flat[f"{n}::mu"], flat[f"{n}::log_var"],
                                      flat[f"{n}::prior_log_var"]) for n in names}
        gates = {n: GateTensor(n, int(g["axis"]), int(g["unit_size"]), flat[f"{n}::gate_mu"],
                               flat[f"{n}::gate_log_sigma"], g.get("kind", "lognormal"),
                               float(g.get("log_a", -20.0)), float(g.get("log_b", 0.0)))
                 for n, g in gate_meta.items()}
    except KeyError as exc:
        raise InputError(f"posterior file {path} lacks tensor {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"posterior file {path}: malformed gate table ({exc})") from None
    return PosteriorState(tensors, gates, settings)


def restore_posterior_(model: nn.Module, state: PosteriorState) -> list[str]:
    """Copy a saved posterior (mu, log sigma^2, prior, gates) into a freshly wrapped model.

    The model must have been wrapped with the same gates; returns the tensor names restored.
    """
    from bmr_compress.variational.wrap import wrap_state

    st = wrap_state(model)
    missing = sorted(set(state.tensors) - set(st.entries))
    gates_missing = sorted(set(state.gates) - set(st.gates))
    if missing or gates_missing:
        what = missing[0] if missing else f"gate {gates_missing[0]}"
        raise InputError(f"posterior does not match the model: no {what!r}")
    with torch.no_grad():
        for name, pt in state.tensors.items():
            e = st.entries[name]
            if tuple(pt.mu.shape) != tuple(e.mu.shape):
                raise InputError(f"posterior shape {tuple(pt.mu.shape)} != model "
                                 f"{tuple(e.mu.shape)} for {name}")
            e.mu.copy_(pt.mu)
            e.log_var.copy_(pt.log_var)
            e.prior_log_var().copy_(pt.prior_log_var)
        for name, g in state.gates.items():
            st.gates[name].mu.copy_(g.mu)
            st.gates[name].log_sigma.copy_(g.log_sigma)
    return list(state.tensors)
