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


def default_threads(local_ranks: int, num_workers: int, cpus: int | None = None) -> int:
    """Intra-op threads for one process: the available CPUs shared by the run's processes on this
    machine, less one CPU per DataLoader worker of this process; at least 1."""
    cpus = available_cpus() if cpus is None else cpus
    return max(1, cpus // max(1, local_ranks) - num_workers)


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
