"""Several processes (torchrun): the process group, and how the work is shared between them.

The variational fine-tune under DDP (gloo on CPU, NCCL on GPU):

    torchrun --nproc_per_node 2 -m bmr_compress.variational.ddp \\
        --builder my_pkg.my_mod:build --settings finetune.json --out DIR

`build()` returns (model, teacher, batches, PosteriorSpec); every rank calls it and must
get identical models and the same global batches. Rank 0 writes DIR/posterior.safetensors
and DIR/fit.json; the other ranks write nothing.

The default (Laplace) path under `torchrun ... -m bmr_compress.cli.main compress ...`
shares its heavy stages through a `Shard`: every process holds the same global batches and
takes a contiguous slice of each one's examples (`Shard.local`); the calibration statistics
are summed over the processes (`Shard.sum_dict`, `Shard.total`), and the recovery sums the
gradients of each process's part of the global loss (`Shard.sum_grads_`), so every process
steps Adam on the gradient one process would compute over the whole batch. The functions that
share their work read `current_shard()`, which is None unless a caller set one with
`sharded(...)`: without torchrun nothing here calls torch.distributed.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import importlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)


def env_world() -> tuple[int, int]:
    """(rank, world size) that torchrun set in the environment; (0, 1) without torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def backend() -> str:
    """NCCL when CUDA is available, else gloo."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


@dataclass(frozen=True)
class Shard:
    """This process's part of every global batch, and the sums over the processes.

    `sum_` / `broadcast_` act in place on a tensor: it becomes its sum over the processes /
    rank 0's value (torch.distributed under torchrun; tests pass their own)."""

    rank: int
    world: int
    sum_: Callable[[Tensor], None]
    broadcast_: Callable[[Tensor], None]

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's examples of a batch of `n` (the first n mod world
        ranks take one more)."""
        from bmr_compress.errors import InputError

        if n < self.world:
            raise InputError(f"a calibration batch of {n} examples cannot be shared by "
                             f"{self.world} processes (raise --batch-size or use fewer)")
        q, r = divmod(n, self.world)
        start = self.rank * q + min(self.rank, r)
        return start, start + q + int(self.rank < r)

    def local(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """This rank's contiguous slice of every tensor whose first axis is the batch's."""
        n = batch_size(batch)
        a, b = self.bounds(n)
        return {k: v[a:b] if _per_example(v, n) else v for k, v in batch.items()}

    def total(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the processes (float64)."""
        import torch

        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        self.sum_(t)
        return [float(v) for v in t.tolist()]

    def sum_dict(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every tensor summed over the processes, in one collective (every process must hold
        the same keys and shapes)."""
        import torch

        keys = sorted(tensors)
        if not keys:
            return {}
        flat = torch.cat([tensors[k].reshape(-1) for k in keys])
        self.sum_(flat)
        out, at = {}, 0
        for k in keys:
            n = tensors[k].numel()
            out[k] = flat[at:at + n].view_as(tensors[k]).clone()
            at += n
        return out

    def sum_grads_(self, params: Iterable[Tensor], loss: Tensor) -> float:
        """Sum every parameter's .grad over the processes (one collective, the loss riding
        along); returns the summed loss."""
        import torch

        with_grad = [p for p in params if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in with_grad]
                         + [loss.detach().reshape(1).to(with_grad[0].grad if with_grad else loss)])
        self.sum_(flat)
        at = 0
        for p in with_grad:
            n = p.grad.numel()
            p.grad.copy_(flat[at:at + n].view_as(p.grad))
            at += n
        return float(flat[-1])

    def broadcast_params_(self, params: Iterable[Tensor]) -> None:
        """Every process takes rank 0's values (in place, one collective)."""
        import torch

        params = list(params)
        if not params:
            return
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            self.broadcast_(flat)
            at = 0
            for p in params:
                p.copy_(flat[at:at + p.numel()].view_as(p))
                at += p.numel()


def batch_size(batch: Mapping[str, Any]) -> int:
    """The number of examples: the first axis of the batch's first tensor."""
    import torch

    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    raise ValueError("a batch without tensors")


def _per_example(v: Any, n: int) -> bool:
    import torch

    return isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n


_CURRENT: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("bmr_shard", default=None)


def current_shard() -> Shard | None:
    """The Shard the running stage shares its work by (None: one process does it all)."""
    return _CURRENT.get()


@contextlib.contextmanager
def sharded(shard: Shard | None) -> Iterator[Shard | None]:
    """`current_shard()` is `shard` inside the block (this thread and context only)."""
    token = _CURRENT.set(shard)
    try:
        yield shard
    finally:
        _CURRENT.reset(token)


def local_batches(batches: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """This process's slices of `batches` under current_shard(); `batches` themselves without."""
    shard = current_shard()
    return list(batches) if shard is None else [shard.local(b) for b in batches]


def process_shard() -> Shard | None:
    """The Shard of the initialised default process group (None without torchrun, without a
    process group, or with one process)."""
    if env_world()[1] <= 1:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return Shard(dist.get_rank(), dist.get_world_size(), _all_reduce, _broadcast)


def _on_backend(t: Tensor, op: Callable[[Tensor], Any]) -> None:
    """Run a collective on `t` where the backend can (NCCL: the current CUDA device)."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        moved = t.to(torch.device("cuda", torch.cuda.current_device()))
        op(moved)
        t.copy_(moved.to(t.device))
    else:
        op(t)


def _all_reduce(t: Tensor) -> None:
    import torch.distributed as dist

    _on_backend(t, dist.all_reduce)


def _broadcast(t: Tensor) -> None:
    import torch.distributed as dist

    _on_backend(t, lambda x: dist.broadcast(x, 0))


@contextlib.contextmanager
def process_group(name: str | None = None) -> Iterator[Shard | None]:
    """Under torchrun with several processes: the default process group for the block
    (backend `name`, default NCCL with CUDA, else gloo; destroyed at its end unless it was
    already up), yielding its Shard. Otherwise None, and no torch.distributed call."""
    if env_world()[1] <= 1:
        yield None
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        yield process_shard()
        return
    name = name or backend()
    if name == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(name)
    try:
        yield process_shard()
    finally:
        dist.destroy_process_group()


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

    import torch.distributed as dist

    from bmr_compress.variational import FinetuneSettings, finetune, wrap_

    dist.init_process_group(backend())
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
