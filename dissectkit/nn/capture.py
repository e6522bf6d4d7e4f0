"""One forward-hook helper: capture (a transform of) the outputs of named submodules, for the engine's
pass, the report, layer discovery, the testing kit and synthetic training (docs/plugins.md, "Models")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

OutputFn = Callable[[str, Any], Any]


def first_tensor(out: Any) -> torch.Tensor | None:
    """The output itself when it is a tensor, else the first tensor of a tuple/list output."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    return None


class Capture:
    """Forward hooks on ``modules`` (name -> module); ``outputs[name]`` holds ``fn(name, output)``
    of the latest forward pass (``fn`` returning ``None`` stores nothing). Remove the hooks with
    :meth:`remove` or by using the capture as a context manager."""

    def __init__(self, modules: Mapping[str, nn.Module], fn: OutputFn | None = None) -> None:
        self.fn = fn or (lambda _name, out: out)
        self.outputs: dict[str, Any] = {}
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    @classmethod
    def named(cls, root: nn.Module, names: Iterable[str], fn: OutputFn | None = None) -> Capture:
        """Hook the submodules of ``root`` with these dotted names."""
        return cls({name: root.get_submodule(name) for name in names}, fn)

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, out: Any) -> None:
            value = self.fn(name, out)
            if value is not None:
                self.outputs[name] = value

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.remove()
