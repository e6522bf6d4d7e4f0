"""Built-in targets (kind ``target``): timm, torchvision, any ``nn.Module`` factory, and MAMMI's
DenseNet-121 for NIH ChestX-ray14."""

from __future__ import annotations

import hashlib
import importlib
import itertools
import os
from contextlib import contextmanager
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator

from dissectkit.base.context import BuildContext
from dissectkit.base.contract import Target
from dissectkit.base.errors import ComponentError, DissectkitError, WeightsError, did_you_mean
from dissectkit.base.params import Params, PythonCallable
from dissectkit.base.types import LayerInfo
from dissectkit.base.weights import WeightsRef
from dissectkit.builtin.probes.nih import NIH_FINDINGS, finding_text
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register
from dissectkit.imaging.raw import to_pil
from dissectkit.nn.dissector_base import hf_offline

# A weights ref, or a plain path string as a shorthand for ``{path: ...}``.
Ref = Annotated[WeightsRef, BeforeValidator(lambda v: {"path": str(v)} if isinstance(v, str | os.PathLike) else v)]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TimmParams(Params):
    """``pretrained``: true (timm's default tag) or a tag such as ``a1_in1k``; ``checkpoint``: a weights
    ref loaded strictly; ``input_size``: [C, H, W] overriding the model's data config."""

    model: str
    pretrained: bool | str = False
    checkpoint: Ref | None = None
    num_classes: int | None = None
    kwargs: dict[str, Any] = {}
    input_size: tuple[int, int, int] | None = None
    trust_checkpoint: bool = False


class TorchvisionParams(Params):
    """``weights``: a weights enum name (``ResNet18_Weights.IMAGENET1K_V1``, ``DEFAULT``) or none;
    ``weights_file``: a state-dict file instead."""

    model: str
    weights: str | None = None
    weights_file: Ref | None = None
    num_classes: int | None = None
    kwargs: dict[str, Any] = {}
    input_size: int = 224
    trust_checkpoint: bool = False


class ModuleParams(Params):
    """``factory``: ``package.module:callable`` returning an ``nn.Module``; preprocessing: resize the
    shorter side to ``resize`` (default input_size / 0.875), centre crop ``input_size``, normalise."""

    factory: PythonCallable
    kwargs: dict[str, Any] = {}
    weights: Ref | None = None
    trust_checkpoint: bool = False
    input_size: int = 224
    resize: int | None = None
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class DenseNetCxrParams(Params):
    """``weights``: a DenseNet-121 14-finding checkpoint (torchvision keys; ``module.``/``densenet121.``
    prefixes, ``classifier.0.`` and legacy ``norm.1`` names are normalised). None = random weights."""

    weights: Ref | None = None
    trust_checkpoint: bool = False


def _resize_crop_normalise(size: int, resize: int, mean, std):
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


class TorchTarget(Target):
    """A wrapped ``nn.Module`` in eval mode on the context's device with its eval transform."""

    def __init__(self, module, transform, input_shape: tuple[int, int, int], identity: str, ctx: BuildContext,
                 channels: int = 3) -> None:
        self.label = f"target {identity.split(':', 1)[0]}"  # names the model in the almost-constant warning
        self.module = module.eval().to(ctx.device)
        self.transform = transform
        self.input_shape = input_shape
        self.channels = channels
        self.device = ctx.device
        self._identity = identity
        self._layers: list[LayerInfo] | None = None

    def preprocess(self, image: Any):
        """Raw probe image -> ``[C, H, W]`` float tensor (the model's eval transform)."""
        return self.transform(to_pil(image, "RGB" if self.channels == 3 else "L", model=self.label))

    def preprocess_mask(self, mask: Any):
        """A boolean ``HxW`` probe mask put through the same resize / centre crop as ``preprocess``
        (nearest neighbour), so it lines up with the model input: a bool tensor ``[h, w]``."""
        import torch
        from PIL import Image

        pil = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
        for step in _geometric_steps(self.transform):
            pil = step(pil)
        return torch.from_numpy(np.asarray(pil) > 127)

    def layers(self) -> list[LayerInfo]:
        """Every named submodule with a rank-2..4 tensor output, from one forward pass on zeros."""
        if self._layers is None:
            import torch

            from dissectkit.nn.layers import infer_layer_infos

            tensors = itertools.chain(self.module.parameters(), self.module.buffers())
            example = torch.zeros((1, *self.input_shape), device=next((t.device for t in tensors), "cpu"))
            self._layers = infer_layer_infos(self.module, example)
        return self._layers

    def fingerprint(self) -> str:
        return hashlib.sha256(self._identity.encode()).hexdigest()

    def to(self, device: str) -> TorchTarget:
        self.module.to(device)
        self.device = str(device)
        return self


