"""Helpers shared by the dissectors (built-in and the first-party plugins).

Only numpy, pydantic and dissectkit core at module level; torch/transformers are imported lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dissectkit.base.context import BuildContext
from dissectkit.base.contract import Dissector
from dissectkit.base.errors import WeightsError

if TYPE_CHECKING:
    import torch


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, computed in float32."""
    import torch

    return torch.nn.functional.normalize(x.float(), dim=-1)


def digest(*parts: Any) -> str:
    """A short stable sha256 of JSON-serialisable parts (for fingerprints)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def hf_offline(offline: bool) -> Iterator[None]:
    """Force huggingface_hub's offline mode for the duration (no HTTP request can be made)."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def hub_fetch_hint(repo: str, file: str | None = None) -> str:
    """The command that fetches a hub repo (or one file of it): the weights module's wording."""
    from dissectkit.base.weights import HubRef, fetch_command

    return fetch_command(HubRef(hf=repo, file=file))


def load_tokenizer(name_or_dir: str, ctx: BuildContext, what: str = "tokenizer") -> Any:
    """``AutoTokenizer`` from a local directory or a hub id; offline -> local cache only."""
    from transformers import AutoTokenizer

    local = Path(name_or_dir).expanduser()
    try:
        with hf_offline(ctx.offline):
            if local.is_dir():
                return AutoTokenizer.from_pretrained(str(local), local_files_only=True)
            return AutoTokenizer.from_pretrained(name_or_dir, local_files_only=ctx.offline)
    except (OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        where = (
            f"the directory {local} does not hold usable tokenizer files (vocab.txt / tokenizer.json): {detail}"
            if local.is_dir()
            else f"{name_or_dir!r} is neither a local directory nor in the Hugging Face cache"
            + (" and offline mode is on" if ctx.offline else " and it could not be downloaded")
        )
        raise WeightsError(
            f"Could not load the {what}: {where}. Fetch it on a connected machine with "
            f"`{hub_fetch_hint(name_or_dir)}` (or point the `tokenizer` parameter at a local copy)."
        ) from None


def bert_config_from_state_dict(sd: dict[str, Any], prefix: str = "") -> Any:
    """A ``BertConfig`` whose shapes match the BertModel weights under ``prefix`` (hidden, layers,
    heads = hidden/64, intermediate, vocab, max positions, token types)."""
    from transformers import BertConfig

    def shape(key: str) -> tuple[int, ...]:
        full = prefix + key
        if full not in sd:
            raise WeightsError(f"BERT weights lack {full!r}; cannot derive the text encoder's configuration.")
        return tuple(sd[full].shape)

    vocab, hidden = shape("embeddings.word_embeddings.weight")
    layer_ids = {
        int(k[len(prefix) :].split(".")[2]) for k in sd if k.startswith(prefix + "encoder.layer.") and k.count(".") > 2
    }
    if not layer_ids:
        raise WeightsError(f"BERT weights under {prefix!r} have no encoder layers.")
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=max(layer_ids) + 1,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=shape("encoder.layer.0.intermediate.dense.weight")[0],
        max_position_embeddings=shape("embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape("embeddings.token_type_embeddings.weight")[0],
    )


def sub_state_dict(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def batched_rows(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class TorchDissectorBase(Dissector):
    """Device handling shared by the dissectors: ``self.model`` (an ``nn.Module`` in eval mode)
    lives on ``self.device``; inputs are moved there; outputs are float32, L2-normalised.

    Subclasses set ``model``, ``embed_dim`` and implement ``_image_features`` / ``_text_features``.
    """

    model: Any
    embed_dim: int
    device: str = "cpu"
    amp: bool = False
    text_batch_size: int = 256

    def to(self, device: Any) -> TorchDissectorBase:
        self.model.to(device)
        self.device = str(device)
        return self

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.amp and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` preprocessed images -> ``[B, D]`` unit vectors."""
        import torch

        with torch.inference_mode(), self._autocast():
            feats = self._image_features(images.to(self.device, non_blocking=True))
        return l2_normalize(feats)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Strings -> ``[n, D]`` unit vectors (encoded in chunks of ``text_batch_size``)."""
        import torch

        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim)
        with torch.inference_mode(), self._autocast():
            batches = batched_rows(len(texts), self.text_batch_size)
            out = [l2_normalize(self._text_features(texts[rows])) for rows in batches]
        return torch.cat(out)

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _text_features(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
