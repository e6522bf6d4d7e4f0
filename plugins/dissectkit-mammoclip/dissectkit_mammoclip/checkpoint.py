"""Reading Mammo-CLIP checkpoint files (pretrained ``.tar`` and fine-tuned classifier files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from dissectkit.plugin import (
    BuildContext,
    Params,
    Target,
    WeightsRef,
    as_weights_ref,
    extract_state_dict,
    load_checkpoint,
    resolve_weights,
)

from . import model


class ImageParams(Params):
    """The params every Mammo-CLIP model shares (the dissector, the targets, the ImageNet G).
    ``conversion``: ``none`` = the probe images are Mammo-CLIP PNGs already (its PNG layout);
    ``mammo-clip`` = make Mammo-CLIP's PNG of each raw mammogram first (DICOM layouts; read the probe
    with ``apply_voi: false``, as the conversion does)."""

    trust_checkpoint: bool = False
    image_size: tuple[int, int] = model.DEFAULT_IMAGE_SIZE
    conversion: Literal["none", "mammo-clip"] = "none"

    @field_validator("weights", mode="before", check_fields=False)
    @classmethod
    def _path_string(cls, value: Any) -> Any:
        return {"path": str(value)} if isinstance(value, str | Path) else value

    @field_validator("image_size")
    @classmethod
    def _size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 32:
            raise ValueError("image_size is [height, width], each at least 32 pixels")
        return value


class WeightsParams(ImageParams):
    """Shared by the dissector and the targets: a Mammo-CLIP checkpoint file."""

    weights: WeightsRef
    variant: str | None = None

    @field_validator("variant")
    @classmethod
    def _variant(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in ("b2", "b5"):
            raise ValueError("variant must be 'b2' or 'b5' (or omitted: read from the checkpoint)")
        return value.lower() if value else None


class LazyTarget(Target):
    """A Mammo-CLIP EfficientNet target whose ``module`` reads the weights on first access
    (``_load`` sets ``_module``); Mammo-CLIP's preprocessing."""

    params: ImageParams
    image_size: tuple[int, int]
    device: str
    _module: Any

    def _load(self) -> None:
        raise NotImplementedError

    @property
    def module(self):
        if self._module is None:
            self._load()
        return self._module

    def to(self, device: Any) -> Any:
        self.device = str(device)
        if self._module is not None:
            self._module.to(device)
        return self

    def preprocess(self, image: Any):
        return model.preprocess_mammogram(image, self.image_size, self.params.conversion)


def read(params: WeightsParams, ctx: BuildContext, what: str, path: Path | None = None) -> tuple[Path, dict[str, Any], Any]:
    """(local path, state dict, the container's ``config`` or None). Optimizer state is dropped."""
    path = path or resolve_weights(params.weights, ctx, what=what)
    obj = load_checkpoint(path, trust=params.trust_checkpoint, what=f"{what} {path.name}")
    config = obj.get("config") if isinstance(obj, dict) else None
    sd = extract_state_dict(obj, what=f"{what} {path}")
    del obj
    return path, sd, config


def file_name(params: WeightsParams) -> str:
    ref = as_weights_ref(params.weights)
    return str(getattr(ref, "path", None) or getattr(ref, "file", None) or getattr(ref, "url", ""))
