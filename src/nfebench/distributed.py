"""Multi-process sampling on one node: `torchrun --nproc_per_node=N -m nfebench ...`.

Each rank samples a contiguous block of whole batches of the per-sample seeds (with B batches of batch_size, rank r
takes batches [ceil(r*B/N), ceil((r+1)*B/N))); rank 0 gathers the uint8 samples in rank order. Sample i's noise depends on
(seed, i) alone and every sample runs in the same batch as in a single process, so the gathered tensor is the
single-process result for the same seed, bit for bit on the same hardware (unless an out-of-memory backoff changed
one rank's batch size). A rank may get no batch when there are fewer batches than ranks. Only rank 0 writes files and leaderboard rows and computes metrics.
Backend: nccl on CUDA (rank r uses cuda:LOCAL_RANK), gloo on CPU. Without torchrun's WORLD_SIZE>1, everything
here is a no-op and rank 0 is the only rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


class DistributedError(ValueError):
    """A torchrun setup that cannot work (e.g. an explicit device index under torchrun)."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    initialized: bool = False  # True when this module started the process group (and so ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- seeds ------------------------------------------------------------------------------------------------
    def bounds(self, n: int, align: int = 1) -> tuple[int, int]:
        """[lo, hi) of this rank's items: whole blocks of `align` items (the batch size), contiguous, in rank order."""
        blocks = -(-n // align)
        lo, hi = -(-self.rank * blocks // self.world_size), -(-(self.rank + 1) * blocks // self.world_size)  # ceil
        return min(lo * align, n), min(hi * align, n)

    def shard(self, items: list, align: int = 1) -> list:
        """This rank's contiguous block of `items` (all of them when not distributed); may be empty."""
        lo, hi = self.bounds(len(items), align)
        return items[lo:hi]

    # -- collectives ----------------------------------------------------------------------------------------------
    def _comm_device(self) -> torch.device:
        return torch.device(self.device if self.device.startswith("cuda") else "cpu")

    def gather_samples(self, local: torch.Tensor, n_total: int, align: int = 1) -> torch.Tensor | None:
        """The uint8 samples of all ranks, in rank (= seed index) order, on rank 0; None on the other ranks."""
        if self.world_size == 1:
            return local
        import torch.distributed as dist

        sizes = [hi - lo for lo, hi in (DistContext(r, self.world_size).bounds(n_total, align)
                                        for r in range(self.world_size))]
        if local.shape[0] != sizes[self.rank]:
            raise RuntimeError(f"rank {self.rank} produced {local.shape[0]} samples, expected {sizes[self.rank]}")
        dev = self._comm_device()
        pad = torch.zeros((max(sizes), *local.shape[1:]), dtype=torch.uint8, device=dev)
        pad[: local.shape[0]] = local.to(dev)
        bufs = [torch.empty_like(pad) for _ in range(self.world_size)]
        dist.all_gather(bufs, pad)
        if not self.is_main:
            return None
        return torch.cat([b[:s].cpu() for b, s in zip(bufs, sizes)])

    def reduce(self, values: list[float], op: str) -> list[float]:
        """Elementwise max or min of `values` over ranks (every rank gets the result)."""
        if self.world_size == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op={"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
        return t.tolist()

    def broadcast_error(self, err: BaseException | None) -> BaseException | None:
        """Rank 0's error (or None) on every rank, so all ranks stop together instead of waiting on each other."""
        if self.world_size == 1:
            return err
        import torch.distributed as dist

        box = [None if err is None else (type(err), str(err))] if self.is_main else [None]
        dist.broadcast_object_list(box, src=0, device=self._comm_device() if self.device.startswith("cuda") else None)
        if self.is_main or box[0] is None:
            return err
        cls, msg = box[0]
        try:
            return cls(msg)
        except Exception:
            return DistributedError(msg)

    def finish(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.initialized = False


def init_from_env(device: str) -> DistContext:
    """Start torch.distributed from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT).

    `device` is the resolved device (cpu | cuda | cuda:N); under torchrun each rank gets cuda:LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=device)
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if ":" in device:
            raise DistributedError(f"device={device!r} under torchrun: use device=auto or device=cuda (rank r "
                                   f"uses cuda:LOCAL_RANK)")
        if local >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s); "
                                   f"use --nproc_per_node <= {torch.cuda.device_count()}")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    started = False
    if not dist.is_initialized():
        kwargs = {"device_id": torch.device(device)} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
        started = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, device=device,
                       initialized=started)
