"""Per-matrix precision chosen by BMR on a tiny BERT (scoring/precision.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from bmr_compress.bmr.precision import GRIDS, KEEP
from bmr_compress.algorithms.recovery import distortion
from bmr_compress.scoring.precision import (
    calibrate_precisions, choose_precisions, embedding_factors, matrix_posteriors, round_weights_,
)
from bmr_compress.scoring.unit_posterior import output_scale
from bmr_compress.tasks import probe_output
from tests.tiny_models import VOCAB, text_inputs, tiny_bert


@pytest.fixture(scope="module")
def setup():
    model = tiny_bert()
    batches = [text_inputs(batch=4, seq=13, seed=s) for s in range(6)]
    scale = output_scale(model, batches, "embedding")
    return model, batches, scale, matrix_posteriors(model, batches, "embedding", scale)


def test_every_linear_and_embedding_is_scored(setup):
    model, _, _, posts = setup
    linears = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    tables = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    got = {p.param: p.kind for p in posts}
    assert {p for p, k in got.items() if k == "linear"} == linears
    assert {p for p, k in got.items() if k == "embedding"} == tables
    word = next(p for p in posts if p.param == "embeddings.word_embeddings.weight")
    assert word.posterior.w0.shape == (model.config.hidden_size, VOCAB)
    assert set(word.candidates) == set(GRIDS)


def test_embedding_row_scales_equal_per_example_gradients():
    """b_i of the word table = mean over examples of Σ_tokens (∂ vᵀf/scale / ∂E[t, i])², each
    example its own batch so that autograd's table gradient is the per-example one."""
    model = tiny_bert()
    batches = [text_inputs(batch=1, seq=9, seed=s) for s in range(5)]
    freq, b = embedding_factors(model, batches, "embedding", 2.0)
    word = "embeddings.word_embeddings"
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(model.config.hidden_size, dtype=torch.float64)
    for batch in batches:
        model.zero_grad()
        f = probe_output(model, batch, "embedding")
        v = torch.randn(f.shape, generator=gen)
        ((v * f).sum() / 2.0).backward()
        total += (model.get_submodule(word).weight.grad.double() ** 2).sum(0)
    model.zero_grad()
    torch.testing.assert_close(b[word], total / len(batches))
    assert float(freq[word].sum()) == pytest.approx(1.0)
    seen = torch.unique(torch.cat([bt["input_ids"][bt["attention_mask"].bool()] for bt in batches]))
    assert int((freq[word] > 0).sum()) == len(seen)


def test_precision_follows_nu(setup):
    _, _, _, posts = setup
    """Precision rises with ν for every matrix: all on the coarsest grid when the likelihood
    is flat, all kept when it is sharp enough (query/key of a random tiny BERT barely move
    the output, so 'sharp enough' is very sharp for them)."""
    bits = {KEEP: 32.0, **{n: g.bits_per_weight for n, g in GRIDS.items()}}
    nus = [1e-6, 1e-2, 1e2, 1e6, 1e10, 1e14, 1e20]
    picks = [choose_precisions(posts, nu).grids for nu in nus]
    assert set(picks[0].values()) == {"int4-b128"}
    assert set(picks[-1].values()) == {KEEP}
    for p in picks[0]:
        seq = [bits[c[p]] for c in picks]
        assert seq == sorted(seq), p


def test_calibrated_choice_meets_the_tolerance_it_predicts_and_measures(setup):
    model, batches, scale, posts = setup
    tol = 2e-3
    choice = calibrate_precisions(posts, tol)
    assert 0 < choice.predicted_distortion <= tol
    assert len(set(choice.grids.values())) >= 2  # a mix, not one grid for all
    rounded = copy.deepcopy(model)
    applied = round_weights_(rounded, choice.grids)
    assert applied and all(g != KEEP for g in applied.values())
    measured = distortion(rounded, model, batches, "embedding", scale)
    # first-order prediction, one probe per example: within a factor 3 of the measured
    assert choice.predicted_distortion / 3 < measured < 3 * choice.predicted_distortion
