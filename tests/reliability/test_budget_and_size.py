"""Issue 16 #11: a size budget means a share of the model's parameters, and a run that
removes nothing is not rejected as larger.

Before: `--size-budget 0.6` on the digits MLP kept 24.6 % of the parameters (the middle
weight matrix is owned by the rows of one neuron group and the columns of the next, and
the budget counted it twice); and the ONNX exporter stores equal-valued tensors once
(an untrained model's LayerNorm weights are all ones), so a fine-tuned model that pruned
nothing had more initializer bytes than the original and failed `size_not_larger`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.reliability._cli import run_cli_process
from tests.reliability._sources import Sources


@pytest.mark.parametrize("budget", [pytest.param(0.6, marks=pytest.mark.slow), 0.3])
def test_size_budget_is_a_share_of_the_parameters(budget: float, sources: Sources,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli_process(["compress", "zoo:mlp-digits", "--out", str(out), "--size-budget",
                         str(budget), "--steps", "5", "--max-samples", "240"], sources.cache)
    report_dir = out if r.returncode == 0 else out.with_name(out.name + ".rejected")
    params = json.loads((report_dir / "report.json").read_text())["parameters"]
    kept = params["compressed"] / params["original"]
    # at most the budget; rounding the widths down to multiples of 8 costs at most
    # 8 units of each of the two neuron groups (~1.7k of 17.2k parameters)
    assert budget - 0.1 <= kept <= budget, kept


def test_budget_counts_a_shared_element_once() -> None:
    from bmr_compress.cutting import apply_plan_
    from bmr_compress.planning import PlanSettings, make_plan
    from bmr_compress.coupling import discover_groups
    from bmr_compress.scoring.costs import CostLedger
    from tests.tiny_models import TinyMLP

    mlp = TinyMLP()
    groups = discover_groups(mlp, torch.randn(2, 64))
    shapes = {k: v.shape for k, v in mlp.state_dict().items()}
    owned = CostLedger(groups, shapes).total()
    total = sum(p.numel() for p in mlp.parameters())
    # everything but the last layer's weights/bias outside its 10 fixed outputs is owned
    assert owned == total - 10
    scores = {g.name: torch.linspace(-3, -1, g.num_units, dtype=torch.float64) for g in groups}
    budget = int(0.5 * owned)
    plan = make_plan(groups, scores, None, PlanSettings(round_to=0, max_params=budget,
                                                        unstructured=False), shapes=shapes)
    record = apply_plan_(mlp, groups, plan)
    after_owned = record.params_after - 10
    largest = max(g.numel_per_unit for g in groups)
    assert budget - largest < after_owned <= budget


class _Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 32)
        self.norms = nn.ModuleList(nn.LayerNorm(32) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        for n in self.norms:
            x = n(x)
        return x


def _check(original: Path, compressed: Path) -> tuple[bool, tuple[int, int]]:
    from bmr_compress.export.validation_checks import check_sizes, initializer_bytes
    from bmr_compress.export.validation import ValidationResult

    res = ValidationResult()
    check_sizes(res, compressed, original)
    (c,) = res.checks
    return c.passed, (initializer_bytes(original)[0], initializer_bytes(compressed)[0])


def test_equal_tensors_stored_once_do_not_fail_the_size_check(tmp_path: Path) -> None:
    from bmr_compress.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = _Normed().eval()
    x = {"x": torch.randn(2, 32)}
    export_onnx(model, tmp_path / "original.onnx", x)
    with torch.no_grad():  # a fine-tune moves every LayerNorm a little, nothing removed
        for n in model.norms:
            n.weight.add_(0.01 * torch.randn(32))
            n.bias.add_(0.01 * torch.randn(32))
    export_onnx(model, tmp_path / "tuned.onnx", x)
    passed, (before, after) = _check(tmp_path / "original.onnx", tmp_path / "tuned.onnx")
    assert after > before  # the artefact this test is about
    assert passed

    wider = nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 32)).eval()  # really larger
    export_onnx(wider, tmp_path / "wider.onnx", {"input": torch.randn(2, 32)})
    passed, (before, after) = _check(tmp_path / "original.onnx", tmp_path / "wider.onnx")
    assert after > before and not passed
