"""The one layer-type registry (bmr_compress/layers.py), driven by its own contents.

For every registered type: a tiny model containing that layer goes through wrap (gates where
the type allows them) -> score -> compensate -> cut -> reload, with the unit groups built
from the registry's channel axes alone; the function is preserved by the gate folding, by
the cut (against the same-shape model with the removed units zeroed) and by the reload.
Then a layer type defined here, in the test, is supported by registering one class.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from bmr_compress.errors import UnsupportedModelError
from bmr_compress.layers import (
    LAYER_TYPES, LayerType, channel_type, class_path, layer_type, register_layer,
)
from bmr_compress.cutting import apply_plan_, load_compressed, save_compressed
from bmr_compress.planning import Plan, PlanSettings, structured_masks
from bmr_compress.scoring import gate_sites, score_groups
from bmr_compress.coupling import Slice, UnitGroup
from bmr_compress.coupling.adapters import out_size
from bmr_compress.cutting.compensate import compensate_
from bmr_compress.coupling.groups import column
from bmr_compress.cutting.saved import ARCHITECTURES, register_architecture
from bmr_compress.variational import (
    PosteriorSpec, fit_mode_, posterior_tensors, unwrap_, wrap_,
)
from bmr_compress.variational.wrap import wrap_state


class Chain(nn.Module):
    """x -> body (an nn.Sequential); keyword input, as the calibration batches give it."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Gain(nn.Module):
    """A parameter holder no type knows: the generic (nn.Module) type."""

    def __init__(self, n: int):
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


@dataclass(frozen=True)
class Case:
    layers: Callable[[], list[nn.Module]]
    inputs: Callable[[int, int], torch.Tensor]  # (batch, seed) -> x; shape varies with seed
    norms: tuple[str, ...] = ()  # coupled to the producer body.0 (consumer: the last layer)
    consumer: str = "body.2"


def _randn(shape: Callable[[int], tuple[int, ...]]) -> Callable[[int, int], torch.Tensor]:
    """Inputs (batch, *shape(seed)) in float64."""
    def make(batch: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, *shape(seed), generator=g, dtype=torch.float64)
    return make


def _ids(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 13, (batch, 4 + seed % 3), generator=g)


def _uncut(norm: Callable[[], nn.Module]) -> Case:
    """A type without channel axes sits on a width that is not cut."""
    return Case(lambda: [nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 6), norm(), nn.Linear(6, 4)],
                _randn(lambda s: (6,)))


CASES: dict[type, Case] = {
    nn.Linear: Case(lambda: [nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 5)],
                    _randn(lambda s: (3 + s % 2, 6))),
    nn.Conv1d: Case(lambda: [nn.Conv1d(3, 7, 3, padding=1), nn.Tanh(), nn.Conv1d(7, 4, 3)],
                    _randn(lambda s: (3, 9 + s))),
    nn.Conv2d: Case(lambda: [nn.Conv2d(3, 7, 3, padding=1), nn.Tanh(), nn.Conv2d(7, 4, 3)],
                    _randn(lambda s: (3, 7 + s, 6))),
    nn.Conv3d: Case(lambda: [nn.Conv3d(2, 5, 3, padding=1), nn.Tanh(), nn.Conv3d(5, 3, 1)],
                    _randn(lambda s: (2, 4, 3 + s, 5))),
    Conv1D: Case(lambda: [Conv1D(9, 6), nn.Tanh(), Conv1D(5, 9)], _randn(lambda s: (4 + s, 6))),
    nn.Embedding: Case(lambda: [nn.Embedding(13, 9), nn.Tanh(), nn.Linear(9, 5)], _ids),
    nn.LayerNorm: Case(lambda: [nn.Linear(6, 9), nn.LayerNorm(9), nn.Tanh(), nn.Linear(9, 5)],
                       _randn(lambda s: (6,)), ("body.1",), "body.3"),
    nn.modules.batchnorm._BatchNorm: Case(
        lambda: [nn.Conv2d(3, 7, 3, padding=1), nn.BatchNorm2d(7), nn.Tanh(), nn.Conv2d(7, 4, 3)],
        _randn(lambda s: (3, 6 + s, 5)), ("body.1",), "body.3"),
    nn.modules.instancenorm._InstanceNorm: Case(
        lambda: [nn.Conv1d(3, 7, 3, padding=1), nn.InstanceNorm1d(7, affine=True), nn.Tanh(),
                 nn.Conv1d(7, 4, 3)],
        _randn(lambda s: (3, 8 + s)), ("body.1",), "body.3"),
    nn.GroupNorm: _uncut(lambda: nn.GroupNorm(3, 6)),
    nn.RMSNorm: _uncut(lambda: nn.RMSNorm(6)),
    nn.Module: _uncut(lambda: Gain(6)),
}


