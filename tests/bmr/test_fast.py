"""Fast spike-scoring path: same values as the plain expression, on every backend."""

from __future__ import annotations

import pytest
import torch

from bmr_compress.bmr import score_spike_, spike_delta_lnz
from bmr_compress.bmr import _fast


def _plain(mu: torch.Tensor, v: torch.Tensor, v0: float) -> torch.Tensor:
    return 0.5 * (v0 - v) - 0.5 * mu.square() * torch.exp(-v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["chunked", "eager"])
def test_backends_match_plain_expression(dtype: torch.dtype, backend: str) -> None:
    n = _fast.CHUNK * 2 + 12345  # several blocks and a ragged tail
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(n, generator=gen, dtype=dtype) * 0.1
    v = torch.randn(n, generator=gen, dtype=dtype) * 3 - 8
    out = torch.full_like(mu, float("nan"))
    got = score_spike_(out, mu, v, -4.0, backend=backend)
    assert got is out
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, _plain(mu.double(), v.double(), -4.0).to(dtype), rtol=rtol, atol=rtol)


def test_spike_delta_lnz_uses_fast_path_for_big_tensors_and_honours_out() -> None:
    shape = (37, _fast.FAST_MIN_NUMEL // 37 + 5)  # any shape, contiguous
    mu, v = torch.randn(shape), torch.randn(shape) - 6
    assert _fast.fast_path_ok(mu, v, torch.tensor(-3.0), None)
    out = torch.empty(shape)
    res = spike_delta_lnz(mu, v, torch.tensor(-3.0), out=out)
    assert res is out
    torch.testing.assert_close(res, _plain(mu.double(), v.double(), -3.0).float(), rtol=1e-5, atol=1e-5)
    # non-contiguous or grad-requiring inputs take the plain, differentiable expression
    assert not _fast.fast_path_ok(mu.t(), v.t(), -3.0, None)
    mu_g = mu.clone().requires_grad_()
    spike_delta_lnz(mu_g, v, -3.0).sum().backward()
    torch.testing.assert_close(mu_g.grad, -mu * torch.exp(-v), rtol=1e-5, atol=1e-6)


def test_score_spike_rejects_mismatched_out() -> None:
    x = torch.zeros(10)
    with pytest.raises(ValueError, match="share shape"):
        score_spike_(torch.zeros(11), x, x, 0.0)
    with pytest.raises(ValueError, match="backend"):
        score_spike_(torch.zeros(10), x, x, 0.0, backend="nope")  # type: ignore[arg-type]


@pytest.mark.slow
def test_compiled_backend_matches() -> None:
    n = 1 << 20
    mu, v = torch.randn(n) * 0.1, torch.randn(n) * 3 - 8
    got = score_spike_(torch.empty(n), mu, v, -4.0, backend="compiled")
    torch.testing.assert_close(got, _plain(mu.double(), v.double(), -4.0).float(), rtol=1e-5, atol=1e-5)
    assert not _fast._compile_failed
