"""Builder for the torchrun test: identical model, teacher and global batches on every rank."""

from __future__ import annotations

import copy

import torch

from bmr_compress.variational import PosteriorSpec
from tests.variational.models import CASES

SETTINGS = {"steps": 4, "lr": 1e-3, "log_var_lr": 3e-2, "seed": 3, "min_n_data": 1}


def build():
    make, inputs = CASES["mlp"]
    teacher = make()
    model = copy.deepcopy(teacher)
    batches = [inputs(6, seed=i) for i in range(2)]  # global batches of 6 -> 3 per rank
    for i, b in enumerate(batches):  # labels: an O(1) data term whose gradient matters
        b["labels"] = (torch.arange(6) * (i + 2)) % 10
    spec = PosteriorSpec(gates=(("net.0", 1), ("net.2", 1)))
    return model, teacher, batches, spec
