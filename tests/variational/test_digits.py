"""Real data: digits (sklearn), pretrained zoo MLP / LeNet5, variational fine-tune keeps accuracy.

The fine-tune is label-free (distillation from the frozen original, the default objective)
and must really widen the posterior (a sizeable share of weights becomes prunable by the
spike rule), while the posterior-mean network stays within 1 point of test accuracy.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from bmr_compress.variational import FinetuneSettings, finetune, posterior_tensors, wrap_


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0  # (1797, 1, 8, 8)
    y = torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1200], perm[1200:]  # fixed split: 1200 train / 597 test
    return x[tr], y[tr], x[te], y[te]


@functools.lru_cache(maxsize=2)
def _pretrained(kind: str) -> torch.nn.Module:
    from bmr_compress.zoo import LeNet5, MLP
    from bmr_compress.zoo.architectures import LeNet5Config, MLPConfig

    xtr, ytr, _, _ = _digits()
    torch.manual_seed(0)
    model = MLP(MLPConfig(widths=(64, 32))) if kind == "mlp" else LeNet5(LeNet5Config())
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(25):
        for i in range(0, len(xtr), 100):
            loss = F.cross_entropy(model(xtr[i:i + 100]), ytr[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _prunable_share(model) -> float:
    hit = total = 0
    for p in posterior_tensors(model).values():
        d = 0.5 * (p.prior_log_var - p.log_var - p.mu**2 / p.log_var.exp())  # spike dLnZ
        hit, total = hit + int((d >= 0).sum()), total + d.numel()
    return hit / total


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster and steadier on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _check(kind: str, steps: int) -> None:
    xtr, _, xte, yte = _digits()
    det = copy.deepcopy(_pretrained(kind))
    base_acc = _accuracy(det, xte, yte)
    assert base_acc > 0.9
    model = copy.deepcopy(det)
    wrap_(model)
    batches = [{"pixel_values": xtr[i:i + 100]} for i in range(0, len(xtr), 100)]
    res = finetune(model, det, batches, FinetuneSettings(steps=steps, progress=False))
    model.eval()
    acc = _accuracy(model, xte, yte)
    assert abs(acc - base_acc) <= 0.01 + 1e-9, (kind, base_acc, acc)
    assert _prunable_share(model) > 0.05, "posterior did not widen: the check would be vacuous"
    assert res.history[-1]["data"] > 0


def test_digits_mlp_keeps_accuracy_fast():
    _check("mlp", steps=80)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "lenet5"])
def test_digits_keeps_accuracy(kind):
    _check(kind, steps=500)