def _build(case: Case) -> Chain:
    torch.manual_seed(0)
    model = Chain(*case.layers()).double().eval()
    with torch.no_grad():  # non-trivial biases, norm parameters and statistics
        for m in model.modules():
            for name, (lo, hi) in {"weight": (0.5, 1.5), "running_var": (0.5, 1.5),
                                   "bias": (-0.3, 0.3), "running_mean": (-0.3, 0.3)}.items():
                t = getattr(m, name, None)
                if isinstance(t, torch.Tensor) and t.dim() == 1:
                    t.uniform_(lo, hi)
    return model


def chain_group(model: nn.Module, producer: str, consumer: str, norms=()) -> UnitGroup:
    """The producer's output channels as units, read from the registry: the producer's and
    the norms' out tensors, the consumer's in tensors."""
    mods = dict(model.named_modules())
    n = out_size(mods[producer])
    idx = column(n)
    slices = []
    for name, side in [(producer, "out"), *((m, "out") for m in norms), (consumer, "in")]:
        lt = channel_type(mods[name])
        for tname, dim in lt.out_tensors if side == "out" else lt.in_tensors:
            if isinstance(getattr(mods[name], tname, None), torch.Tensor):
                role = lt.out_role if side == "out" else "in"
                slices.append(Slice(f"{name}.{tname}", dim, idx, role))
    return UnitGroup(producer, layer_type(mods[producer]).unit, n, tuple(slices))


def _masked_layer_norm(module: nn.LayerNorm, keep: torch.Tensor):
    """The cut LayerNorm's math on the full width: normalise over kept channels, others 0."""
    def fwd(x: torch.Tensor) -> torch.Tensor:
        y = torch.zeros_like(x)
        y[..., keep] = F.layer_norm(x[..., keep], (len(keep),), module.weight[keep],
                                    module.bias[keep], module.eps)
        return y
    return fwd


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-9) -> None:
    err, scale = float((a - b).abs().max()), max(float(b.abs().max()), 1e-12)
    assert err <= rel * scale, f"max abs err {err:.3e} > {rel} * {scale:.3e}"


