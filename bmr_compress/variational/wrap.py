"""Wrap a model in place with a mean-field Gaussian posterior (hooks; classes untouched).

Each wrapped parameter keeps its own Parameter as the posterior mean mu (so means start
at the pretrained weights and unwrap is just "drop the extras"). The owning module gets
`bmr_<name>_log_var` (Parameter, log sigma^2), `bmr_<name>_prior_log_var` (0-d buffer)
and, after `set_masks_`, `bmr_<name>_mask`. Gated modules get `bmr_gate_mu` and
`bmr_gate_log_sigma` (one per unit). Sampling happens only while the root model is in
training mode; in eval mode the model is deterministic at the posterior mean (gates at
E[theta]).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bmr_compress.errors import InputError
from bmr_compress.layers import LayerType, layer_type
from bmr_compress.variational import gates as G
from bmr_compress.variational.noise import NoiseSource
from bmr_compress.variational.priors import update_state_priors_
from bmr_compress.variational.settings import PosteriorSpec

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One wrapped parameter: qualified name, owner module and local attribute name."""

    name: str
    module: nn.Module
    local: str
    log_var: nn.Parameter

    @property
    def mu(self) -> nn.Parameter:
        return self.module._parameters[self.local]  # type: ignore[return-value]

    def mask(self) -> torch.Tensor | None:
        return getattr(self.module, f"bmr_{self.local}_mask", None)

    def prior_log_var(self) -> torch.Tensor:
        return getattr(self.module, f"bmr_{self.local}_prior_log_var")

    def var(self) -> torch.Tensor:
        v = self.log_var.exp()
        m = self.mask()
        return v if m is None else v * m


class Variances(Mapping):
    """Lazy name -> sigma^2 view of a module's wrapped tensors, for LayerType.out_var."""

    def __init__(self, ents: dict[str, Entry]):
        self._ents = ents

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._ents[name].var()

    def __iter__(self):
        return iter(self._ents)

    def __len__(self) -> int:
        return len(self._ents)

    def rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """sigma^2[ids] for a table-like tensor: (...) -> (..., dim), gathering before exp."""
        e = self._ents[name]
        v = F.embedding(ids, e.log_var).exp()
        m = e.mask()
        return v if m is None else v * F.embedding(ids, m)


@dataclass
class GateEntry:
    name: str
    module: nn.Module
    layer: LayerType
    axis: int
    unit_size: int
    kind: str
    log_a: float
    log_b: float

    @property
    def mu(self) -> nn.Parameter:
        return self.module.bmr_gate_mu

    @property
    def log_sigma(self) -> nn.Parameter:
        return self.module.bmr_gate_log_sigma


@dataclass
class WrapState:
    spec: PosteriorSpec
    root: Callable[[], nn.Module | None]
    entries: dict[str, Entry] = field(default_factory=dict)
    gates: dict[str, GateEntry] = field(default_factory=dict)
    hooks: list = field(default_factory=list)
    noise: NoiseSource = field(default_factory=NoiseSource)

    def sampling(self) -> bool:
        root = self.root()
        return bool(root is not None and root.training)


@dataclass(frozen=True)
class WrapReport:
    """coverage: every parameter -> "wrapped: local|weight|generic weight (<Class>)",
    "wrapped: tied to <name>", "gate" or "skipped: <reason>"."""

    coverage: dict[str, str]
    wrapped: tuple[str, ...]
    gates: tuple[str, ...]
    generic_modules: tuple[str, ...]

    def summary(self) -> str:
        skipped = [k for k, v in self.coverage.items() if v.startswith("skipped")]
        return (f"{len(self.wrapped)} tensors wrapped, {len(self.gates)} gated modules, "
                f"{len(self.generic_modules)} generic holders, {len(skipped)} skipped")


@dataclass(frozen=True)
class UnwrapReport:
    params: tuple[str, ...]
    gates_folded: tuple[str, ...]


def wrap_state(model: nn.Module) -> WrapState:
    st = getattr(ddp_inner(model), "_bmr_state", None)
    if st is None:
        raise InputError("model is not wrapped (call bmr_compress.variational.wrap_ first)")
    return st


def is_wrapped(model: nn.Module) -> bool:
    return getattr(ddp_inner(model), "_bmr_state", None) is not None


def ddp_inner(model: nn.Module) -> nn.Module:
    """The wrapped model inside a DistributedDataParallel (or the model itself)."""
    inner = getattr(model, "module", None)
    if (not hasattr(model, "_bmr_state") and isinstance(inner, nn.Module)
            and hasattr(inner, "_bmr_state")):
        return inner
    return model


def _init_log_var(p: torch.Tensor, ratio: float) -> torch.Tensor:
    rms = p.detach().float().pow(2).mean().sqrt().clamp_min(1e-8)
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32  # never below float32
    return torch.full_like(p, float(2 * torch.log(ratio * rms)), dtype=dtype)


