"""Laplace unit posteriors, tolerance → ν, sequential reduction, cost-ordered budgets (issue 12)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bmr_compress.bmr import joint_spike_delta_lnz
from bmr_compress.bmr.structured import LayerFactors, column_reduced_means, unit_evidence
from bmr_compress.planning import make_plan, PlanSettings
from bmr_compress.coupling import discover_groups, UnitGroup, Slice
from bmr_compress.scoring.tolerance import calibrate_nu, distortion_at, score_sites
from bmr_compress.scoring.unit_posterior import (
    consumer_sites, input_moments, layer_weight, output_scale, prior_variance, row_scales,
)
from tests.tiny_models import ResConcatNet, TinyMLP


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * d, d, generator=g, dtype=torch.float64)
    return x.T @ x / (3 * d) + 0.05 * torch.eye(d, dtype=torch.float64)


def explicit_unit_delta_lnz(w0, a, b, s2, cols, nu) -> float:
    """Σ over rows of the dense joint Gaussian reduction (bmr.joint_spike_delta_lnz) of the
    row posterior N(Λ⁻¹ ν b_i A w0_i, Λ⁻¹), Λ = ν b_i A + I/s²."""
    d = w0.shape[1]
    pruned = torch.zeros(d, dtype=torch.bool)
    pruned[cols] = True
    total = 0.0
    for i in range(w0.shape[0]):
        lam = nu * float(b[i]) * a.double() + torch.eye(d, dtype=torch.float64) / s2
        mu = torch.linalg.solve(lam, nu * float(b[i]) * a.double() @ w0[i].double())
        total += float(joint_spike_delta_lnz(mu, lam, pruned, math.log(s2)))
    return total


def _gauss_integral(mean_w: torch.Tensor, q: torch.Tensor, prior_var: float,
                    free: torch.Tensor) -> float:
    """ln ∫ N(w_F; 0, s² I) exp(−½ (w − m)ᵀ Q (w − m)) dw_F with w = 0 off F (closed form)."""
    qf = q[free][:, free]
    # fixed coordinates at 0 contribute the constant −½ m_Gᵀ(...)m_G through the completed square
    lam = qf + torch.eye(int(free.sum()), dtype=torch.float64) / prior_var
    m = mean_w.clone()
    lin = (q @ m)[free]  # Q m restricted to F (w_G = 0)
    c = float(m @ q @ m)
    sol = torch.linalg.solve(lam, lin)
    k = int(free.sum())
    return (-0.5 * k * math.log(prior_var) - 0.5 * float(torch.logdet(lam))
            + 0.5 * float(lin @ sol) - 0.5 * c)


@pytest.mark.parametrize("k", [1, 3])
def test_unit_evidence_equals_gaussian_marginal_likelihoods(k):
    """ΔlnZ of the Schur/eigen form == ln Z(reduced) − ln Z(full) integrated directly."""
    rows, d, s2, nu = 4, 9, 0.7, 3.0
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(rows, d, generator=g, dtype=torch.float64) * 0.6
    a = _spd(d, 1)
    b = torch.rand(rows, generator=g, dtype=torch.float64) + 0.2
    units = torch.arange(0, 2 * k).reshape(2, k)
    ev = unit_evidence(LayerFactors.build(w0, a, b, s2), units, nu)
    for j in range(2):
        direct = 0.0
        for i in range(rows):
            q = nu * float(b[i]) * a
            free = torch.ones(d, dtype=torch.bool)
            full = _gauss_integral(w0[i], q, s2, free)
            free[units[j]] = False
            direct += _gauss_integral(w0[i], q, s2, free) - full
        assert float(ev.delta_lnz[j]) == pytest.approx(direct, rel=1e-9, abs=1e-9)
        dense = explicit_unit_delta_lnz(w0, a, b, s2, units[j], nu)
        assert float(ev.delta_lnz[j]) == pytest.approx(dense, rel=1e-9, abs=1e-9)


def test_column_reduced_means_is_the_constrained_minimiser():
    rows, d = 5, 8
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(rows, d, generator=g, dtype=torch.float64)
    a = _spd(d, 3)
    s = torch.rand(rows, generator=g, dtype=torch.float64) * 5
    drop = torch.zeros(d, dtype=torch.bool)
    drop[[1, 4, 5]] = True
    out = column_reduced_means(mu, drop, a, s, 2.0)
    assert torch.all(out[:, drop] == 0)
    for i in range(rows):
        lam = s[i] * a + 2.0 * torch.eye(d, dtype=torch.float64)
        kk = ~drop
        ref = mu[i, kk] + torch.linalg.solve(lam[kk][:, kk], lam[kk][:, drop] @ mu[i, drop])
        assert torch.allclose(out[i, kk], ref, atol=1e-10)


def _mlp_data(n: int = 512, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g)
    return [{"pixel_values": x[i:i + 64]} for i in range(0, n, 64)]


def _site_factors(model, batches, task="regression"):
    groups = discover_groups(model, batches[0])
    sites, _ = consumer_sites(model, groups, ("neuron", "filter"))
    a = input_moments(model, list(sites), batches)
    scale = output_scale(model, batches, task)
    b = row_scales(model, list(sites), batches, task, scale, a)
    fac = {n: LayerFactors.build(layer_weight(model, n), a[n], b[n], prior_variance(model, n))
           for n in sites}
    return groups, sites, a, b, scale, fac


def test_unit_score_on_a_model_counts_the_compensation():
    """On a real MLP (last hidden layer → output layer): the library's unit score equals the
    dense Gaussian computation, and its predicted distortion equals the *measured* output
    change after the compensated removal of that unit (large ν: data-dominated)."""
    torch.manual_seed(0)
    model = TinyMLP().double().eval()
    batches = [{k: v.double() for k, v in b.items()} for b in _mlp_data(2048)]
    groups, sites, a, b, scale, fac = _site_factors(model, batches)
    site = "net.4"  # consumes the 29 neurons of net.2
    cols = sites[site].columns["net.2"]
    nu = 1e7
    ev = unit_evidence(fac[site], cols, nu)
    j = 3
    dense = explicit_unit_delta_lnz(fac[site].w0, a[site], b[site], fac[site].prior_var,
                                    cols[j], nu)
    assert float(ev.delta_lnz[j]) == pytest.approx(dense, rel=1e-6)
    # measured: compensate unit j's removal, compare outputs with the original
    drop = torch.zeros(fac[site].w0.shape[1], dtype=torch.bool)
    drop[cols[j]] = True
    new = column_reduced_means(fac[site].posterior_means(nu), drop, a[site],
                               nu * fac[site].row_scale, 1 / fac[site].prior_var)
    reduced = copy.deepcopy(model)
    from bmr_compress.planning.sequential import write_rows_

    write_rows_(reduced.get_submodule(site), new)
    with torch.no_grad():
        x = torch.cat([bb["pixel_values"] for bb in batches])
        measured = float(((reduced(x) - model(x)) ** 2).sum(1).mean()) / scale ** 2
        zeroed = model.get_submodule(site).weight.clone()
        zeroed[:, cols[j]] = 0
        z = copy.deepcopy(model)
        z.get_submodule(site).weight.copy_(zeroed)
        zero_err = float(((z(x) - model(x)) ** 2).sum(1).mean()) / scale ** 2
    assert float(ev.distortion[j]) == pytest.approx(measured, rel=0.15)  # probe noise
    assert measured < zero_err  # the survivors' move is counted and it helps



def test_ard_unit_score_counts_the_compensation_the_cut_applies():
    """The default (per-unit ARD) score on a real MLP: its distortion is the measured output
    change after the cut's own compensation (column_reduced_means from the pretrained
    weights), which is below zeroing the unit alone, and the units it removes cost less than
    those it keeps."""
    from bmr_compress.bmr.ard import ard_unit_evidence
    from bmr_compress.planning.sequential import write_rows_

    torch.manual_seed(0)
    model = TinyMLP().double().eval()
    batches = [{k: v.double() for k, v in b.items()} for b in _mlp_data(2048)]
    groups, sites, a, b, scale, fac = _site_factors(model, batches)
    site = "net.4"
    cols = sites[site].columns["net.2"]
    f = fac[site]
    nu = 1e5
    ev = ard_unit_evidence(f, cols, nu)
    x = torch.cat([bb["pixel_values"] for bb in batches])
    for j in (0, 3, 7):
        drop = torch.zeros(f.w0.shape[1], dtype=torch.bool)
        drop[cols[j]] = True
        reduced = copy.deepcopy(model)
        write_rows_(reduced.get_submodule(site),
                    column_reduced_means(f.w0, drop, a[site], nu * f.row_scale, 1 / f.prior_var))
        zeroed = copy.deepcopy(model)
        write_rows_(zeroed.get_submodule(site), f.w0 * (~drop).double())
        with torch.no_grad():
            measured = float(((reduced(x) - model(x)) ** 2).sum(1).mean()) / scale ** 2
            zero_err = float(((zeroed(x) - model(x)) ** 2).sum(1).mean()) / scale ** 2
        assert float(ev.distortion[j]) == pytest.approx(measured, rel=0.05)  # b_i is probed
        assert measured < zero_err
    gone = ev.delta_lnz >= 0
    assert 0 < int(gone.sum()) < len(gone)
    assert float(ev.distortion[gone].max()) < float(ev.distortion[~gone].median())

def test_tolerance_maps_to_the_likelihood_precision():
    """D(ν) is non-increasing; the calibrated ν meets the tolerance and is the smallest that
    does (ν/1.05 overshoots); a looser tolerance removes at least as much."""
    torch.manual_seed(1)
    model = TinyMLP().eval()
    batches = _mlp_data(512)
    groups, sites, a, b, scale, fac = _site_factors(model, batches, "classification")
    cols = {n: s.columns for n, s in sites.items()}
    ds = [distortion_at(fac, cols, nu)[0] for nu in (1e1, 1e2, 1e3, 1e4, 1e5, 1e6)]
    assert all(x >= y - 1e-12 for x, y in zip(ds, ds[1:]))
    removed = []
    for tol in (0.02, 0.2):
        cal = calibrate_nu(lambda nu: distortion_at(fac, cols, nu), tol, steps=40)
        assert cal.predicted_distortion <= tol
        assert distortion_at(fac, cols, cal.nu / 1.05)[0] > tol
        ev = score_sites(fac, cols, cal.nu)
        assert cal.units_removed == sum(int((e.delta_lnz >= 0).sum()) for e in ev.values())
        removed.append(cal.units_removed)
    assert 0 < removed[0] <= removed[1]
    with pytest.raises(ValueError):
        calibrate_nu(lambda nu: (0.0, 0), float("nan"))


def test_sequential_reduction_reads_inputs_through_reduced_layers(monkeypatch):
    """The second site's input statistics are measured on the model whose first site is
    already reduced, and the result removes units and keeps the function close."""
    import bmr_compress.planning.sequential as seq

    torch.manual_seed(2)
    model = TinyMLP().eval()
    batches = _mlp_data(512)
    groups, sites, a, b, scale, fac = _site_factors(model, batches, "classification")
    seen = []
    real = seq.input_moments

    def spy(m, names, bs):
        names = list(names)
        seen.append((names[0], m.net[2].weight.detach().clone()))
        return real(m, names, bs)

    monkeypatch.setattr(seq, "input_moments", spy)
    work = copy.deepcopy(model)
    cols = {n: s.columns for n, s in sites.items()}
    cal = calibrate_nu(lambda nu: distortion_at(fac, cols, nu), 0.2, steps=30)
    res = seq.reduce_sequential_(work, groups, sites, b, batches, cal.nu, round_to=1)
    assert [n for n, _ in seen] == ["net.2", "net.4"]
    assert res.removed > 0
    first_cut = 37 - len(res.keep["net.0"])
    assert first_cut > 0  # net.2 consumes net.0's neurons
    w_at_second = seen[1][1]
    assert int((w_at_second.abs().sum(0) == 0).sum()) == first_cut  # already reduced
    assert not torch.equal(w_at_second, model.net[2].weight)
    with torch.no_grad():
        x = torch.cat([bb["pixel_values"] for bb in batches])
        agree = float((work(x).argmax(1) == model(x).argmax(1)).float().mean())
    assert agree > 0.8


def test_conv_consumers_map_filters_to_patch_columns():
    net = ResConcatNet().eval()
    x = {"pixel_values": torch.randn(4, 3, 8, 8)}
    groups = discover_groups(net, x)
    sites, unsupported = consumer_sites(net, groups, ("neuron", "filter"))
    assert "fuse" in sites  # 1x1 conv consuming the branches' filters
    for name, site in sites.items():
        mod = net.get_submodule(name)
        d = mod.weight[0].numel()
        for cols in site.columns.values():
            assert int(cols.max()) < d
    a = input_moments(net, list(sites), [x])
    for name in sites:
        w = layer_weight(net, name)
        assert a[name].shape == (w.shape[1], w.shape[1])


def test_budget_orders_units_by_evidence_per_cost():
    """A budget removes the unit losing the least evidence per parameter saved first."""
    big = UnitGroup("head", "head", 2, (Slice("h.weight", 0, torch.tensor([[0], [1]])),),
                    numel_per_unit=100)
    small = UnitGroup("ffn", "neuron", 4, (Slice("f.weight", 0, torch.arange(4)[:, None]),),
                      numel_per_unit=10)
    scores = {"head": torch.tensor([-20.0, -500.0], dtype=torch.float64),  # -0.2 / param
              "ffn": torch.tensor([-5.0, -6.0, -7.0, -8.0], dtype=torch.float64)}  # -0.5..
    plan = make_plan([big, small], scores, None,
                     PlanSettings(round_to=0, max_params=200 + 40 - 100))
    assert plan.keep["head"] == [1]  # raw ΔlnZ order would have removed ffn units first
    assert plan.keep["ffn"] == [0, 1, 2, 3]


def test_baseline_rankings_keep_the_counts_and_change_only_the_choice():
    """A followed round fixes the widths; the magnitude ranking keeps the largest-norm units
    (norm over every slice the unit owns) and "distortion" the ones whose compensated removal
    costs most; compensate=False leaves the survivors' weights untouched."""
    import bmr_compress.planning.sequential as seq
    from bmr_compress.planning.ranking import RANKINGS, FollowedRound, Ranking, unit_magnitude

    torch.manual_seed(3)
    model = TinyMLP().eval()
    batches = _mlp_data(256)
    groups, sites, a, b, scale, fac = _site_factors(model, batches, "classification")
    by_name = {g.name: g for g in groups}
    counts = {"net.0": 20, "net.2": 11}
    norms = unit_magnitude(model, by_name["net.0"])
    explicit = (model.net[0].weight.double() ** 2).sum(1) + model.net[0].bias.double() ** 2 \
        + (model.net[2].weight.double() ** 2).sum(0)
    torch.testing.assert_close(norms, explicit.sqrt())
    nu = 1e3
    results = {}
    followed = (FollowedRound(nu, counts),)
    for ranking in RANKINGS:
        work = copy.deepcopy(model)
        results[ranking] = (seq.reduce_sequential_(work, groups, sites, b, batches, nu, round_to=1,
                                                   ranking=Ranking(ranking, follow=followed)),
                            work)
        assert {g: len(results[ranking][0].keep[g]) for g in counts} == counts
    mag_keep = results["magnitude"][0].keep["net.0"]
    assert mag_keep == sorted(torch.argsort(norms, descending=True)[:20].tolist())
    assert results["evidence"][0].keep != mag_keep or results["distortion"][0].keep != mag_keep
    raw = copy.deepcopy(model)
    res = seq.reduce_sequential_(raw, groups, sites, b, batches, nu, round_to=1,
                                 ranking=Ranking("magnitude", compensate=False, follow=followed))
    kept = res.keep["net.0"]
    torch.testing.assert_close(raw.net[2].weight[:, kept], model.net[2].weight[:, kept])
    comp = results["magnitude"][1]
    assert not torch.allclose(comp.net[2].weight[:, kept], model.net[2].weight[:, kept])
    with pytest.raises(ValueError):
        Ranking("random")  # type: ignore[arg-type]


