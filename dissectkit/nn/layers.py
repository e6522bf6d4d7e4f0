"""Layer discovery, selection by name or glob, and pooling of layer outputs into neuron activations."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dissectkit.base.errors import LayerError, did_you_mean
from dissectkit.base.types import LayerInfo

if TYPE_CHECKING:
    import torch
    from torch import nn

GLOB_CHARS = set("*?[")


def select_layers(patterns: Sequence[str], infos: Iterable[LayerInfo], target: str = "target") -> list[LayerInfo]:
    """Resolve exact names and glob patterns (``"_blocks.*"``, ``"layer[1-4]"``) in the target's order.

    Every pattern must match at least one layer; the error names the pattern and the closest layers.
    """
    infos = list(infos)
    names = [i.name for i in infos]
    chosen: set[str] = set()
    for pattern in patterns:
        if GLOB_CHARS & set(pattern):
            hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                prefix = pattern.split("*")[0].split("?")[0].split("[")[0]
                raise LayerError(
                    f"Layer pattern {pattern!r} matches no layer of {target}.{did_you_mean(prefix, names)} "
                    f"Run `dissectkit layers <recipe>` to list the layers."
                )
            chosen.update(hits)
        elif pattern in names:
            chosen.add(pattern)
        else:
            raise LayerError(
                f"{target} has no layer {pattern!r}.{did_you_mean(pattern, names)} "
                f"Run `dissectkit layers <recipe>` to list the layers."
            )
    return [i for i in infos if i.name in chosen]


def infer_layer_infos(module: nn.Module, example: torch.Tensor, names: Sequence[str] | None = None) -> list[LayerInfo]:
    """Run one forward pass on ``example`` (batch of 1) and record every named submodule's output shape.

    Layers whose output is not a tensor of rank 2-4 are left out.
    """
    import torch

    from dissectkit.nn.capture import Capture

    wanted = set(names) if names is not None else None
    subs = {n: sub for n, sub in module.named_modules() if n and (wanted is None or n in wanted)}

    def shape(_name: str, out: Any) -> tuple[int, ...] | None:
        return tuple(out.shape[1:]) if isinstance(out, torch.Tensor) and 2 <= out.dim() <= 4 else None

    with Capture(subs, shape) as cap, torch.no_grad():
        module(example)
    shapes = cap.outputs
    order = [n for n, _ in module.named_modules() if n in shapes]
    return [info_from_shape(n, shapes[n]) for n in order]


def info_from_shape(name: str, shape: tuple[int, ...]) -> LayerInfo:
    """``(C, H, W)`` -> conv with C neurons; ``(T, C)`` -> tokens with C neurons; ``(C,)`` -> linear."""
    if len(shape) == 3:
        return LayerInfo(name, shape[0], "conv", shape)
    if len(shape) == 2:
        return LayerInfo(name, shape[1], "tokens", shape)
    return LayerInfo(name, shape[0], "linear", shape)


def pool_output(out: torch.Tensor, pool: str = "mean", token_pool: str = "cls") -> torch.Tensor:
    """Pool one layer output to ``[B, K]``.

    Spatial ``[B, C, H, W]``: mean or max over H, W. Tokens ``[B, T, C]``: the CLS token (index 0)
    or the mean over patch tokens (1..T-1). ``[B, C]``: unchanged.
    """
    if out.dim() == 4:
        return out.amax(dim=(2, 3)) if pool == "max" else out.mean(dim=(2, 3))
    if out.dim() == 3:
        if token_pool == "cls":
            return out[:, 0, :]
        return out[:, 1:, :].mean(dim=1) if out.shape[1] > 1 else out[:, 0, :]
    if out.dim() == 2:
        return out
    raise LayerError(f"Cannot pool a layer output of shape {tuple(out.shape)}; expected 2, 3 or 4 dimensions.")


def spatial_output(out: torch.Tensor) -> torch.Tensor:
    """A layer output as spatial maps ``[B, K, h, w]`` (tokens are reshaped to a square grid)."""
    if out.dim() == 4:
        return out
    if out.dim() == 3:
        tokens = out[:, 1:, :] if _is_square(out.shape[1] - 1) else out
        side = int(round(tokens.shape[1] ** 0.5))
        return tokens.transpose(1, 2).reshape(out.shape[0], out.shape[2], side, side)
    if out.dim() == 2:
        return out[:, :, None, None]
    raise LayerError(f"Cannot make spatial maps from a layer output of shape {tuple(out.shape)}.")


def _is_square(n: int) -> bool:
    return n > 0 and int(round(n**0.5)) ** 2 == n