def wrap_(
    model: nn.Module, spec: PosteriorSpec | None = None, *,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
) -> WrapReport:
    """Put a mean-field Gaussian posterior on every parameter of `model` (in place).

    filter_fn(module_name, module) -> False leaves that module's own parameters
    deterministic (reported as skipped). Validates everything before mutating.
    """
    spec = spec or PosteriorSpec()
    if is_wrapped(model):
        raise InputError("model is already wrapped")
    modules = dict(model.named_modules(remove_duplicate=False))
    _check_gates(spec, modules)
    st = WrapState(spec=spec, root=weakref.ref(model))
    walk = _Walk(st, filter_fn)
    for mname, module in model.named_modules(remove_duplicate=False):
        walk.module(mname, module)
    for gname, unit in spec.gates:
        _add_gate(st, gname, modules[gname], unit, spec)
        walk.coverage[f"{gname}.bmr_gate_mu"] = "gate"
    model._bmr_state = st  # plain attribute: the class is untouched
    update_state_priors_(st)
    report = WrapReport(walk.coverage, tuple(st.entries), tuple(st.gates), tuple(walk.generic))
    log.info("wrap: %s", report.summary())
    if walk.generic:
        log.info("generic weight-space sampling used for: %s", ", ".join(walk.generic))
    return report


def _check_gates(spec: PosteriorSpec, modules: Mapping[str, nn.Module]) -> None:
    for gname, unit in spec.gates:
        if gname not in modules:
            raise InputError(f"gate module {gname!r} not found in the model")
        lt = layer_type(modules[gname])
        lt.gate_axis(modules[gname])
        channels = lt.width(modules[gname])
        if unit <= 0 or channels % unit:
            raise InputError(f"gate on {gname}: {channels} channels not divisible by "
                             f"unit_size {unit}")


class _Walk:
    """wrap_'s pass over the modules: entries, hooks, and the coverage report."""

    def __init__(self, st: WrapState, filter_fn: Callable[[str, nn.Module], bool] | None):
        self.st, self.filter_fn = st, filter_fn
        self.coverage: dict[str, str] = {}
        self.generic: list[str] = []
        self.by_id: dict[int, Entry] = {}

    def module(self, mname: str, module: nn.Module) -> None:
        """Wrap the module's own parameters and hook it (local or weight-space sampling)."""
        own = [(n, p) for n, p in module._parameters.items() if p is not None]
        if not own:
            return
        lt = layer_type(module)
        local_names = set(lt.tensors(module)) if lt.mode == "local" else set()
        weight_names: list[str] = []
        local_entries: dict[str, Entry] = {}
        for local, p in own:
            kind = "local" if local in local_names else "weight"
            is_generic = kind == "weight" and (lt.generic or local not in lt.tensors(module))
            e = self._entry(mname, module, local, p, is_generic, kind)
            if e is None:
                continue
            if kind == "local":
                local_entries[local] = e
            else:
                weight_names.append(local)
        st = self.st
        if local_entries:
            st.hooks.append(module.register_forward_hook(
                _local_hook(st, lt, local_entries), with_kwargs=True))
        if weight_names:
            ents = {n: self.by_id[id(module._parameters[n])] for n in weight_names}
            pre, post = _weight_hooks(st, module, ents)
            st.hooks.append(module.register_forward_pre_hook(pre))
            st.hooks.append(module.register_forward_hook(post, always_call=True))

    def _entry(self, mname: str, module: nn.Module, local: str, p: nn.Parameter,
               is_generic: bool, kind: str) -> Entry | None:
        """The parameter's Entry (new, or the one it is tied to); None if it is skipped."""
        qual = f"{mname}.{local}" if mname else local
        spec, coverage = self.st.spec, self.coverage
        if self.filter_fn is not None and not self.filter_fn(mname, module):
            coverage.setdefault(qual, "skipped: filter_fn")
            return None
        if is_generic and not spec.wrap_norms:
            coverage.setdefault(qual, f"skipped: unknown holder {type(module).__name__}")
            return None
        if not p.is_floating_point():
            coverage.setdefault(qual, "skipped: not floating point")
            return None
        e = self.by_id.get(id(p))
        if e is not None:
            coverage.setdefault(qual, f"wrapped: tied to {e.name}")
            return e
        lv = nn.Parameter(_init_log_var(p, spec.init_std_ratio).to(p.device))
        module.register_parameter(f"bmr_{local}_log_var", lv)
        prior = torch.zeros((), dtype=lv.dtype, device=p.device)
        module.register_buffer(f"bmr_{local}_prior_log_var", prior)
        e = Entry(qual, module, local, lv)
        self.by_id[id(p)] = e
        self.st.entries[qual] = e
        tag = f"generic weight ({type(module).__name__})" if is_generic else kind
        coverage[qual] = f"wrapped: {tag}"
        if is_generic and mname not in self.generic:
            self.generic.append(mname)
        return e


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return next(iter(kwargs.values()))


