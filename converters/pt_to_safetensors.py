"""Convert a pickled PyTorch state dict (.pt/.pth/.bin) to safetensors, then read it back.

The input is opened with ``torch.load(weights_only=True)`` only: a file that needs arbitrary
unpickling is refused. Tied (shared-storage) tensors are stored once per name as copies.
Every tensor of the written file is compared bit for bit with the source before returning.

    python -m bmr_compress.converters.pt_to_safetensors pytorch_model.bin model.safetensors
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from bmr_compress.errors import BmrError, InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConversionResult:
    source: Path
    target: Path
    tensors: int
    bytes_written: int


def convert_state_dict(source: str | Path, target: str | Path, *, overwrite: bool = False) -> ConversionResult:
    """``source`` state dict -> ``target`` .safetensors; verified by reading the file back."""
    import torch
    from safetensors.torch import load_file, save_file

    from bmr_compress.io.sources import load_weight_file

    src, dst = Path(source), Path(target)
    if dst.suffix != ".safetensors":
        raise InputError(f"target must end in .safetensors: {dst}")
    if dst.exists() and not overwrite:
        raise InputError(f"target exists: {dst} (pass --overwrite)")
    state = {k: v.detach().contiguous().clone() for k, v in load_weight_file(src, allow_pickle=True).items()}
    if not state:
        raise InputError(f"{src} holds no tensors")
    tmp = dst.with_name(f".{dst.name}.tmp")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp), metadata={"format": "pt", "converted_from": src.name})
    back = load_file(str(tmp))
    bad = sorted(set(state) ^ set(back)) or [k for k in state if state[k].dtype != back[k].dtype
                                              or not torch.equal(state[k], back[k])]
    if bad:
        tmp.unlink(missing_ok=True)
        raise OSError(f"read-back check failed for {dst}: tensor {bad[0]!r} differs")
    tmp.replace(dst)
    log.info("converted %d tensors: %s -> %s", len(state), src, dst)
    return ConversionResult(src, dst, len(state), dst.stat().st_size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bmr_compress.converters.pt_to_safetensors",
                                description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        r = convert_state_dict(args.source, args.target, overwrite=args.overwrite)
    except BmrError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"{r.target}: {r.tensors} tensors, {r.bytes_written} bytes (read back and verified)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
