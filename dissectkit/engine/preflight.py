"""Checks a run makes before any heavy work: the device exists, the output and cache directories
are writable and have space, and the Hugging Face Hub is reachable when downloads are allowed
(else the run goes on offline, from the local caches only, instead of retrying for a minute)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dissectkit.base.errors import DissectkitError, WeightsError
from dissectkit.base.weights import HubRef, PathRef, UrlRef, go_offline, hub_endpoint, hub_reachable, resolve

MIN_FREE_MB_ENV = "DISSECTKIT_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 200


class EnvironmentCheckError(DissectkitError):
    """The machine cannot run this: no such device, a directory not writable or full."""


def check_device(device: str, setting: str = "runtime.device") -> None:
    """``cuda``/``cuda:N``/``mps`` must be available; anything else but ``cpu`` is unknown."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise EnvironmentCheckError(
                f"{setting} is '{device}' but no CUDA device is available (torch {torch.__version__}, {build}). "
                f"Set {setting}: auto (CUDA when present, else CPU) or cpu."
            )
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise EnvironmentCheckError(
                f"{setting} is '{device}' but this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})."
            )
        return
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise EnvironmentCheckError(f"{setting} is 'mps' but MPS is not available here. Set {setting}: auto or cpu.")
        return
    raise EnvironmentCheckError(f"{setting} is '{device}', which is not a device; use auto, cpu, cuda, cuda:N or mps.")


def min_free_bytes() -> int:
    raw = os.environ.get(MIN_FREE_MB_ENV, str(DEFAULT_MIN_FREE_MB))
    try:
        return int(float(raw) * 2**20)
    except ValueError:
        raise EnvironmentCheckError(f"{MIN_FREE_MB_ENV}={raw!r} is not a number of megabytes.") from None


def check_directory(path: Path, what: str, fix: str) -> None:
    """``path`` (created if missing) accepts a file and its file system has the minimum free space."""
    path = Path(path).expanduser()
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise EnvironmentCheckError(f"The {what} {path} cannot be created: {blocker} is a file, not a directory. {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".dissectkit-write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "the disk is full"
        raise EnvironmentCheckError(f"The {what} {path} is not writable ({reason}). {fix}") from None
    free = shutil.disk_usage(path).free
    need = min_free_bytes()
    if free < need:
        raise EnvironmentCheckError(
            f"The {what} {path} has only {free / 2**20:.0f} MB free; a run needs at least {need / 2**20:.0f} MB "
            f"({MIN_FREE_MB_ENV} sets it). Free some space. {fix}"
        )


def check_network(ctx: Any) -> str | None:
    """With downloads allowed but the hub unreachable, switch ``ctx`` to offline; returns a note."""
    if ctx.offline:
        return None
    if hub_reachable():
        return None
    go_offline(ctx)
    return (
        f"The Hugging Face Hub ({hub_endpoint()}) is unreachable: running offline, from the local caches only "
        "(set runtime.offline: true to skip this check)."
    )


def preflight(recipe: Any, ctx: Any, out_dir: Path, console: Any = None) -> None:
    """Every check, before components are built or images read."""
    check_device(ctx.device)
    out_dir = Path(out_dir)
    # the directory itself when it exists (a mount point is written inside), else where it will be made
    check_directory(out_dir if out_dir.is_dir() else out_dir.parent, "output directory", "Choose another with --out / output.dir.")
    check_directory(ctx.cache_dir, "cache directory", "Choose another with runtime.cache_dir or DISSECTKIT_CACHE.")
    note = check_network(ctx)
    if note and console is not None:
        console.print(f"[yellow]note:[/] {note}")


def missing_weights(params: Any, ctx: Any) -> list[str]:
    """One message per weights reference in a component's validated ``params`` that cannot be
    resolved now (offline: not in the local cache), each naming the file and the command that
    fetches it. Components may load weights lazily, so ``resolve`` asks this of every built
    component and stops before any work, naming every missing file at once."""
    out = []
    for where, ref in weights_refs(params):
        try:
            resolve(ref, ctx, what=f"`{where}`")
        except WeightsError as exc:
            out.append(str(exc))
    return out


def weights_refs(params: Any, path: str = "params") -> list[tuple[str, PathRef | HubRef | UrlRef]]:
    """Every weights ref in a component's validated params, with its field path."""
    if isinstance(params, PathRef | HubRef | UrlRef):
        return [(path, params)]
    if isinstance(params, BaseModel):
        return [hit for name in type(params).model_fields for hit in weights_refs(getattr(params, name), f"{path}.{name}")]
    if isinstance(params, dict):
        return [hit for k, v in params.items() for hit in weights_refs(v, f"{path}.{k}")]
    if isinstance(params, list | tuple):
        return [hit for i, v in enumerate(params) for hit in weights_refs(v, f"{path}[{i}]")]
    return []
