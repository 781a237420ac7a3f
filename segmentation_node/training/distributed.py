"""Data-parallel fine-tuning on PyTorch's own distributed engine.

Started by torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous), every rank
builds the same model from the same seed, computes its share of each step's global batch and
DistributedDataParallel averages the gradients (NCCL on GPUs, gloo on CPU). Started without
torchrun: one process, the same code path with a world of one.

A step's global batch is samples 0..B-1, each drawn from its own generator seeded by (seed,
stage, step, sample): whichever rank computes a sample, it is the same image, augmentation and
prompt mix, so N ranks x B/N samples train on exactly what one process with B samples does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints, reports and registry entries."""
        return self.rank == 0

    def share(self, global_batch: int) -> range:
        """This rank's sample indices of a step's global batch (equal shares)."""
        if global_batch % self.world:
            raise ValueError(f"the batch of {global_batch} does not split over {self.world} ranks; "
                             "use a multiple of the number of processes")
        size = global_batch // self.world
        return range(self.rank * size, (self.rank + 1) * size)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (every rank must call it)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP around a module whose forward returns the step's loss. Frozen parameters
        (requires_grad False) are left out by DDP; unused ones (a head a batch does not reach)
        must not hang the gradient reduction."""
        if not self.distributed:
            return module
        return nn.parallel.DistributedDataParallel(module, find_unused_parameters=True, broadcast_buffers=False)

    @property
    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.world}] " if self.distributed else ""


def sample_rng(seed: int, stage: int, step: int, sample: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step, sample])


def dropout_seed(seed: int, stage: int, step: int, rank: int) -> int:
    """The torch seed of one rank's step (a stage whose batch draws its dropout at once)."""
    return int(np.random.default_rng([seed, stage, step, rank, 1]).integers(2**62))


def start(device: torch.device) -> Workers:
    """The process group of a torchrun job (NCCL on CUDA, gloo otherwise), or one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Workers()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        # torchrun's store, with keys of this attempt only: after a restart (--max-restarts) the
        # store can still hold the dead workers' addresses, and a rank that reads one first
        # fails to connect (pytorch/pytorch#167288; measured here: 2 failed restarts of 3).
        store, rank, world = next(torch.distributed.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        torch.distributed.init_process_group(
            backend=backend, store=torch.distributed.PrefixStore(f"workcell_finetune/attempt_{attempt}", store),
            rank=rank, world_size=world)
    return Workers(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                   int(os.environ.get("LOCAL_RANK", "0")))


def stop(workers: Workers) -> None:
    if workers.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
