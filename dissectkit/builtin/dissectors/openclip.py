"""``open-clip``: any open_clip model (OpenAI CLIP, OpenCLIP, BiomedCLIP through ``hf-hub:``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import model_validator

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import ComponentError, WeightsError, did_you_mean
from dissectkit.base.params import Params
from dissectkit.base.weights import file_fingerprint, load_state_dict_strict
from dissectkit.imaging.raw import to_pil
from dissectkit.nn.dissector_base import TorchDissectorBase, digest, hf_offline, hub_fetch_hint

SCHEMAS = ("hf-hub:", "local-dir:")
HF_CONFIG = "open_clip_config.json"
HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class OpenClipParams(Params):
    """``model``: an open_clip model name (``ViT-B-32``, ``ViT-B-16-quickgelu``, ...); ``pretrained``:
    a tag (``laion2b_s34b_b79k``), a local checkpoint file, ``hf-hub:<repo>`` or ``local-dir:<dir>``
    (the last two carry their own config, so ``model`` may be omitted)."""

    model: str | None = None
    pretrained: str | None = None
    prompt_template: str | None = None
    autocast: bool = True
    text_batch_size: int = 256

    @model_validator(mode="after")
    def _need_something(self) -> OpenClipParams:
        if self.model is None and not (self.pretrained or "").startswith(SCHEMAS):
            raise ValueError("give `model` (an open_clip model name) or `pretrained: hf-hub:<repo> | local-dir:<dir>`")
        if self.prompt_template is not None and "{}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{}' where the concept goes, e.g. 'a photo of {}.'")
        return self


def model_identifier(params: OpenClipParams) -> tuple[str, str | None]:
    """(name passed to open_clip, pretrained argument)."""
    for value in (params.pretrained, params.model):
        if value and value.startswith(SCHEMAS):
            return value, None
    if not params.pretrained:
        raise ComponentError(
            f"open-clip model {params.model!r} needs `pretrained` (a tag, a checkpoint file, hf-hub:<repo> or "
            "local-dir:<dir>); a randomly initialised CLIP cannot label neurons."
        )
    return params.model or "", params.pretrained


def check_available(name: str, pretrained: str | None, ctx: BuildContext) -> Path | None:
    """Fail early, naming the missing file and how to fetch it; returns the local weights path when known.

    In offline mode nothing is downloaded: every needed file must already be local or cached."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    def cached(repo: str, filename: str) -> Path | None:
        hit = try_to_load_from_cache(repo, filename)
        return Path(hit) if isinstance(hit, str) else None

    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:") :]).expanduser()
        if not (folder / HF_CONFIG).is_file():
            raise WeightsError(
                f"open-clip local-dir {folder} has no {HF_CONFIG}; it must hold the config and the weights "
                f"({' or '.join(HF_WEIGHTS)}), e.g. a downloaded `hf download <repo>` snapshot."
            )
        weights = [p for ext in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in folder.glob(ext)]
        if not weights:
            raise WeightsError(
                f"open-clip local-dir {folder} has {HF_CONFIG} but no weights file ({' or '.join(HF_WEIGHTS)}); "
                "open_clip would silently build a randomly initialised model."
            )
        return folder
    if name.startswith("hf-hub:"):
        repo = name[len("hf-hub:") :]
        cfg = cached(repo, HF_CONFIG)
        weights = next((p for f in HF_WEIGHTS if (p := cached(repo, f)) is not None), None)
        if ctx.offline and (cfg is None or weights is None):
            missing = HF_CONFIG if cfg is None else " or ".join(HF_WEIGHTS)
            raise WeightsError(
                f"open-clip {name}: {missing} is not in the local Hugging Face cache and offline mode is on. "
                f"Fetch it on a connected machine with: {hub_fetch_hint(repo)}"
            )
        return weights
    clean = name.replace("/", "-")
    if open_clip.get_model_config(clean) is None:
        raise ComponentError(
            f"open-clip has no model {name!r}.{did_you_mean(clean, open_clip.list_models())} "
            "`python -c 'import open_clip; print(open_clip.list_models())'` lists them."
        )
    assert pretrained is not None
    tag_cfg = open_clip.get_pretrained_cfg(clean, pretrained)
    if not tag_cfg:
        if Path(pretrained).expanduser().is_file():
            return Path(pretrained).expanduser()
        tags = open_clip.list_pretrained_tags_by_model(clean)
        raise WeightsError(
            f"open-clip pretrained {pretrained!r} is neither a known tag of {clean} nor an existing file. "
            f"Known tags: {', '.join(tags) or '(none)'}."
        )
    if tag_cfg.get("hf_hub"):
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        alternatives = [filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []
        hit = next((p for f in [*alternatives, filename] if (p := cached(repo, f)) is not None), None)
        if hit is None and ctx.offline:
            raise WeightsError(
                f"open-clip weights {clean}/{pretrained} ({repo}/{filename}) are not in the local Hugging Face "
                f"cache and offline mode is on. Fetch them on a connected machine with: {hub_fetch_hint(repo, filename)}"
            )
        return hit
    url = tag_cfg.get("url", "")
    local = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    if not local.is_file() and ctx.offline:
        raise WeightsError(
            f"open-clip weights {clean}/{pretrained} are not cached at {local} and offline mode is on. "
            f"Download {url} to that path (or pass the file as `pretrained`)."
        )
    return local if local.is_file() else None


def explain_mismatch(name: str, weights_path: Path | None) -> None:
    """After open_clip refused a local checkpoint: raise a ``WeightsError`` listing the missing,
    unexpected and mis-shaped keys against a freshly built model (no-op when they all match)."""
    if weights_path is None or not weights_path.is_file():
        return
    import open_clip
    from open_clip.factory import load_state_dict

    try:
        sd = load_state_dict(str(weights_path))
        fresh = open_clip.create_model(name, pretrained=None, device="cpu")
    except Exception:  # noqa: BLE001 - the original error is reported instead
        return
    load_state_dict_strict(fresh, sd, what=f"open-clip checkpoint {weights_path}")


class OpenClipDissector(TorchDissectorBase):
    """An open_clip model with its own eval transform and tokenizer."""

    def __init__(self, params: OpenClipParams, ctx: BuildContext) -> None:
        import open_clip

        name, pretrained = model_identifier(params)
        weights_path = check_available(name, pretrained, ctx)
        try:
            with hf_offline(ctx.offline):
                model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu")
                tokenizer = open_clip.get_tokenizer(name)
        except (RuntimeError, OSError, ValueError) as exc:
            explain_mismatch(name, weights_path)
            detail = " ".join(str(exc).split())
            raise WeightsError(f"open-clip could not load {name} (pretrained={pretrained!r}): {detail}") from None
        self.name = name
        self.model = model.eval()
        self.transform = transform
        self.tokenizer = tokenizer
        self.template = params.prompt_template
        self.amp = params.autocast
        self.text_batch_size = params.text_batch_size
        self.to(ctx.device)
        self.embed_dim = int(self.encode_texts(["x"]).shape[-1])
        weights_id: Any = pretrained
        if weights_path is not None and weights_path.exists():
            weights_id = file_fingerprint(weights_path, ctx)
        self._fingerprint = digest("open-clip", name, weights_id, str(transform), self.template)

    def preprocess(self, image: Any):
        return self.transform(to_pil(image, "RGB", model="dissector open-clip"))

    def _image_features(self, images):
        return self.model.encode_image(images)

    def _text_features(self, texts: list[str]):
        if self.template:
            texts = [self.template.format(t) for t in texts]
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def fingerprint(self) -> str:
        return self._fingerprint