def _geometric_steps(transform) -> list:
    """The resize / crop steps of a torchvision ``Compose`` (before ToTensor), with nearest sampling."""
    from torchvision import transforms as T

    steps = []
    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, T.Resize):
            steps.append(T.Resize(t.size, interpolation=T.InterpolationMode.NEAREST, max_size=t.max_size))
        elif isinstance(t, T.CenterCrop | T.Pad):
            steps.append(t)
        elif type(t).__name__ in ("ResizeKeepRatio", "CenterCropOrPad"):
            steps.append(t)  # timm's own geometric steps; applied as they are
        elif isinstance(t, T.ToTensor) or "ToTensor" in type(t).__name__ or isinstance(t, T.Normalize):
            break
    return steps


@contextmanager
def seeded(ctx: BuildContext):
    """Random initialisation under ``ctx.seed`` without touching the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        yield


def _load_into(module, ref, ctx: BuildContext, trust: bool, what: str, rename=None) -> str:
    """Resolve a weights ref, load it strictly (common containers unwrapped) and return its content hash."""
    from dissectkit.base import weights

    path = weights.resolve(ref, ctx, what=what)
    obj = weights.load_checkpoint(path, trust=trust, what=what)  # it names the path itself
    sd = weights.extract_state_dict(obj, what=f"{what} {path}")
    if rename is not None:
        sd = rename(sd)
    weights.load_state_dict_strict(module, sd, what=f"{what} {path}")
    return weights.file_fingerprint(path, ctx)


def _timm_request(params: TimmParams) -> tuple[str, bool, dict[str, Any]]:
    """(timm model name with its tag, pretrained, create_model kwargs), checked against timm's list."""
    import timm

    name = params.model
    pretrained = bool(params.pretrained)
    if isinstance(params.pretrained, str) and params.pretrained.lower() not in ("true", "false"):
        name = f"{params.model}.{params.pretrained}"
    elif isinstance(params.pretrained, str):
        pretrained = params.pretrained.lower() == "true"
    if pretrained and params.checkpoint is not None:
        raise ComponentError("timm target: give either `pretrained` or `checkpoint`, not both.")
    kwargs = dict(params.kwargs)
    if params.num_classes is not None:
        kwargs["num_classes"] = params.num_classes
    base = name.split(".", 1)[0]
    if not timm.is_model(base):
        raise ComponentError(f"timm has no model {base!r}.{did_you_mean(base, timm.list_models())}")
    return name, pretrained, kwargs


