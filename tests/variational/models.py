"""Tiny models that exercise every registered handler (odd sizes, built in-process)."""

from __future__ import annotations

import torch
from torch import nn

from tests.tiny_models import ResConcatNet, TinyMLP, image_inputs, text_inputs, tiny_bert, tiny_gpt2


class OddNet(nn.Module):
    """Embedding, LayerNorm, Conv1d, GroupNorm, RMSNorm, Conv3d + InstanceNorm3d, Linear."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(23, 11)
        self.ln = nn.LayerNorm(11)
        self.conv1 = nn.Conv1d(11, 9, 3, padding=1)
        self.gn = nn.GroupNorm(3, 9)
        self.rms = nn.RMSNorm(9)
        self.conv3 = nn.Conv3d(1, 5, 3, padding=1, padding_mode="reflect")
        self.inorm = nn.InstanceNorm3d(5, affine=True)
        self.head = nn.Linear(9 + 5, 7)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, 7)
        h = self.ln(self.emb(input_ids))  # (B, T, 11)
        h = self.gn(self.conv1(h.transpose(1, 2)))  # (B, 9, T)
        h = self.rms(h.transpose(1, 2)).mean(1)  # (B, 9)
        v = h[:, None, :, None, None].expand(-1, 1, 9, 3, 3).contiguous()  # (B, 1, 9, 3, 3)
        v = self.inorm(self.conv3(v)).mean((2, 3, 4))  # (B, 5)
        return self.head(torch.cat([h, v], 1))


def _seeded(fn):
    torch.manual_seed(0)
    return fn().eval()


def _odd_inputs(batch: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 23, (batch, 6), generator=g)}


def _mlp_inputs(batch: int = 4, seed: int = 1):
    return {"pixel_values": torch.randn(batch, 64, generator=torch.Generator().manual_seed(seed))}


CASES = {
    "mlp": (lambda: _seeded(TinyMLP), _mlp_inputs),
    "convnet": (lambda: _seeded(ResConcatNet),
                lambda batch=4, seed=1: image_inputs(batch, 11, seed)),
    "oddnet": (lambda: _seeded(OddNet), _odd_inputs),
    "bert": (tiny_bert, lambda batch=4, seed=1: text_inputs(batch, 7, seed=seed)),
    "gpt2": (tiny_gpt2, lambda batch=4, seed=1: text_inputs(batch, 7, seed=seed)),
}
