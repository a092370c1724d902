"""The recovery's cached teacher targets: the same loss as a fresh teacher forward, in memory or
on disk; the layer-wise loss; the lr schedule; masked recovery keeps zeros."""

from __future__ import annotations

import copy

import pytest
import torch

from bmr_compress.algorithms.recovery import lr_factor, recover_
from bmr_compress.algorithms.targets import TeacherTargets, forward_targets, recovery_loss
from tests.tiny_models import VOCAB, tiny_bert


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        ids = torch.randint(3, VOCAB, (4, 9 + i), generator=g)
        mask = torch.ones_like(ids)
        mask[0, -3:] = 0  # padding must not count
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _student(teacher: torch.nn.Module) -> torch.nn.Module:
    s = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return s


@pytest.mark.parametrize("on_disk", [False, True])
@pytest.mark.parametrize("hidden_weight", [0.0, 0.7])
def test_cached_targets_give_the_recomputed_loss(on_disk: bool, hidden_weight: float) -> None:
    teacher = tiny_bert()
    student, batches = _student(teacher), _batches()
    hidden = hidden_weight > 0
    cache = TeacherTargets.compute(teacher, batches, "embedding", hidden=hidden,
                                   max_memory_bytes=0 if on_disk else 1 << 30)
    assert cache.on_disk is on_disk and len(cache) == len(batches)
    for i, b in enumerate(batches):
        s = forward_targets(student, b, "embedding", hidden)
        with torch.no_grad():
            fresh = forward_targets(teacher, b, "embedding", hidden)
        cached = recovery_loss(s, cache[i], b, "embedding", 0.5, hidden_weight)
        recomputed = recovery_loss(s, fresh, b, "embedding", 0.5, hidden_weight)
        assert float(cached.detach()) > 0
        torch.testing.assert_close(cached, recomputed, rtol=0, atol=0)
    if hidden:
        assert sorted(k for k in cache[0] if k.startswith("hidden.")) == ["hidden.1", "hidden.2"]


def test_layerwise_loss_ignores_padding_and_is_relative() -> None:
    b = {"attention_mask": torch.tensor([[1, 1, 0]])}
    t = {"output": torch.zeros(1, 2), "hidden.1": torch.ones(1, 3, 2)}
    s = {"output": torch.zeros(1, 2), "hidden.1": torch.tensor([[[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]]])}
    # real tokens: squared error 0 + (1 + 1) = 2 over teacher energy 4 -> 0.5, times the weight
    assert float(recovery_loss(s, t, b, "embedding", 1.0, 2.0)) == pytest.approx(1.0)
    assert float(recovery_loss(s, t, b, "embedding", 1.0, 0.0)) == 0.0


def test_recovery_with_disk_targets_equals_memory_and_reduces_the_loss() -> None:
    teacher = tiny_bert()
    batches = _batches()
    runs = []
    for limit in (1 << 30, 0):
        student = _student(teacher)
        cache = TeacherTargets.compute(teacher, batches, "embedding", hidden=True, max_memory_bytes=limit)
        rec = recover_(student, teacher, batches, "embedding", steps=12, lr=1e-3, targets=cache,
                       hidden_weight=0.5, schedule="cosine")
        runs.append((student, rec))
    (a, rec_a), (b, rec_b) = runs
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert rec_a.last_loss == rec_b.last_loss and rec_a.last_loss < rec_a.first_loss
    assert all(p.grad is None for p in a.parameters())


def test_keep_zeros_and_schedule() -> None:
    teacher = tiny_bert()
    student = _student(teacher)
    w = student.encoder.layer[0].intermediate.dense.weight
    with torch.no_grad():
        w[:, ::2] = 0.0
    recover_(student, teacher, _batches(2), "embedding", steps=3, lr=1e-2, keep_zeros=True)
    assert bool((w[:, ::2] == 0).all()) and bool((w[:, 1::2] != 0).any())
    assert [lr_factor("constant", s, 10) for s in (0, 9)] == [1.0, 1.0]
    cos = [lr_factor("cosine", s, 100) for s in range(100)]
    assert cos[0] == pytest.approx(0.2) and cos[4] == 1.0 and cos[-1] < 0.01
    assert all(x >= y for x, y in zip(cos[4:], cos[5:]))
    with pytest.raises(ValueError):
        recover_(student, teacher, _batches(1), "embedding", steps=1, schedule="linear")


def test_distortion_against_outputs_computed_once_is_the_same_number() -> None:
    from bmr_compress.algorithms.recovery import distortion, probe_outputs

    teacher = tiny_bert().eval()
    student, batches = _student(teacher).eval(), _batches()
    ref = probe_outputs(teacher, batches, "embedding")
    fresh = distortion(student, teacher, batches, "embedding", 0.5)
    assert fresh > 0
    assert distortion(student, teacher, batches, "embedding", 0.5, reference=ref) == fresh
    assert distortion(teacher, teacher, batches, "embedding", reference=ref) == 0.0


def test_transformers_models_give_hidden_states_for_the_layer_wise_loss() -> None:
    """transformers 5 takes output_hidden_states through **kwargs: the layer-wise loss must
    still be on (it was silently off), and it changes the recovery."""
    from bmr_compress.algorithms.targets import takes_hidden_states

    teacher = tiny_bert().eval()
    assert takes_hidden_states(teacher)
    batches = _batches()
    a, b = _student(teacher), _student(teacher)
    recover_(a, teacher, batches, "embedding", steps=3, lr=1e-3)
    recover_(b, teacher, batches, "embedding", steps=3, lr=1e-3, hidden_weight=1.0)
    diff = max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    assert diff > 0