def _timm_data_config(model, params: TimmParams, kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm's eval data config of ``model`` with the recipe's ``input_size`` (or a ViT's fixed size)."""
    from timm.data import resolve_data_config

    overrides = {"input_size": tuple(params.input_size)} if params.input_size else {}
    fixed = getattr(getattr(model, "patch_embed", None), "img_size", None)  # ViTs built for another size
    if not overrides and fixed:
        overrides = {"input_size": (int(kwargs.get("in_chans", 3)), *(int(v) for v in fixed))}
    return resolve_data_config(overrides, model=model)


def _make_timm(params: TimmParams, ctx: BuildContext) -> TorchTarget:
    import timm
    from timm.data import create_transform

    name, pretrained, kwargs = _timm_request(params)
    try:
        with seeded(ctx), hf_offline(ctx.offline):
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub / network failures come in many classes
        if not pretrained:
            raise ComponentError(f"timm could not build {name!r}: {exc}") from None
        raise WeightsError(
            f"Pretrained weights for timm model {name!r} are not available locally "
            f"({'offline mode is on' if ctx.offline else 'download failed'}: {exc.__class__.__name__}). "
            f"Fetch them on a connected machine with {_timm_fetch(name)}, or set `checkpoint` to a local weights file."
        ) from None
    identity = f"timm:{name}:{sorted(kwargs.items())}"
    if params.checkpoint is not None:
        identity += ":" + _load_into(model, params.checkpoint, ctx, params.trust_checkpoint, f"timm {name} checkpoint")
    elif pretrained:
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        identity += f":pretrained:{cfg.get('hf_hub_id') or ''}:{cfg.get('tag') or ''}:{cfg.get('url') or ''}"
    else:
        identity += ":random-init"
    data_cfg = _timm_data_config(model, params, kwargs)
    transform = create_transform(**data_cfg, is_training=False)
    return TorchTarget(model, transform, tuple(data_cfg["input_size"]), identity, ctx)


def _timm_pretrained_cfg(name: str) -> Any:
    try:
        from timm.models import get_pretrained_cfg

        return get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - only used for hints and cache look-ups
        return None


def _timm_fetch(name: str) -> str:
    hub = getattr(_timm_pretrained_cfg(name), "hf_hub_id", None)
    return f"`hf download {hub}`" if hub else "timm.create_model(..., pretrained=True) once online"


def _timm_weights_cached(name: str) -> bool:
    """Whether timm would find the pretrained weights of ``name`` without a download (its hub file,
    or its URL's file in the torch hub cache)."""
    import torch

    cfg = _timm_pretrained_cfg(name)
    hub, url = getattr(cfg, "hf_hub_id", None), getattr(cfg, "url", None)
    if hub:
        from huggingface_hub import try_to_load_from_cache

        if any(isinstance(try_to_load_from_cache(hub, f), str) for f in ("model.safetensors", "pytorch_model.bin")):
            return True
    return bool(url) and os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", url.rsplit("/", 1)[-1]))


def _timm_missing_weights(params: TimmParams, ctx: BuildContext) -> list[str]:
    name, pretrained, _ = _timm_request(params)
    if not pretrained or _timm_weights_cached(name):
        return []
    if ctx.offline:
        return [f"pretrained weights for timm model {name!r} are not available locally and offline mode is on; "
                f"fetch them on a connected machine with {_timm_fetch(name)}."]
    return [f"pretrained weights for timm model {name!r} are not local yet; `dissectkit run` downloads them."]


def _torchvision_request(params: TorchvisionParams) -> tuple[Any, dict[str, Any]]:
    """(the weights enum member or None, get_model kwargs), checked against torchvision's lists."""
    from torchvision.models import get_model_weights, list_models

    if params.model not in list_models():
        raise ComponentError(f"torchvision has no model {params.model!r}.{did_you_mean(params.model, list_models())}")
    if params.weights and params.weights_file:
        raise ComponentError("torchvision target: give either `weights` (an enum name) or `weights_file`, not both.")
    kwargs = dict(params.kwargs)
    if params.num_classes is not None:
        kwargs["num_classes"] = params.num_classes
    weights = None
    if params.weights:
        enum = get_model_weights(params.model)
        member = params.weights.split(".")[-1]
        if member not in enum.__members__:
            raise ComponentError(
                f"{enum.__name__} has no member {member!r}; choose one of {', '.join(enum.__members__)}."
            )
        weights = enum[member]
        classes = len(weights.meta["categories"])
        if kwargs.get("num_classes", classes) != classes:
            raise ComponentError(
                f"torchvision {params.model}: weights {weights} have {classes} classes, not num_classes "
                f"{kwargs['num_classes']}. Drop num_classes, or give your fine-tuned head as `weights_file`."
            )
    return weights, kwargs


def _torchvision_missing_weights(params: TorchvisionParams, ctx: BuildContext) -> list[str]:
    """The weights enum's file when it is not in the torch hub cache."""
    import torch

    weights, _ = _torchvision_request(params)
    if weights is None:
        return []
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", weights.url.rsplit("/", 1)[-1])
    if os.path.exists(cached):
        return []
    if ctx.offline:
        return [f"torchvision weights {weights} are not in the torch hub cache ({cached}) and offline mode "
                f"is on. Download {weights.url} to that path, or use `weights_file`."]
    return [f"torchvision weights {weights} are not local yet; `dissectkit run` downloads them to {cached}."]


def _make_torchvision(params: TorchvisionParams, ctx: BuildContext) -> TorchTarget:
    import torchvision
    from torchvision.models import get_model

    weights, kwargs = _torchvision_request(params)
    missing = _torchvision_missing_weights(params, ctx)
    if missing and ctx.offline:
        raise WeightsError(missing[0])
    try:
        with seeded(ctx):
            model = get_model(params.model, weights=weights, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"torchvision could not load {params.model} with weights {weights}: {exc}") from None
    identity = f"torchvision:{torchvision.__version__.split('+')[0]}:{params.model}:{sorted(kwargs.items())}"
    if weights is not None:
        transform = weights.transforms()
        identity += f":{weights}:{weights.url}"
        size = int(getattr(transform, "crop_size", [params.input_size])[0])
    else:
        size = params.input_size
        transform = _resize_crop_normalise(size, int(round(size / 0.875)), IMAGENET_MEAN, IMAGENET_STD)
        if params.weights_file is not None:
            identity += ":" + _load_into(model, params.weights_file, ctx, params.trust_checkpoint,
                                         f"torchvision {params.model} weights_file")
        else:
            identity += ":random-init"
    return TorchTarget(model, transform, (3, size, size), identity, ctx)


def import_factory(spec: str):
    """``package.module:callable`` -> the callable, with errors that say what is wrong."""
    if ":" not in spec:
        raise ComponentError(f"factory {spec!r} must look like 'package.module:callable'.")
    mod_name, attr = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ComponentError(f"Cannot import module {mod_name!r} for factory {spec!r}: {exc}") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(mod) if not n.startswith("_")]
            raise ComponentError(f"Module {mod_name!r} has no attribute {attr!r}.{did_you_mean(part, names)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ComponentError(f"factory {spec!r} is not callable.")
    return obj


def _build_module(params: ModuleParams):
    """Call the recipe's factory; it must return an ``nn.Module``."""
    from torch import nn

    model = import_factory(params.factory)(**params.kwargs)
    if not isinstance(model, nn.Module):
        raise ComponentError(f"factory {params.factory!r} returned {type(model).__name__}, not a torch nn.Module.")
    return model


def _make_module(params: ModuleParams, ctx: BuildContext) -> TorchTarget:
    with seeded(ctx):
        model = _build_module(params)
    identity = f"module:{params.factory}:{sorted(params.kwargs.items())}:{model.__class__.__qualname__}"
    if params.weights is not None:
        identity += ":" + _load_into(model, params.weights, ctx, params.trust_checkpoint, f"module {params.factory} weights")
    else:
        identity += ":" + _tensor_hash(model)
    size = params.input_size
    if len(params.mean) != params.channels or len(params.std) != params.channels:
        raise ComponentError(f"module target: mean and std need {params.channels} values (channels).")
    transform = _resize_crop_normalise(size, params.resize or int(round(size / 0.875)), params.mean, params.std)
    identity += f":{size}:{params.resize}:{params.mean}:{params.std}"
    return TorchTarget(model, transform, (params.channels, size, size), identity, ctx, channels=params.channels)


def _tensor_hash(model) -> str:
    """Content hash of a module's state dict (for factories that build their own weights)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


CXR_MEAN, CXR_STD = 0.5056, 0.252
CXR_INPUT = (3, 224, 224)


class DenseNetCxrTarget(TorchTarget):
    """torchvision DenseNet-121, 14 outputs in NIH label order; ``features.relu5`` = ReLU(norm5), the
    1024-channel penultimate maps (added as a module so it can be hooked; no new state-dict keys)."""

    def ground_truth(self, layer: str) -> list[str | None] | None:
        if layer == "classifier":
            return [finding_text(f) for f in NIH_FINDINGS]
        return None


def build_densenet121_cxr():
    """The architecture: torchvision densenet121(num_classes=14) with ``features.relu5`` appended."""
    from torch import nn
    from torchvision.models import densenet121

    model = densenet121(weights=None, num_classes=len(NIH_FINDINGS))
    model.features.add_module("relu5", nn.ReLU(inplace=False))
    return model


def normalise_cxr_keys(sd: dict[str, Any]) -> dict[str, Any]:
    """Map common CXR DenseNet checkpoints onto torchvision keys: drop ``densenet121.``, turn
    ``classifier.0.`` (Linear+Sigmoid heads) into ``classifier.`` and legacy ``norm.1`` into ``norm1``."""
    import re

    legacy = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
    out = {}
    for k, v in sd.items():
        k = k[len("densenet121."):] if k.startswith("densenet121.") else k
        k = k.replace("classifier.0.", "classifier.")
        m = legacy.match(k)
        if m:
            k = m.group(1) + m.group(2)
        out[k] = v
    return out


def _make_densenet_cxr(params: DenseNetCxrParams, ctx: BuildContext) -> DenseNetCxrTarget:
    with seeded(ctx):
        model = build_densenet121_cxr()
    identity = "densenet121-cxr:v1"
    if params.weights is not None:
        own = model.state_dict()

        def rename(sd):
            # checkpoints saved before PyTorch 0.4 have no BatchNorm ``num_batches_tracked`` (unused in eval)
            sd = normalise_cxr_keys(sd)
            for k, v in own.items():
                if k.endswith("num_batches_tracked") and k not in sd:
                    sd[k] = v.clone()
            return sd

        identity += ":" + _load_into(model, params.weights, ctx, params.trust_checkpoint, "densenet121-cxr weights",
                                     rename=rename)
    else:
        identity += ":random-init:" + _tensor_hash(model)
    transform = _resize_crop_normalise(224, 256, (CXR_MEAN,) * 3, (CXR_STD,) * 3)
    return DenseNetCxrTarget(model, transform, CXR_INPUT, identity, ctx)


def architecture_layers(build, input_shape, what: str) -> list[LayerInfo]:
    """The layers of an architecture, never reading weights: ``build()`` runs on the meta device (no
    memory, no initialisation) and one zero image goes through it; an op without a meta kernel makes it
    run again on the CPU with random weights. ``input_shape(model)`` gives ``(C, H, W)``."""
    import torch

    from dissectkit.nn.layers import infer_layer_infos

    failure: Exception | None = None
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = build().eval()
                return infer_layer_infos(model, torch.zeros((1, *input_shape(model))))
        except DissectkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - any op of any architecture may lack a meta kernel
            failure = exc
    raise ComponentError(f"{what}: cannot be built and run on a zero image, so its layers cannot be listed: {failure}")


def _timm_layers(params: TimmParams, ctx: BuildContext) -> list[LayerInfo]:
    import timm

    name, _, kwargs = _timm_request(params)
    return architecture_layers(lambda: timm.create_model(name, pretrained=False, **kwargs),
                               lambda m: tuple(_timm_data_config(m, params, kwargs)["input_size"]), f"timm {name}")


def _torchvision_layers(params: TorchvisionParams, ctx: BuildContext) -> list[LayerInfo]:
    from torchvision.models import get_model

    weights, kwargs = _torchvision_request(params)
    size = params.input_size
    if weights is not None:  # the architecture the weights fit and their crop, without the weights
        kwargs["num_classes"] = len(weights.meta["categories"])
        size = int(getattr(weights.transforms(), "crop_size", [size])[0])
        # the size-dependent builders torchvision fits to the weights (``_ovewrite_named_param``)
        if params.model.startswith("vit_"):
            kwargs.setdefault("image_size", weights.meta["min_size"][0])
        elif params.model.startswith("maxvit_"):
            kwargs.setdefault("input_size", tuple(weights.meta["min_size"]))
    return architecture_layers(lambda: get_model(params.model, weights=None, **kwargs), lambda m: (3, size, size),
                               f"torchvision {params.model}")


def _module_layers(params: ModuleParams, ctx: BuildContext) -> list[LayerInfo]:
    size = params.input_size
    return architecture_layers(lambda: _build_module(params), lambda m: (params.channels, size, size),
                               f"module {params.factory}")


@hookimpl
def dissectkit_register_targets(register: Register) -> None:
    register("timm", _make_timm, params=TimmParams,
                 description="Any timm model (pretrained tag or checkpoint file).", licence="per model",
                 layers=_timm_layers, missing_weights=_timm_missing_weights)
    register("torchvision", _make_torchvision, params=TorchvisionParams,
                 description="A torchvision model via get_model (weights enum or file).", licence="per model",
                 layers=_torchvision_layers, missing_weights=_torchvision_missing_weights)
    register("module", _make_module, params=ModuleParams,
                 description="Any nn.Module from 'package.module:factory' plus a state-dict file.", licence=None,
                 layers=_module_layers)
    register("densenet121-cxr", _make_densenet_cxr, params=DenseNetCxrParams,
                 description="DenseNet-121 with 14 NIH ChestX-ray14 outputs (MAMMI's target).", licence=None,
                 layers=lambda params, ctx: architecture_layers(build_densenet121_cxr, lambda m: CXR_INPUT,
                                                                "densenet121-cxr"))