def roundtrip(case: Case, tmp_path, arch: str) -> dict[str, str]:
    """wrap -> score -> compensate -> cut -> reload; returns the wrap coverage."""
    model = _build(case)
    x, x2 = case.inputs(4, 1), case.inputs(3, 2)  # x2: another shape than any seen
    groups = [chain_group(model, "body.0", case.consumer, case.norms)]
    # wrap: sample once, then the gates fold into the weights at E[theta] without a change
    report = wrap_(model, PosteriorSpec(gates=gate_sites(groups), init_std_ratio=0.5))
    with torch.no_grad():
        at_mean = model(x)
        fit_mode_(model)
        assert torch.isfinite(model(x)).all() and not torch.equal(model(x), at_mean)
        model.eval()
    post = posterior_tensors(model)
    unwrap_(model)
    with torch.no_grad():
        _close(model(x), at_mean)
    # score and plan: remove the ~40 % of units with the largest ΔlnZ
    scores = score_groups(groups, post)[groups[0].name]
    n_keep = groups[0].num_units - max(1, round(0.4 * groups[0].num_units))
    keep = {groups[0].name: sorted(int(i) for i in torch.argsort(scores, stable=True)[:n_keep])}
    plan = Plan(keep, {}, PlanSettings(round_to=0))
    masks = structured_masks(groups, plan, {k: v.shape for k, v in model.state_dict().items()})
    comp = compensate_(model, post, masks, [{"x": case.inputs(8, s)} for s in range(3)])
    consumer = model.get_submodule(case.consumer)
    assert (case.consumer in comp.layers) == layer_type(consumer).rows_ok(consumer)
    for v in comp.layers.values():
        assert v["output_error_reduced"] <= v["output_error_zeroed"] + 1e-12
    ref = copy.deepcopy(model)  # same shapes, removed units zeroed
    with torch.no_grad():
        for k, p in ref.state_dict(keep_vars=True).items():
            if k in masks:
                p.mul_(masks[k].to(p.dtype))
    for name in case.norms:
        if isinstance(ref.get_submodule(name), nn.LayerNorm):
            mod = ref.get_submodule(name)
            mod.forward = _masked_layer_norm(mod, torch.tensor(keep[groups[0].name]))
    before = sum(p.numel() for p in model.parameters())
    record = apply_plan_(model, groups, plan)
    assert record.params_after < before
    assert out_size(model.body[0]) == n_keep
    with torch.no_grad():
        got = model(x2)
        _close(got, ref(x2))
    if arch not in ARCHITECTURES:
        register_architecture(arch)(lambda cfg, case=case: _build(case))
    save_compressed(model, record, tmp_path, architecture=arch, init_config={})
    with torch.no_grad():
        _close(load_compressed(tmp_path)(x2), got, rel=1e-12)
    return report.coverage


def _name(path: str) -> str:  # "torch.nn.modules.linear.Linear" -> "torch.Linear"
    return f"{path.split('.')[0]}.{path.rpartition('.')[2]}"


@pytest.mark.parametrize("registered", sorted(LAYER_TYPES, key=_name), ids=_name)
def test_every_registered_type_wraps_scores_compensates_cuts_and_reloads(registered, tmp_path):
    case = {class_path(t): c for t, c in CASES.items()}.get(registered)
    assert case is not None, f"no round-trip case for the registered type {_name(registered)}"
    coverage = roundtrip(case, tmp_path, f"registry-{_name(registered)}")
    holder = next(n for n, m in _build(case).named_modules()
                  if m._parameters and layer_type(m) is LAYER_TYPES[registered])
    own = [k for k in coverage if k.startswith(f"{holder}.") and coverage[k] != "gate"]
    assert own and all(coverage[k].startswith("wrapped") for k in own), coverage


def test_types_without_channel_axes_cannot_be_coupled():
    for t in (nn.GroupNorm, nn.RMSNorm, nn.Module):
        model = _build(CASES[t])
        assert channel_type(model.body[3]) is None
        with pytest.raises(UnsupportedModelError, match=type(model.body[3]).__name__):
            out_size(model.body[3])
    with pytest.raises(UnsupportedModelError, match="cannot gate a GroupNorm"):
        wrap_(_build(CASES[nn.GroupNorm]), PosteriorSpec(gates=(("body.3", 1),)))


def test_lookup_follows_the_mro_and_refuses_a_second_registration():
    class MyLinear(nn.Linear):
        pass

    assert layer_type(MyLinear(2, 3)) is LAYER_TYPES[class_path(nn.Linear)]
    assert layer_type(Gain(3)).generic
    with pytest.raises(ValueError, match="registered twice"):
        register_layer(nn.Linear)(LayerType)
    with pytest.raises(UnsupportedModelError, match="not a torch module"):
        layer_type(object())  # type: ignore[arg-type]


# ------------------------------------------------------------------ a new layer type


