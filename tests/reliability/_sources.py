"""Tiny real sources for the reliability tests, built once per session in a tmp dir.

* ``bert``: a tiny BERT (hidden 36, 3 heads) saved with ``save_pretrained`` plus a WordPiece
  tokenizer, i.e. a local hub snapshot;
* ``cache``: a BMR_COMPRESS_CACHE holding the ``mlp-digits`` zoo checkpoint, trained for a few
  epochs with ``train_zoo_model`` (well enough for the validation gate to pass);
* ``remote``: a snapshot whose config.json needs its own Python code (``auto_map``); its model
  couples a GroupNorm (no surgery handler) between two convolutions.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

CONFIG_PY = '''from transformers import PretrainedConfig


class GnNetConfig(PretrainedConfig):
    model_type = "bmr-gnnet"

    def __init__(self, channels=8, num_labels=10, **kwargs):
        self.channels = channels
        super().__init__(num_labels=num_labels, **kwargs)
'''

MODELING_PY = '''from torch import nn
from transformers import PreTrainedModel

from .configuration_gnnet import GnNetConfig


class GnNetModel(PreTrainedModel):
    config_class = GnNetConfig
    base_model_prefix = "gnnet"

    def __init__(self, config):
        super().__init__(config)
        c = config.channels
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.norm = nn.GroupNorm(2, c)
        self.conv2 = nn.Conv2d(c, 4, 3, padding=1)
        self.head = nn.Linear(4 * 64, config.num_labels)
        self.post_init()

    def forward(self, pixel_values, **kwargs):  # (B, 1, 8, 8) -> (B, labels)
        x = self.conv2(self.norm(self.conv1(pixel_values)))
        return self.head(x.flatten(1))
'''

MLP_ARCH = {"widths": [128, 64]}


@dataclass(frozen=True)
class Sources:
    root: Path
    bert: Path  # tiny BERT snapshot with tokenizer
    cache: Path  # BMR_COMPRESS_CACHE with zoo/mlp-digits
    remote: Path  # snapshot that needs trust_remote_code; GroupNorm inside

    @property
    def mlp_dir(self) -> Path:
        return self.cache / "zoo" / "mlp-digits"


def _bert(d: Path) -> None:
    from transformers import BertTokenizerFast

    from tests.tiny_models import VOCAB, tiny_bert

    tiny_bert().save_pretrained(str(d))
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(97, 123)]
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(str(d))


def _remote(d: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from torch import nn

    d.mkdir(parents=True)
    (d / "configuration_gnnet.py").write_text(CONFIG_PY)
    (d / "modeling_gnnet.py").write_text(MODELING_PY)
    torch.manual_seed(0)
    c = 8
    weights = {  # the same layout as GnNetModel, built without importing the remote code
        "conv1.weight": nn.Conv2d(1, c, 3).weight, "conv1.bias": torch.zeros(c),
        "norm.weight": torch.ones(c), "norm.bias": torch.zeros(c),
        "conv2.weight": nn.Conv2d(c, 4, 3).weight, "conv2.bias": torch.zeros(4),
        "head.weight": nn.Linear(256, 10).weight, "head.bias": torch.zeros(10),
    }
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(d / "model.safetensors"),
              metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps({
        "model_type": "bmr-gnnet", "architectures": ["GnNetModel"], "channels": c, "num_labels": 10,
        "auto_map": {"AutoConfig": "configuration_gnnet.GnNetConfig",
                     "AutoModel": "modeling_gnnet.GnNetModel"},
    }))


def build_sources(root: Path) -> Sources:
    from bmr_compress.zoo.train import TrainSettings, train_zoo_model

    root.mkdir(parents=True, exist_ok=True)
    src = Sources(root, root / "bert", root / "cache", root / "remote")
    _bert(src.bert)
    train_zoo_model("mlp", MLP_ARCH, src.mlp_dir, TrainSettings(epochs=6), name="mlp-digits")  # ~0.95 acc
    _remote(src.remote)
    return src


def copy_snapshot(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
