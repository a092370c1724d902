"""Where the posterior's noise comes from.

Under DDP every rank holds the same generator state and draws the noise of the *global*
batch, keeping its own slice: a 2-process run then sees exactly the noise of the
single-process run on the same global batch. Weight-space draws are shared by all ranks.
Without a generator the global torch RNG is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NoiseSource:
    generator: torch.Generator | None = None
    rank: int = 0
    world: int = 1

    def batch_randn(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
                    device: torch.device) -> torch.Tensor:
        """Standard normal of `shape` whose dim 0 is this rank's slice of the global batch."""
        shape = tuple(shape)
        b = shape[0]
        full = (b * self.world,) + shape[1:]
        z = torch.randn(full, generator=self.generator, dtype=torch.float32,
                        device=self._dev(device))
        if self.world > 1:
            z = z[self.rank * b:(self.rank + 1) * b]
        return z.to(device=device, dtype=dtype)

    def shared_randn(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
        z = torch.randn(tuple(shape), generator=self.generator, dtype=torch.float32,
                        device=self._dev(device))
        return z.to(device=device, dtype=dtype)

    def _dev(self, device: torch.device) -> torch.device:
        return self.generator.device if self.generator is not None else device
