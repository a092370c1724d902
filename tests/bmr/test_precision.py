"""Grid-collapse evidence (bmr/precision.py) against the direct Gaussian computation."""

from __future__ import annotations

import pytest
import torch

from bmr_compress.bmr.precision import (
    GRIDS, KEEP, RowPosterior, choose_grid, grid_evidence, round_to_grid,
)


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3 * d, d, generator=g, dtype=torch.float64)
    return x.T @ x / (3 * d) + 0.05 * torch.eye(d, dtype=torch.float64)


def _layer(rows: int = 5, d: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(rows, d, generator=g, dtype=torch.float64) * 0.3
    b = torch.rand(rows, generator=g, dtype=torch.float64) + 0.2
    return w0, _spd(d, seed + 1), b, float((w0 ** 2).mean())


def _direct(w0, a, b, s2, nu, w_q) -> float:
    """ln Z(point mass at w_q) − ln Z(N(0, s² I)) for the likelihood
    exp(−½ ν b_i (w − w0_i)ᵀ A (w − w0_i)), each row by its own Gaussian integral."""
    d = w0.shape[1]
    eye = torch.eye(d, dtype=torch.float64)
    total = 0.0
    for i in range(w0.shape[0]):
        q = nu * float(b[i]) * a
        r = w_q[i] - w0[i]
        ln_red = -0.5 * float(r @ q @ r)
        m = eye + s2 * q
        ln_full = (-0.5 * float(torch.logdet(m))
                   - 0.5 * float(w0[i] @ q @ torch.linalg.solve(m, w0[i])))
        total += ln_red - ln_full
    return total


def _savage_dickey(w0, a, b, s2, nu, w_q) -> float:
    """ln q(w_q) − ln p(w_q) with the posterior written out as a multivariate normal."""
    d = w0.shape[1]
    eye = torch.eye(d, dtype=torch.float64)
    prior = torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64), s2 * eye)
    total = 0.0
    for i in range(w0.shape[0]):
        lam = nu * float(b[i]) * a + eye / s2
        mu = torch.linalg.solve(lam, nu * float(b[i]) * a @ w0[i])
        post = torch.distributions.MultivariateNormal(mu, precision_matrix=lam)
        total += float(post.log_prob(w_q[i]) - prior.log_prob(w_q[i]))
    return total


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("nu", [0.3, 30.0, 3000.0])
def test_grid_evidence_equals_the_direct_gaussian_computation(grid, nu):
    w0, a, b, s2 = _layer()
    gr = GRIDS[grid]
    w_q = round_to_grid(w0, gr.bits, gr.block)
    ev = grid_evidence(RowPosterior.build(w0, a, b, s2), w_q, nu)
    direct = _direct(w0, a, b, s2, nu, w_q)
    assert ev.delta_lnz == pytest.approx(direct, rel=1e-9, abs=1e-8)
    assert ev.delta_lnz == pytest.approx(_savage_dickey(w0, a, b, s2, nu, w_q), rel=1e-9, abs=1e-8)
    eps = w_q - w0
    distortion = sum(float(b[i] * eps[i] @ a @ eps[i]) for i in range(len(b)))
    assert ev.distortion == pytest.approx(distortion, rel=1e-9)


def test_diagonal_input_moment_equals_the_dense_path():
    w0, _, b, s2 = _layer(seed=3)
    freq = torch.rand(w0.shape[1], dtype=torch.float64)
    freq[::3] = 0.0  # tokens never seen: their columns keep the prior
    w_q = round_to_grid(w0, 4, 32)
    dense = grid_evidence(RowPosterior.build(w0, torch.diag(freq), b, s2), w_q, 50.0)
    diag = grid_evidence(RowPosterior.build(w0, freq, b, s2), w_q, 50.0)
    assert diag.delta_lnz == pytest.approx(dense.delta_lnz, rel=1e-9)
    assert diag.distortion == pytest.approx(dense.distortion, rel=1e-9)


def test_unseen_columns_cost_nothing():
    w0, _, b, s2 = _layer(seed=4)
    ev = grid_evidence(RowPosterior.build(w0, torch.zeros(w0.shape[1]), b, s2),
                       round_to_grid(w0, 4, 128), 1e6)
    assert ev.delta_lnz == 0.0 and ev.distortion == 0.0


def test_a_wide_posterior_gets_fewer_bits_than_a_sensitive_one():
    w0, a, b, s2 = _layer(rows=8, d=128, seed=5)
    cands = {n: round_to_grid(w0, g.bits, g.block) for n, g in GRIDS.items()}
    nu = 100.0

    def choice(scale: float) -> str:
        post = RowPosterior.build(w0, a, b * scale, s2)
        return choose_grid({n: grid_evidence(post, w, nu) for n, w in cands.items()})

    bits = {**{n: g.bits_per_weight for n, g in GRIDS.items()}, KEEP: 32.0}
    wide, sensitive, very = choice(1e-2), choice(1e4), choice(1e9)
    assert bits[wide] < bits[sensitive] < bits[very]
    assert wide == "int4-b128" and very == KEEP


def test_finer_grids_have_larger_evidence_and_smaller_distortion():
    w0, a, b, s2 = _layer(d=128, seed=6)
    post = RowPosterior.build(w0, a, b, s2)
    ev = {n: grid_evidence(post, round_to_grid(w0, g.bits, g.block), 10.0) for n, g in GRIDS.items()}
    assert ev["int8"].delta_lnz > ev["int4-b32"].delta_lnz > ev["int4-b128"].delta_lnz
    assert ev["int8"].distortion < ev["int4-b32"].distortion < ev["int4-b128"].distortion


def test_round_to_grid_is_symmetric_blockwise():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.1, 2.0, 0.0, -0.5]], dtype=torch.float64)
    q = round_to_grid(w, 4, 4)
    # block 1: largest magnitude −1.0 -> scale 1/8: codes exact; block 2 (padded): 2.0 -> scale
    # −0.25: 2.0 -> code 0 (−8·−0.25), −0.5 -> code 10 (2·−0.25)
    assert q.tolist() == [[0.5, -1.0, 0.25, 0.125, 2.0, 0.0, -0.5]]
    assert torch.equal(round_to_grid(torch.zeros(2, 5), 8, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError):
        round_to_grid(w, 1, 4)
