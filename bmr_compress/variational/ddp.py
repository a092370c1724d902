"""torchrun entry: the same variational fine-tune under DDP (gloo on CPU, NCCL on GPU).

    torchrun --nproc_per_node 2 -m bmr_compress.variational.ddp \\
        --builder my_pkg.my_mod:build --settings finetune.json --out DIR

`build()` returns (model, teacher, batches, PosteriorSpec); every rank calls it and must
get identical models and the same global batches. Rank 0 writes DIR/posterior.safetensors
and DIR/fit.json; the other ranks write nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _load_builder(spec: str):
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builder", required=True,
                    help="module:function returning (model, teacher, batches, spec)")
    ap.add_argument("--settings", help="JSON file of FinetuneSettings fields")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    import torch.distributed as dist

    from bmr_compress.variational import FinetuneSettings, finetune, wrap_

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        data = json.loads(Path(args.settings).read_text()) if args.settings else {}
        settings = FinetuneSettings.from_dict(dict(data, output_dir=args.out, progress=False))
        model, teacher, batches, spec = _load_builder(args.builder)()
        wrap_(model, spec)
        result = finetune(model, teacher, batches, settings)
        if dist.get_rank() == 0:
            fit = dataclasses.asdict(result)
            fit["posterior_path"] = str(result.posterior_path)
            fit["world_size"] = dist.get_world_size()
            (Path(args.out) / "fit.json").write_text(json.dumps(fit, indent=1))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