class TransposedLinear(nn.Module):
    """y = x W + b with W stored as (in, out): a layout none of the built-in types has."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.weight = nn.Parameter(torch.randn(d_in, d_out) / d_in ** 0.5)
        self.bias = nn.Parameter(torch.randn(d_out) / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return x @ self.weight + self.bias


class TransposedLinearLayer(LayerType):
    """Everything the stages need to know about TransposedLinear: this class, registered."""

    mode = "local"
    out_tensors = (("weight", 1), ("bias", 0))
    in_tensors = (("weight", 0),)
    out_axis = -1

    def out_var(self, module, x, var):  # (..., in) -> (..., out)
        return (x * x) @ var["weight"] + var["bias"]

    def sync_(self, module, cut_sizes=()):
        module.d_in, module.d_out = module.weight.shape


@contextlib.contextmanager
def registered(cls: type, layer: type[LayerType]):
    register_layer(cls)(layer)
    try:
        yield
    finally:
        del LAYER_TYPES[class_path(cls)]


NEW = Case(lambda: [TransposedLinear(6, 9), nn.Tanh(), TransposedLinear(9, 5)],
           _randn(lambda s: (3 + s % 2, 6)))


def test_a_new_layer_type_is_supported_by_registering_one_class(tmp_path):
    model = _build(NEW)
    unknown = wrap_(copy.deepcopy(model)).coverage
    assert unknown["body.0.weight"] == "wrapped: generic weight (TransposedLinear)"
    with pytest.raises(UnsupportedModelError, match="TransposedLinear"):
        out_size(model.body[0])
    with registered(TransposedLinear, TransposedLinearLayer):
        coverage = roundtrip(NEW, tmp_path, "registry-transposed-linear")
        assert coverage["body.0.weight"] == "wrapped: local"
        with pytest.raises(ValueError, match="registered twice"):
            register_layer(TransposedLinear)(TransposedLinearLayer)
        _local_variance_matches_weight_sampling(TransposedLinear(6, 5).double())
    assert layer_type(model.body[0]).generic  # unregistered again


def _local_variance_matches_weight_sampling(layer: nn.Module, n: int = 20_000) -> None:
    """The type's out_var: n local-reparameterisation draws against n weight draws."""
    from torch.func import functional_call, vmap

    torch.manual_seed(0)
    x = torch.randn(1, 6, dtype=torch.float64)
    wrap_(layer, PosteriorSpec())
    st = wrap_state(layer)
    with torch.no_grad():
        for e in st.entries.values():
            e.log_var.uniform_(-3, -1)
        fit_mode_(layer)
        local = layer(x.expand(n, 6).contiguous())  # (n, out)
        layer.eval()
        draws = {e.local: e.mu + e.log_var.exp().sqrt() * torch.randn(n, *e.mu.shape,
                                                                      dtype=e.mu.dtype)
                 for e in st.entries.values()}
        ws = vmap(lambda p: functional_call(layer, p, (x,)))(draws).squeeze(1)  # (n, out)
    v1, v2 = local.var(0), ws.var(0)
    assert ((local.mean(0) - ws.mean(0)).abs() <= 5 * ((v1 + v2) / n).sqrt()).all()
    assert ((v1 - v2).abs() <= 5 * (2 / (n - 1)) ** 0.5 * (v1**2 + v2**2).sqrt()).all()


def test_classes_registered_by_name_exist_and_import_nothing_until_used():
    """transformers' classes are registered by dotted path (importing the layer and adapter
    registries does not import transformers); every such path names a real class there, so
    a typo cannot silently leave a family or a layer type unmatched."""
    import subprocess
    import sys

    from bmr_compress.coupling import families, family_modernbert, family_mpnet  # noqa: F401
    from bmr_compress.coupling.adapters import ADAPTERS
    from bmr_compress.coupling.family_table import resolve

    for path in [*LAYER_TYPES, *ADAPTERS]:
        assert class_path(resolve(path)) == path, path
    code = ("import sys; import bmr_compress.layers, bmr_compress.coupling.families, "
            "bmr_compress.coupling.family_mpnet, bmr_compress.coupling.family_modernbert; "
            "print('transformers' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_resolve_refuses_a_name_no_decorator_registered():
    from bmr_compress.coupling.family_table import resolve

    with pytest.raises(KeyError, match="not a registered"):
        resolve("subprocess.Popen")
