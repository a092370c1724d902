"""The fine-tune: reproducibility, resume, divergence, posterior file, masks, held-out ELBO."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors import safe_open

from bmr_compress.errors import DivergenceError, InputError
from bmr_compress.variational import (
    FinetuneSettings, PosteriorSpec, finetune, heldout_elbo, load_posterior, posterior_tensors,
    save_posterior, set_masks_, wrap_,
)
from bmr_compress.variational.wrap import wrap_state
from tests.variational.models import CASES

FAST = dict(progress=False, lr=1e-3, log_var_lr=3e-2, min_n_data=1)


def _setup(name="mlp", spec=None, batches=3):
    build, inputs = CASES[name]
    teacher = build()
    model = copy.deepcopy(teacher)
    wrap_(model, spec or PosteriorSpec(gates=(("net.0", 1),)) if name == "mlp" else spec)
    return model, teacher, [inputs(4, seed=i) for i in range(batches)]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finetune_is_seeded_and_moves_the_posterior():
    runs = []
    for _ in range(2):
        model, teacher, batches = _setup()
        res = finetune(model, teacher, batches, FinetuneSettings(steps=5, **FAST))
        runs.append((_state(model), res))
    (s1, r1), (s2, r2) = runs
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    assert r1.n_data == 12 and len(r1.history) == 5
    lv0 = _setup()[0].state_dict()["net.0.bmr_weight_log_var"]
    assert not torch.equal(s1["net.0.bmr_weight_log_var"], lv0)
    assert all(torch.isfinite(torch.tensor([h["elbo"], h["kl"], h["data"]])).all()
               for h in r1.history)


def test_resume_equals_uninterrupted(tmp_path):
    model, teacher, batches = _setup()
    finetune(model, teacher, batches, FinetuneSettings(steps=6, **FAST))
    straight = _state(model)
    model2, teacher2, _ = _setup()
    ck = str(tmp_path / "ck")
    finetune(model2, teacher2, batches,
             FinetuneSettings(steps=3, checkpoint_dir=ck, checkpoint_every=3, **FAST))
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["step"] == 3
    model3, teacher3, _ = _setup()  # a fresh process would start from a fresh wrap
    res = finetune(model3, teacher3, batches,
                   FinetuneSettings(steps=6, checkpoint_dir=ck, checkpoint_every=3, resume=True,
                                    **FAST))
    assert res.start_step == 3 and len(res.history) == 6
    resumed = _state(model3)
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0, msg=k)


def test_divergence_stops_and_keeps_last_good_state(tmp_path):
    model, teacher, batches = _setup()
    bad = {"pixel_values": batches[0]["pixel_values"].clone()}
    bad["pixel_values"][0, 0] = float("nan")
    finetune(model, teacher, batches[:1], FinetuneSettings(steps=1, **FAST))
    good = _state(model)
    with pytest.raises(DivergenceError, match="diverged at step 1"):
        finetune(model, teacher, [bad],
                 FinetuneSettings(steps=3, checkpoint_dir=str(tmp_path), **FAST))
    after = _state(model)
    assert all(torch.equal(good[k], after[k]) for k in good)
    assert (tmp_path / "checkpoint.safetensors").is_file()


def test_posterior_file_roundtrip(tmp_path):
    model, teacher, batches = _setup()
    res = finetune(model, teacher, batches,
                   FinetuneSettings(steps=2, output_dir=str(tmp_path), **FAST))
    assert res.posterior_path == tmp_path / "posterior.safetensors"
    with safe_open(str(res.posterior_path), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert {"net.0.weight::mu", "net.0.weight::log_var", "net.0.weight::prior_log_var",
            "net.0::gate_mu", "net.0::gate_log_sigma"} <= keys
    assert json.loads(meta["bmr_gates"])["net.0"] == {
        "axis": -1, "unit_size": 1, "kind": "lognormal",
                                                      "log_a": -20.0, "log_b": 0.0}
    assert json.loads(meta["bmr_settings"])["finetune"]["steps"] == 2
    state = load_posterior(res.posterior_path)
    live = posterior_tensors(model)
    assert set(state.tensors) == set(live)
    for k, t in live.items():
        assert torch.equal(state.tensors[k].mu, t.mu)
        assert torch.equal(state.tensors[k].log_var, t.log_var)
        assert state.tensors[k].prior_log_var.dim() == 0
    assert state.gates["net.0"].mu.shape == (37,)
    fresh, _, _ = _setup()
    from bmr_compress.variational import restore_posterior_

    restore_posterior_(fresh, state)
    x = batches[0]
    torch.testing.assert_close(fresh.eval()(**x), model.eval()(**x), rtol=0, atol=0)
    save_posterior(tmp_path / "again.safetensors", state, state.settings)
    assert load_posterior(tmp_path / "again.safetensors").settings == state.settings
    with pytest.raises(InputError):
        load_posterior(tmp_path / "missing.safetensors")


def test_masked_refit_keeps_zeros_and_heldout_elbo():
    model, teacher, batches = _setup()
    w = model.net[2].weight
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[:, :10] = False
    set_masks_(model, {"net.2.weight": keep})
    settings = FinetuneSettings(steps=4, **FAST)
    before = heldout_elbo(model, teacher, batches, settings)
    again = heldout_elbo(model, teacher, batches, settings)
    assert before == again  # seeded
    finetune(model, teacher, batches, settings)
    assert (w[:, :10] == 0).all() and (w[:, 10:] != 0).all()
    after = heldout_elbo(model, teacher, batches, settings)
    assert after.n_data == 12 and after.kl > 0
    assert after.elbo == pytest.approx(-(after.data + after.kl / 12))


def test_hidden_state_distillation_on_bert():
    model, teacher, batches = _setup("bert", PosteriorSpec())
    res = finetune(model, teacher, batches, FinetuneSettings(steps=2, **FAST))
    assert res.history[0]["data"] > 0  # Gaussian likelihood on last_hidden_state
    st = wrap_state(model)
    assert "embeddings.word_embeddings.weight" in st.entries


def test_supervised_and_settings_strict():
    model, teacher, batches = _setup()
    for i, b in enumerate(batches):
        b["labels"] = torch.tensor([i, 1, 2, 3])
    res = finetune(model, None, batches, FinetuneSettings(steps=2, objective="supervised", **FAST))
    assert res.history[-1]["data"] > 0
    with pytest.raises(InputError):
        FinetuneSettings.from_dict({"steps": 2, "nope": 1})
    with pytest.raises(InputError):
        FinetuneSettings(steps=1, objective="bogus")
    unlabeled = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    with pytest.raises(InputError):
        finetune(model, teacher, unlabeled,
                 FinetuneSettings(steps=1, objective="supervised", **FAST))


def test_default_n_data_has_a_floor():
    model, teacher, batches = _setup()
    res = finetune(model, teacher, batches[:1], FinetuneSettings(steps=1, progress=False))
    assert res.n_data == FinetuneSettings().min_n_data
    res = finetune(model, teacher, batches[:1], FinetuneSettings(steps=1, progress=False, n_data=7))
    assert res.n_data == 7


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_finetune():
    model, teacher, batches = _setup("bert", PosteriorSpec())
    res = finetune(model, teacher, batches, FinetuneSettings(steps=3, device="cuda", **FAST))
    assert res.device.startswith("cuda")
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)


def test_masked_weight_space_tensor_keeps_gradients_finite():
    """Masking one element of a weight-sampled tensor (a norm) must not poison the gradients
    (sqrt at variance 0): regression for iterative BMR on ViT/Mixer."""
    import torch
    from torch import nn

    from bmr_compress.variational import finetune, set_masks_, wrap_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    teacher = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    teacher.load_state_dict(model.state_dict())
    wrap_(model)
    keep = {"1.bias": torch.ones(5, dtype=torch.bool)}
    keep["1.bias"][2] = False
    set_masks_(model, keep)
    batches = [{"input": torch.randn(4, 6)} for _ in range(2)]  # Sequential.forward(input)
    res = finetune(model, teacher, batches, FinetuneSettings(steps=3, progress=False, n_data=100))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in res.history)
    assert float(model[1].bias.detach()[2]) == 0.0
