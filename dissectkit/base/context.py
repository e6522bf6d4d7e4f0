"""The build context handed to every component factory: device, offline mode, trust flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def default_cache_dir() -> Path:
    """Where activations and embeddings are cached (``DISSECTKIT_CACHE`` overrides)."""
    env = os.environ.get("DISSECTKIT_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dissectkit"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and SLURM restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class BuildContext:
    """Runtime facts a factory may need. ``dk.create`` builds a default one from the environment."""

    device: str = "cpu"
    offline: bool = field(
        default_factory=lambda: _env_flag("HF_HUB_OFFLINE") or _env_flag("DISSECTKIT_OFFLINE"))
    seed: int = 0
    strict_data: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
