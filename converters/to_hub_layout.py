"""Turn a bare weight file + a zoo recipe into a hub-layout directory, verified by reloading.

    python -m bmr_compress.converters.to_hub_layout weights.pt mlp-digits out/mlp

The output (model.safetensors + config.json + README.md) loads with
``bmr_compress.zoo.load_zoo_checkpoint`` and as a compress SOURCE; the converter reloads it and
checks that its outputs equal those of the model built from the input file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bmr_compress.errors import BmrError, InputError

log = logging.getLogger(__name__)


def weights_to_hub_layout(weights: str | Path, recipe: str, out_dir: str | Path, *,
                          overwrite: bool = False) -> Path:
    import torch

    from bmr_compress.io.atomic import atomic_output_dir
    from bmr_compress.io.recipes import load_recipe
    from bmr_compress.io.sources import load_weight_file
    from bmr_compress.zoo.architectures import build_model
    from bmr_compress.zoo.train import load_state_dict_strict, load_zoo_checkpoint, save_zoo_checkpoint

    r = load_recipe(recipe)
    if not r.source.zoo:
        raise InputError(f"recipe {r.name!r} is not a zoo architecture; hub checkpoints already have a layout")
    model = build_model(r.source.zoo, r.source.arch, origin=r.path).eval()
    load_state_dict_strict(model, load_weight_file(Path(weights), allow_pickle=True), origin=str(weights))
    readme = (f"# {r.name}\n\nConverted from `{Path(weights).name}` with bmr-compress "
              f"(zoo architecture `{r.source.zoo}`).\n")
    with atomic_output_dir(out_dir, overwrite) as staging:
        save_zoo_checkpoint(model, staging, extra_config={"bmr_zoo_recipe": r.name}, readme=readme)
        again = load_zoo_checkpoint(staging)
        x = torch.rand(4, model.zoo_config.in_channels, model.zoo_config.image_size,
                       model.zoo_config.image_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if not torch.equal(again(x), model(x)):
                raise OSError(f"reload check failed for {out_dir}: outputs differ")
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bmr_compress.converters.to_hub_layout",
                                description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path)
    p.add_argument("recipe")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        out = weights_to_hub_layout(args.weights, args.recipe, args.out_dir, overwrite=args.overwrite)
    except BmrError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {out} (reloaded and verified)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
