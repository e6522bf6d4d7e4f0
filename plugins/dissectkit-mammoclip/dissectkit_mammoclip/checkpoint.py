"""Reading Mammo-CLIP checkpoint files (pretrained ``.tar`` and fine-tuned classifier files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from dissectkit.plugin import (
    BuildContext,
    Params,
    WeightsRef,
    as_weights_ref,
    extract_state_dict,
    load_checkpoint,
    resolve_weights,
)


class WeightsParams(Params):
    """Shared by the dissector and the targets. ``conversion``: ``none`` = the probe images are
    Mammo-CLIP PNGs already (its PNG layout); ``mammo-clip`` = make Mammo-CLIP's PNG of each raw
    mammogram first (DICOM layouts; read the probe with ``apply_voi: false``, as the conversion does)."""

    weights: WeightsRef
    trust_checkpoint: bool = False
    image_size: tuple[int, int] = (1520, 912)
    variant: str | None = None
    conversion: Literal["none", "mammo-clip"] = "none"

    @field_validator("weights", mode="before")
    @classmethod
    def _path_string(cls, value: Any) -> Any:
        return {"path": str(value)} if isinstance(value, str | Path) else value

    @field_validator("variant")
    @classmethod
    def _variant(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in ("b2", "b5"):
            raise ValueError("variant must be 'b2' or 'b5' (or omitted: read from the checkpoint)")
        return value.lower() if value else None

    @field_validator("image_size")
    @classmethod
    def _size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 32:
            raise ValueError("image_size is [height, width], each at least 32 pixels")
        return value


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