def _local_hook(st: WrapState, lt: LayerType, ents: dict[str, Entry]):
    def hook(module, args, kwargs, out):
        if not st.sampling():
            return None
        x = _first_input(args, kwargs)
        var = Variances(ents)
        ov = lt.out_var(module, x, var)  # same shape as out
        std = _SafeSqrt.apply(ov).to(out.dtype)  # (out.shape)
        return torch.addcmul(out, std, st.noise.batch_randn(out.shape, out.dtype, out.device))

    return hook


class _SafeSqrt(torch.autograd.Function):
    """sqrt whose gradient is 0 (not inf/NaN) where the input is exactly 0 (masked rows)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:
        r = v.sqrt()
        ctx.save_for_backward(r)
        return r

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return torch.where(r > 0, g / (2 * r), torch.zeros((), dtype=g.dtype, device=g.device))


def _weight_hooks(st: WrapState, module: nn.Module, ents: dict[str, Entry]):
    saved: dict[str, nn.Parameter] = {}

    def pre(mod, args):
        if not st.sampling():
            return None
        for n, e in ents.items():
            p = mod._parameters[n]
            saved[n] = p
            eps = st.noise.shared_randn(p.shape, p.dtype, p.device)
            # a draw, grads flow to mu; _SafeSqrt: masked entries (var 0) get zero, not NaN, grads
            mod._parameters[n] = p + _SafeSqrt.apply(e.var()).to(p.dtype) * eps
        return None

    def post(mod, args, out):
        for n, p in saved.items():
            mod._parameters[n] = p
        saved.clear()
        return None

    return pre, post


def _add_gate(st: WrapState, name: str, module: nn.Module, unit: int, spec: PosteriorSpec) -> None:
    lt = layer_type(module)
    axis = lt.gate_axis(module)
    channels = lt.width(module)
    mu, ls = G.gate_init(spec.gate_kind, channels // unit)
    dev = next(module.parameters()).device
    module.register_parameter("bmr_gate_mu", nn.Parameter(mu.to(dev)))
    module.register_parameter("bmr_gate_log_sigma", nn.Parameter(ls.to(dev)))
    g = GateEntry(name, module, lt, axis, unit, spec.gate_kind, spec.gate_log_a, spec.gate_log_b)
    st.gates[name] = g
    st.hooks.append(module.register_forward_hook(_gate_hook(st, g)))


def gate_values(g: GateEntry, batch: int | None, st: WrapState) -> torch.Tensor:
    """theta per unit: (B, units) draws while sampling, else E[theta] (units,)."""
    mu, ls = g.mu.float(), g.log_sigma.float()
    if batch is None:
        return G.gate_mean(g.kind, mu, ls, g.log_a, g.log_b)
    noise = st.noise.batch_randn((batch, mu.numel()), torch.float32, mu.device)
    return G.gate_sample(g.kind, mu, ls, noise, g.log_a, g.log_b)


def _gate_hook(st: WrapState, g: GateEntry):
    def hook(module, args, out):
        theta = gate_values(g, out.shape[0] if st.sampling() else None, st)
        theta = theta.repeat_interleave(g.unit_size, dim=-1).to(out.dtype)  # (B?, C)
        axis = g.axis % out.dim()
        shape = [1] * out.dim()
        shape[axis] = -1
        if theta.dim() == 2:
            shape[0] = theta.shape[0]
        return out * theta.view(shape)

    return hook


def unwrap_(model: nn.Module) -> UnwrapReport:
    """Remove the posterior: weights = mu (masked ones stay 0), gates folded at E[theta]."""
    model = ddp_inner(model)
    st = wrap_state(model)
    for hk in st.hooks:
        hk.remove()
    folded = []
    with torch.no_grad():
        for name, g in st.gates.items():
            scale = G.gate_mean(g.kind, g.mu.float(), g.log_sigma.float(), g.log_a, g.log_b)
            g.layer.fold_gate_(g.module, scale.repeat_interleave(g.unit_size))
            del g.module.bmr_gate_mu, g.module.bmr_gate_log_sigma
            folded.append(name)
        for e in st.entries.values():
            m = e.mask()
            if m is not None:
                e.mu.mul_(m.to(e.mu.dtype))
            for attr in ("log_var", "prior_log_var", "mask"):
                if hasattr(e.module, f"bmr_{e.local}_{attr}"):
                    delattr(e.module, f"bmr_{e.local}_{attr}")
            if getattr(e.mu, "_bmr_mask_hook", None) is not None:
                e.mu._bmr_mask_hook.remove()
                del e.mu._bmr_mask_hook
    del model._bmr_state
    return UnwrapReport(tuple(st.entries), tuple(folded))
