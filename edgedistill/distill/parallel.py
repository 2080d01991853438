"""Data-parallel training as an explicit context: which rank this process is, of how many, and the few
collectives the training loop needs. One process is `SINGLE`; the distill stage under torchrun passes
`DataParallel.current()`, everything else (teacher training, the scratch baseline) trains alone."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> DataParallel:
        """This process's place in the torch.distributed process group, or one process when there is none."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return SINGLE

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
        """`model` for the forward pass: under DistributedDataParallel (gradients all-reduced in backward) when
        there are several processes; on CUDA, each rank's own GPU."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # 1x1 convolutions get gradients in another memory layout than DDP's buckets: a copy, not an error.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        cuda = device is not None and device.type == "cuda"
        return DistributedDataParallel(model, device_ids=[device.index] if cuda else None)

    def batch_size(self, global_batch: int) -> int:
        """Each rank's share of the global batch, which stays what the pipeline asks for."""
        return max(1, global_batch // self.world)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's order, padded by wrapping around so every rank takes as many steps
        (DistributedSampler's rule): collectives must line up step by step."""
        if self.world == 1:
            return order
        per_rank = math.ceil(len(order) / self.world)
        padded = torch.cat([order, order[:per_rank * self.world - len(order)]])
        return padded[self.rank::self.world]

    def average_gradients(self, module: torch.nn.Module | None) -> None:
        """Average the gradients of modules outside the DDP wrapper (adapters) over the ranks."""
        if self.world == 1 or module is None:
            return
        import torch.distributed as dist

        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's batch-norm statistics on every rank (DDP sends them only at the start of a forward), so
        every rank validates the same model and keeps the same best epoch."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer, 0)

    def reduce_totals(self, totals: dict[str, float], seen: int,
                      device: torch.device | None = None) -> tuple[dict[str, float], int]:
        """Loss sums and example counts over all ranks (on `device`: nccl moves only CUDA tensors)."""
        if self.world == 1:
            return totals, seen
        import torch.distributed as dist

        names = sorted(totals)
        values = torch.tensor([totals[n] for n in names] + [float(seen)], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        return dict(zip(names, values[:-1].tolist())), int(values[-1].item())


def backend() -> str:
    """nccl where the ranks train on GPUs, gloo on CPUs (EDGEDISTILL_DIST_BACKEND overrides: the process group
    starts before a rank has read the pipeline, so a CPU run on GPU machines sets gloo there)."""
    chosen = os.environ.get("EDGEDISTILL_DIST_BACKEND")
    if chosen:
        return chosen
    return "nccl" if torch.cuda.is_available() else "gloo"


SINGLE = DataParallel()
