"""Process-level settings of a run: seeds, torch's intra-op threads, the progress display."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dissectkit.base.context import available_cpus


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_threads(local_ranks: int, num_workers: int | str, cpus: int | None = None, device: str = "cpu") -> int:
    """Intra-op threads for one process: the available CPUs shared by the run's processes on this
    machine, less one CPU per DataLoader worker of this process; at least 1. With ``num_workers:
    auto`` the compute threads come first: one on CUDA (the device computes), else half the CPUs."""
    cpus = available_cpus() if cpus is None else cpus
    per_process = max(1, cpus // max(1, local_ranks))
    if num_workers == "auto":
        return 1 if _is_cuda(device) else max(1, per_process // 2)
    return max(1, per_process - int(num_workers))


def data_workers(num_workers: int | str, threads: int, batches: int, local_ranks: int = 1, cpus: int | None = None) -> int:
    """DataLoader workers of one process: ``num_workers`` as given, or for ``auto`` one per CPU of the
    process beside its compute threads, the main thread's CPU counted as free (it idles while it
    waits for a batch): ``CPUs - threads + 1``; at most one fewer than the ``batches`` to read (the
    first batch is read before any forward pass can start). 0 reads in the main process."""
    if num_workers != "auto":
        return int(num_workers)
    cpus = available_cpus() if cpus is None else cpus
    per_process = max(1, cpus // max(1, local_ranks))
    spare = per_process - threads + 1 if per_process > 1 else 0  # one CPU: reading in turn with the forward passes
    return max(0, min(spare, batches - 1))


def _is_cuda(device: str) -> bool:
    return str(device).split(":")[0] == "cuda"


@contextmanager
def intra_op_threads(n: int) -> Iterator[int]:
    """Set torch's intra-op threads for the run and restore the previous value afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def progress_bar(console: Any):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )
