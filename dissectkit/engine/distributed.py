"""The processes of a run: one by default, or the ranks ``torchrun`` starts (gloo process group;
docs/scaling.md, "Several processes")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

TIMEOUT = timedelta(hours=2)  # a rank may wait this long at a barrier for the slowest one


@dataclass
class World:
    """This process's place among the run's processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, i: int) -> bool:
        """Whether work item ``i`` (a chunk, a layer) is this rank's: ``i % size == rank``."""
        return i % self.size == self.rank

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Leave the process group if this run created it."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def world_from_env() -> World:
    """The world torchrun describes in the environment, joining its process group (gloo) when
    there is more than one process; a plain ``World()`` otherwise."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=_env_int("LOCAL_RANK", 0),
        local_size=max(1, _env_int("LOCAL_WORLD_SIZE", 1)),
        owns_group=owns,
    )
