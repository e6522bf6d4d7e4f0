"""Torch-free facts of the synthetic world's models: input size, weights files, configs and the
targets' layer table (so ``dissectkit validate`` / ``layers`` list layers without torch or timm)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from dissectkit.base.errors import WeightsError
from dissectkit.base.types import LayerInfo
from dissectkit.nn.layers import info_from_shape

WEIGHTS_DIR = Path(__file__).parent / "weights"
CONFIG_FILE = "synth_world.json"
MODEL_INPUT = (112, 64)  # H x W the models see (area-resized; small so training takes minutes on 2 CPU cores)
TARGET_ARCH = "tinynet_e"
# every hookable layer of TARGET_ARCH at MODEL_INPUT except the classifier (its width is the target's
# class count); written by ``models.write_layer_table`` and checked against the built model by the tests
LAYER_TABLE = WEIGHTS_DIR / f"{TARGET_ARCH}_layers.json"
CLASSIFIER = "classifier"


def read_config(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Any]:
    path = Path(weights_dir) / CONFIG_FILE
    if not path.exists():
        raise WeightsError(
            f"Synthetic-world config {path} is missing. Recreate the weights with `dissectkit synth train --out {weights_dir}`."
        )
    return json.loads(path.read_text())


def packaged_ref(name: str) -> dict[str, str]:
    """The packaged weights file of component ``name`` as a weights ref."""
    return {"path": str(WEIGHTS_DIR / read_config()["files"][name])}


def weights_config(path: Path) -> dict[str, Any]:
    """The json config next to a weights file (falls back to the packaged one)."""
    local = Path(path).parent / CONFIG_FILE
    return read_config(local.parent) if local.exists() else read_config()


def target_classes(name: str, config: dict[str, Any]) -> list[str] | None:
    """The output classes of target ``name`` (None: one malignancy logit)."""
    if name == "synth-effnet-concepts":
        return list(config["concept_classes"])
    if name == "synth-effnet-general":
        return list(config["general_classes"])
    return None


def n_outputs(classes: list[str] | None) -> int:
    return len(classes) if classes else 1


@lru_cache(maxsize=1)
def _backbone_layers() -> tuple[LayerInfo, ...]:
    rows = json.loads(LAYER_TABLE.read_text())["layers"]
    return tuple(info_from_shape(name, tuple(shape)) for name, shape in rows)


def effnet_layers(n_out: int) -> list[LayerInfo]:
    """The layers a synth-effnet target with ``n_out`` outputs hooks, from the packaged table."""
    return [*_backbone_layers(), info_from_shape(CLASSIFIER, (int(n_out),))]


def check_effnet_file(path: Path, n_out: int, what: str) -> bool:
    """Check a synth-effnet weights file without reading its tensors (nor importing torch or timm):
    a safetensors header that parses, with a classifier of ``n_out`` outputs. False for other
    formats (they are checked by loading them)."""
    if Path(path).suffix != ".safetensors":
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(f"{CLASSIFIER}.")}  # noqa: SIM118
    except SafetensorError as exc:
        raise WeightsError(f"{what} {path} is not a readable safetensors file ({exc}); replace it with a good copy.") from None
    features = _backbone_layers()[-1].n_neurons
    expected = {f"{CLASSIFIER}.weight": (n_out, features), f"{CLASSIFIER}.bias": (n_out,)}
    if shapes != expected:
        raise WeightsError(
            f"{what} ({path}) does not match the architecture - {CLASSIFIER}: checkpoint "
            f"{shapes or 'none'} vs model {expected} (is it the file of another synth-effnet target?)"
        )
    return True
