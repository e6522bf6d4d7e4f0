"""Weights references (``{path}`` | ``{hf, file, revision}`` | ``{url, sha256}``) and their resolution:
the hub cache, sha256-checked downloads, nothing downloaded offline (an error names the fetch command)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import WeightsError

if TYPE_CHECKING:
    from torch import nn


class _Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathRef(_Ref):
    """A local file or directory; ``fetch``: the command that puts it there (shown when it is missing)."""

    path: str
    fetch: str | None = None


class HubRef(_Ref):
    """A file in a Hugging Face Hub repository (``file`` omitted: the whole repository snapshot)."""

    hf: str
    file: str | None = None
    revision: str | None = None


class UrlRef(_Ref):
    """A file at a URL, checked against its sha256."""

    url: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


WeightsRef = Annotated[PathRef | HubRef | UrlRef, Field(union_mode="left_to_right")]


class _Coerce(BaseModel):
    ref: WeightsRef

    @model_validator(mode="before")
    @classmethod
    def _plain_string(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("ref"), str | os.PathLike):
            return {"ref": {"path": str(data["ref"])}}
        return data


def as_ref(value: Any) -> PathRef | HubRef | UrlRef:
    """Accept a ref model, a dict or a plain path string."""
    if isinstance(value, PathRef | HubRef | UrlRef):
        return value
    return _Coerce.model_validate({"ref": value}).ref


def describe(ref: PathRef | HubRef | UrlRef) -> str:
    if isinstance(ref, PathRef):
        return ref.path
    if isinstance(ref, HubRef):
        rev = f"@{ref.revision}" if ref.revision else ""
        return f"hf://{ref.hf}{rev}/{ref.file or ''}"
    return ref.url


def fetch_command(ref: PathRef | HubRef | UrlRef) -> str:
    """The shell command a user runs (online) to put the file where dissectkit finds it."""
    if isinstance(ref, HubRef):
        rev = f" --revision {ref.revision}" if ref.revision else ""
        return f"hf download {ref.hf}{' ' + ref.file if ref.file else ''}{rev}"
    if isinstance(ref, UrlRef):
        return f"dissectkit fetch {ref.url} --sha256 {ref.sha256}"
    return ref.fetch or "(copy the file to that path)"


def resolve(ref: Any, ctx: BuildContext | None = None, what: str = "weights") -> Path:
    """Return a local path for a weights reference, downloading only when allowed."""
    ctx = ctx or BuildContext()
    ref = as_ref(ref)
    if isinstance(ref, PathRef):
        path = Path(ref.path).expanduser()
        if not path.exists():
            hint = f"Fetch it on a connected machine with: {ref.fetch}" if ref.fetch else "Check the path in the recipe."
            raise WeightsError(f"{what} file not found: {path.resolve()}. {hint}")
        return path
    if isinstance(ref, HubRef):
        return _resolve_hub(ref, ctx, what)
    return _resolve_url(ref, ctx, what)


PROBE_TIMEOUT_S = 2.0
_REACHABLE: dict[tuple[str, int], bool] = {}


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (name lookup included);
    answered once per process and endpoint, so an unreachable hub costs at most ``timeout`` once."""
    import socket
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(hub_endpoint())
    key = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    if key not in _REACHABLE:
        result: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection(key, timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout)
        _REACHABLE[key] = bool(result and result[0])
    return _REACHABLE[key]


def go_offline(ctx: BuildContext) -> None:
    """Offline from now on: ``ctx`` and huggingface_hub / transformers read local caches only."""
    ctx.offline = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


def _resolve_hub(ref: HubRef, ctx: BuildContext, what: str) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    unreachable = not ctx.offline and not hub_reachable()
    local_only = ctx.offline or unreachable
    try:
        if ref.file:
            return Path(hf_hub_download(ref.hf, ref.file, revision=ref.revision, local_files_only=local_only))
        return Path(snapshot_download(ref.hf, revision=ref.revision, local_files_only=local_only))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        if unreachable:
            mode = f"the Hugging Face Hub ({hub_endpoint()}) is unreachable from this machine"
        elif ctx.offline:
            mode = "offline mode is on (runtime.offline / HF_HUB_OFFLINE)"
        else:
            mode = "it could not be downloaded"
        raise WeightsError(
            f"{what} {describe(ref)} is not in the local Hugging Face cache and {mode}. "
            f"Fetch it on a connected machine with: {fetch_command(ref)}"
        ) from exc


