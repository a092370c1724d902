"""KL and sampling checked against Monte Carlo and quadrature (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, stats
from torch import nn

from bmr_compress.variational import PosteriorSpec, fit_mode_, kl_divergence, wrap_
from bmr_compress.variational import gates as G
from bmr_compress.variational.wrap import wrap_state


def test_gaussian_kl_matches_monte_carlo():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    wrap_(lin)
    st = wrap_state(lin)
    with torch.no_grad():
        for e in st.entries.values():
            e.log_var.copy_(torch.empty_like(e.log_var).uniform_(-4, -1))
            e.prior_log_var().fill_(-1.3)
    closed = float(kl_divergence(lin).detach())
    mc = 0.0
    for e in st.entries.values():
        q = torch.distributions.Normal(e.mu.detach(), e.log_var.detach().exp().sqrt())
        p = torch.distributions.Normal(0.0, math.exp(-0.65))
        w = q.sample((200_000,))
        mc += float((q.log_prob(w) - p.log_prob(w)).sum(tuple(range(1, w.dim()))).mean())
    assert closed == pytest.approx(mc, rel=0.01)


@pytest.mark.parametrize(
    "mu,log_sigma", [(0.0, -5.0), (-3.0, 0.5), (-10.0, 1.5), (2.0, 0.0), (-25.0, 1.0)])
def test_trunc_lognormal_kl_mean_and_sampler(mu, log_sigma):
    m, ls = torch.tensor(mu, dtype=torch.float64), torch.tensor(log_sigma, dtype=torch.float64)
    a, b = -20.0, 0.0
    s = math.exp(log_sigma)
    tn = stats.truncnorm((a - mu) / s, (b - mu) / s, loc=mu, scale=s)
    kl_quad = integrate.quad(lambda x: tn.pdf(x) * (tn.logpdf(x) + math.log(b - a)), a, b,
                             points=[min(max(mu, a), b)], limit=200)[0]
    assert float(G.gate_kl("lognormal", m, ls, a, b)) == pytest.approx(kl_quad, rel=1e-5, abs=1e-6)
    mean_quad = integrate.quad(lambda x: tn.pdf(x) * math.exp(x), a, b,
                               points=[min(max(mu, a), b)], limit=200)[0]
    assert float(G.gate_mean("lognormal", m, ls, a, b)) == pytest.approx(mean_quad, rel=1e-5, abs=1e-12)
    z = torch.randn(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theta = G.gate_sample("lognormal", m, ls, z, a, b)
    x = theta.log()
    assert (x >= a - 1e-9).all() and (x <= b + 1e-9).all()
    # Monte Carlo KL from our own sampler against the closed form
    kl_mc = float((torch.as_tensor(tn.logpdf(x.numpy())) + math.log(b - a)).mean())
    assert kl_mc == pytest.approx(float(G.gate_kl("lognormal", m, ls, a, b)), abs=0.02)
    assert float(theta.mean()) == pytest.approx(mean_quad, rel=0.02, abs=1e-4)


def _old_kl(mu: torch.Tensor, log_sigma: torch.Tensor, log_a: float = -20.0,
            log_b: float = 0.0) -> torch.Tensor:
    """The training-time gate KL before issue 13, verbatim: −ln Z and αφ(α)/Z evaluated
    separately, so they cancel in float32 once μ is a few σ above ln b. Kept only to show
    that the test below fails for the reason it names."""
    from torch.special import log_ndtr

    sigma = log_sigma.exp()
    alpha, beta = (log_a - mu) / sigma, (log_b - mu) / sigma
    flip = alpha > 0
    lo2, hi2 = torch.where(flip, -beta, alpha), torch.where(flip, -alpha, beta)
    lhi = log_ndtr(hi2)
    log_z = lhi + torch.log(-torch.expm1((log_ndtr(lo2) - lhi).clamp(max=-1e-20)))
    c = 0.5 * math.log(2 * math.pi)
    t_a = alpha * torch.exp(-0.5 * alpha * alpha - c - log_z)
    t_b = beta * torch.exp(-0.5 * beta * beta - c - log_z)
    return (math.log(log_b - log_a) - log_sigma - log_z - 0.5 * math.log(2 * math.pi * math.e)
            - 0.5 * (t_a - t_b))


def _kl_and_grad(fn, mu: float, log_sigma: float) -> tuple[list[float], tuple[float, float]]:
    m = torch.tensor([mu], requires_grad=True)  # float32, as the trainer calls it
    s = torch.tensor([log_sigma], requires_grad=True)
    fn(m, s).sum().backward()
    return [float(fn(m, s).detach()), float(m.grad), float(s.grad)], (m.item(), s.item())


def _rel_err(got: list[float], want: tuple[float, ...]) -> float:
    """Worst error over (value, ∂/∂μ, ∂/∂ln σ) in units of the tolerance max(1e-4|ref|, 1e-3)."""
    return max(abs(g - w) / max(1e-4 * abs(w), 1e-3) for g, w in zip(got, want))


# issue 13: at the initial σ = e⁻⁵, μ − ln b = 30σ, 1.0, 2.0 (one Adam step moves μ ~15σ)
@pytest.mark.parametrize("offset", [30 * math.exp(-5.0), 1.0, 2.0])
def test_gate_kl_float32_value_and_gradient_match_reference(offset):
    from tests.bmr.reference import trunc_kl_grad_mp

    def train_kl(m, s):  # the trainer's entry point, in float32
        return G.gate_kl("lognormal", m, s, -20.0, 0.0)

    got, (m, s) = _kl_and_grad(train_kl, offset, -5.0)
    want = trunc_kl_grad_mp(m, s)
    assert _rel_err(got, want) <= 1.0, (got, want)
    assert want[1] > 0  # above ln b the KL pulls μ back down
    # float64 of the same code agrees too
    got64 = G.gate_kl("lognormal", torch.tensor(m, dtype=torch.float64),
                      torch.tensor(s, dtype=torch.float64), -20.0, 0.0)
    assert float(got64) == pytest.approx(want[0], rel=1e-12)
    old, _ = _kl_and_grad(_old_kl, offset, -5.0)
    assert _rel_err(old, want) > 1.0, (old, want)  # the pre-issue-13 formula fails this test


def test_model_gate_kl_gradient_float32():
    # through the model: posterior.gate_kl -> variational.gates -> bmr.gates, gates in float32
    from bmr_compress.variational.posterior import gate_kl
    from tests.bmr.reference import trunc_kl_grad_mp

    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    wrap_(net, PosteriorSpec(gates=(("0", 1),)))
    g = wrap_state(net).gates["0"]
    with torch.no_grad():
        g.mu.copy_(torch.tensor([0.0, 1.0, -25.0]))
        g.log_sigma.copy_(torch.tensor([-5.0, -5.0, 0.5]))
    gate_kl(net).backward()
    for j in range(3):
        want = trunc_kl_grad_mp(g.mu[j].item(), g.log_sigma[j].item())
        got = [float(G.gate_kl("lognormal", g.mu[j], g.log_sigma[j], -20.0, 0.0).detach()),
               float(g.mu.grad[j]), float(g.log_sigma.grad[j])]
        assert _rel_err(got, want) <= 1.0, (j, got, want)


def test_gaussian_gate_kl_monte_carlo():
    mu, ls = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
    q, p = torch.distributions.Normal(mu, ls.exp()), torch.distributions.Normal(0.0, 1.0)
    t = q.sample((400_000,))
    mc = float((q.log_prob(t) - p.log_prob(t)).mean())
    assert float(G.gaussian_gate_kl(mu, ls)) == pytest.approx(mc, abs=0.01)


def _layers():
    from transformers.pytorch_utils import Conv1D

    return {
        "linear": (nn.Linear(6, 5), torch.randn(3, 4, 6)),
        "conv2d": (nn.Conv2d(3, 4, 3, padding=1, stride=2), torch.randn(2, 3, 5, 5)),
        "conv1d": (nn.Conv1d(3, 4, 3, padding=2, dilation=2, padding_mode="reflect"),
                   torch.randn(2, 3, 7)),
        "hf_conv1d": (Conv1D(5, 6), torch.randn(3, 4, 6)),
        "embedding": (nn.Embedding(9, 5), torch.tensor([[1, 4, 4, 8]])),
    }


@pytest.mark.parametrize("kind", ["linear", "conv2d", "conv1d", "hf_conv1d", "embedding"])
def test_local_reparameterisation_matches_weight_sampling(kind):
    torch.manual_seed(0)
    layer, x = _layers()[kind]
    layer, x = layer.double(), (x if kind == "embedding" else x.double())
    ref = layer  # posterior mean = the layer's weights
    wrap_(layer, PosteriorSpec())
    st = wrap_state(layer)
    with torch.no_grad():
        for e in st.entries.values():
            e.log_var.copy_(torch.empty_like(e.log_var).uniform_(-3, -1))
    fit_mode_(layer)
    n = 20_000
    xs = x[:1].expand(n, *x.shape[1:]).contiguous()  # the same input row, n noise draws
    with torch.no_grad():
        local = layer(xs)  # (n, ...): one draw per output element
    ws = _weight_draws(layer, st, x[:1], n)
    m1, m2, v1, v2 = local.mean(0), ws.mean(0), local.var(0), ws.var(0)
    # z-tests with 5 standard errors (sample variance of a normal: var 2 sigma^4 / (n-1))
    assert ((m1 - m2).abs() <= 5 * ((v1 + v2) / n).sqrt()).all()
    assert ((v1 - v2).abs() <= 5 * (2 / (n - 1)) ** 0.5 * (v1**2 + v2**2).sqrt()).all()
    assert float(v2.mean()) > 0.01  # the variance is really there


def _weight_draws(layer, st, x1, n: int):
    """n outputs for input x1, each under an independent draw of every weight tensor (vmap)."""
    from torch.func import functional_call, vmap

    layer.eval()  # hooks idle: plain forward at whatever weights functional_call gives
    draws = {e.local: e.mu.detach() + e.log_var.detach().exp().sqrt() * torch.randn(n, *e.mu.shape,
                                                                                  dtype=e.mu.dtype)
             for e in st.entries.values()}
    with torch.no_grad():
        out = vmap(lambda p: functional_call(layer, p, (x1,)))(draws)  # (n, 1, ...)
    return out.squeeze(1)


@pytest.mark.parametrize("masked", [False, True])
def test_closed_form_kl_gradient_matches_autograd(masked):
    from bmr_compress.variational import set_masks_
    from bmr_compress.variational.posterior import gaussian_kl_grad_

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3)).double()
    wrap_(net, PosteriorSpec(prior="gamma"))
    st = wrap_state(net)
    with torch.no_grad():
        for e in st.entries.values():
            e.log_var.copy_(torch.empty_like(e.log_var).uniform_(-4, 0))
            e.prior_log_var().fill_(-0.7)
    if masked:
        set_masks_(net, {"0.weight": torch.rand(4, 5) > 0.4})
    scale = 0.37
    (scale * kl_divergence(net)).backward()
    auto = {n: (e.mu.grad.clone(), e.log_var.grad.clone()) for n, e in st.entries.items()}
    value = float(kl_divergence(net).detach())
    net.zero_grad(set_to_none=True)
    closed, pending = gaussian_kl_grad_(net, scale, update_prior=True)
    assert closed == pytest.approx(value, rel=1e-10)
    for n, e in st.entries.items():
        torch.testing.assert_close(e.mu.grad, auto[n][0])
        torch.testing.assert_close(e.log_var.grad, auto[n][1])
    assert len(pending) == len(st.entries)
    from bmr_compress.variational import update_priors_

    s2 = update_priors_(net)
    for (buf, val), n in zip(pending, st.entries):
        assert float(val.exp()) == pytest.approx(s2[n], rel=1e-10)


@pytest.mark.parametrize("prior", ["empirical_bayes", "gamma"])
def test_prior_update_is_closed_form(prior):
    from bmr_compress.variational import update_priors_

    torch.manual_seed(1)
    lin = nn.Linear(7, 5).double()
    spec = PosteriorSpec(prior=prior, gamma_a0=2.0, gamma_b0=2.0)
    wrap_(lin, spec)
    e = wrap_state(lin).entries["weight"]
    with torch.no_grad():
        e.log_var.uniform_(-3, -1)
    s2 = update_priors_(lin)["weight"]
    second = (e.mu.detach() ** 2 + e.log_var.detach().exp()).sum().item()
    n = e.mu.numel()
    expect = second / n if prior == "empirical_bayes" else (2.0 + second / 2) / (2.0 + n / 2)
    assert s2 == pytest.approx(expect, rel=1e-12)
    if prior == "empirical_bayes":  # and it minimises the KL over the prior scale
        kl0 = float(kl_divergence(lin).detach())
        for f in (0.97, 1.03):
            with torch.no_grad():
                e.prior_log_var().fill_(math.log(s2 * f))
            assert float(kl_divergence(lin).detach()) > kl0
