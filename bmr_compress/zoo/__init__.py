"""Model zoo: seed architectures for 8x8 digits, their training, and checkpoint loading.

Importing ``bmr_compress.zoo`` does not import torch; names resolve lazily on first use.
``zoo.adapters`` registers the zoo's family adapters (coupling) when imported (and holds the builder
compressed zoo models name); ``zoo.sources`` registers the zoo's source kinds in io.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ZOO_ARCHITECTURES": "architectures", "register_zoo": "architectures",
    "build_model": "architectures", "build_from_config_dict": "architectures",
    "make_config": "architectures", "ARCH_KEY": "architectures", "ZooModel": "architectures",
    "MLP": "architectures", "LeNet5": "architectures", "MLPMixer": "architectures",
    "ViT": "architectures",
    "TrainSettings": "train", "TrainResult": "train", "train_zoo_model": "train",
    "load_zoo_checkpoint": "train", "save_zoo_checkpoint": "train", "zoo_cache_dir": "train",
    "is_zoo_checkpoint": "train", "fit_digits": "train",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