def test_laplace_rounds_followed_by_a_baseline_end_at_the_same_widths():
    """laplace_reduce(ranking=MAGNITUDE.following(rounds)) replays an earlier run's per-round widths and ν with
    another ranking: same parameter count, different units."""
    import contextlib
    from types import SimpleNamespace

    from bmr_compress.algorithms.laplace_reduce import laplace_reduce
    from bmr_compress.planning.ranking import MAGNITUDE

    torch.manual_seed(4)
    model = TinyMLP().eval()
    batches = _mlp_data(1280, seed=5)
    data = SimpleNamespace(train_batches=batches[:-2], heldout_batches=batches[-2:])
    kw = dict(tolerance=0.1, rounds=2, recovery_steps=5, lr=1e-3, round_to=1,
              timer=lambda name: contextlib.nullcontext())
    bmr = laplace_reduce(model, data, "classification", **kw)
    assert bmr.rounds and all("kept_counts" in r for r in bmr.rounds)
    assert sum(r["removed_units"] for r in bmr.rounds if not r.get("undone")) > 0
    mag = laplace_reduce(model, data, "classification", ranking=MAGNITUDE.following(bmr.rounds),
                         **kw)
    params = [sum(p.numel() for p in m.model.parameters()) for m in (bmr, mag)]
    assert params[0] == params[1] < sum(p.numel() for p in model.parameters())
    assert mag.keep != bmr.keep