def _resolve_url(ref: UrlRef, ctx: BuildContext, what: str) -> Path:
    name = ref.url.rstrip("/").rsplit("/", 1)[-1] or "download"
    dest = ctx.cache_dir / "downloads" / ref.sha256.lower() / name
    if dest.exists():
        return dest
    if ctx.offline:
        raise WeightsError(
            f"{what} {ref.url} is not in the cache ({dest}) and offline mode is on. "
            f"Download it and place it at that path, or run: {fetch_command(ref)}"
        )
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(ref.url) as resp, open(tmp, "wb") as fh:  # noqa: S310
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                digest.update(chunk)
                fh.write(chunk)
    except OSError as exc:
        raise WeightsError(f"Could not download {what} from {ref.url}: {exc}") from exc
    if digest.hexdigest() != ref.sha256.lower():
        tmp.unlink(missing_ok=True)
        raise WeightsError(f"{what} from {ref.url} has sha256 {digest.hexdigest()}, expected {ref.sha256}.")
    os.replace(tmp, dest)
    return dest


def file_fingerprint(path: Path, ctx: BuildContext | None = None) -> str:
    """sha256 of a file's (or a directory's files') whole content.

    The digest is memoised in the cache directory under (path, size, mtime), so a multi-GB
    checkpoint is hashed once, not on every run, while any change to the file changes the key.
    """
    import json

    path = Path(path).resolve()
    ctx = ctx or BuildContext()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    memo_key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()
    memo = ctx.cache_dir / "file-hashes" / memo_key
    try:
        known = memo.read_text().strip()
    except (OSError, UnicodeDecodeError):
        known = ""
    if len(known) == 64 and all(c in "0123456789abcdef" for c in known):  # else absent or damaged: hash again
        return known
    h = hashlib.sha256()
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    digest = h.hexdigest()
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:  # a full or read-only cache: only the memo is lost
        tmp.unlink(missing_ok=True)
    return digest


def load_checkpoint(path: Path, trust: bool = False, what: str = "checkpoint") -> Any:
    """Load a torch/safetensors checkpoint; pickles only with ``weights_only=True`` unless trusted."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise WeightsError(f"{what} {path} is not a readable safetensors file ({exc}); replace it with a good copy.") from None
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and "weights only" in str(exc).lower():
            raise WeightsError(
                f"{what} {path} contains pickled Python objects beyond tensors, which "
                f"weights_only=True refuses because unpickling can run arbitrary code. If you trust "
                f"its source, set `trust_checkpoint: true` in the component's params. ({exc.__class__.__name__})"
            ) from None
        raise _damaged(what, path, exc) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, AttributeError, ImportError) as exc:
        raise _damaged(what, path, exc) from None


def _damaged(what: str, path: Path, exc: BaseException) -> WeightsError:
    """A checkpoint torch cannot read: truncated, damaged or not a checkpoint, named with the fix."""
    try:
        size = f"{path.stat().st_size:,} bytes"
    except OSError:
        size = "unreadable"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return WeightsError(
        f"{what} {path} ({size}) cannot be read as a checkpoint: it is truncated, damaged or not a torch / "
        f"safetensors file ({type(exc).__name__}: {first}). Download or copy it again (compare its sha256 with "
        "the publisher's) and run the same command."
    )


def extract_state_dict(obj: Any, what: str = "checkpoint") -> dict[str, Any]:
    """Unwrap the common containers: a plain state dict, ``{"state_dict": ...}``, ``{"model": ...}``;
    strip a ``module.`` prefix (DataParallel)."""
    import torch

    sd = obj
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{what} does not hold a state dict of tensors (found keys: {list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__}).")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, Any], what: str = "checkpoint", ignore: tuple[str, ...] = ()) -> None:
    """``load_state_dict(strict=True)`` with a readable report of missing, unexpected and mis-shaped keys."""
    state_dict = {k: v for k, v in state_dict.items() if not any(k.endswith(s) for s in ignore)}
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict and not any(k.endswith(s) for s in ignore))
    unexpected = sorted(k for k in state_dict if k not in own)
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state_dict
        if k in own and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", shapes)):
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
                parts.append(f"{title}: {shown}")
        raise WeightsError(f"{what} does not match the architecture - " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=not ignore)
