"""The cached pass: one read of each probe image fills every missing cache chunk of the run
(docs/architecture.md, "One pass"; a distributed rank computes the chunks it owns)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dissectkit.base.errors import DataError
from dissectkit.engine.cache import Cache, ChunkedEntry, content_key
from dissectkit.engine.distributed import World
from dissectkit.engine.reporting import Watch, item_values
from dissectkit.engine.resolve import Resolved, TargetSlot
from dissectkit.engine.spatial import SPATIAL_MAX_SIDE, align_masks, bounded_maps, pack_masks, spatial_shape


def activation_key(slot: TargetSlot, layer: str, probe_fp: str, chunk: int) -> str:
    return content_key("acts", slot.instance.fingerprint(), layer, slot.pool, slot.token_pool, probe_fp, chunk)


def spatial_key(slot: TargetSlot, layer: str, probe_fp: str, chunk: int) -> str:
    return content_key("spatial", slot.instance.fingerprint(), layer, SPATIAL_MAX_SIDE, "float16", probe_fp, chunk)


def mask_key(slot: TargetSlot, probe_fp: str, chunk: int) -> str:
    return content_key("masks", slot.instance.fingerprint(), probe_fp, chunk)


def embedding_key(dissector: Any, probe_fp: str, chunk: int) -> str:
    return content_key("embeds", dissector.fingerprint(), probe_fp, chunk)


@dataclass
class Extraction:
    """The cache entries of a run (every chunk present once :func:`extract_and_embed` returns).

    ``spatial`` (per target and layer) and ``masks`` (per target) are empty unless a mask method
    was asked for. ``skipped`` maps probe index -> reason for every unreadable image;
    ``observations`` holds what the reporters' pass observers kept, by reporter label."""

    acts: dict[tuple[str, str], ChunkedEntry]
    embeds: dict[str, ChunkedEntry]
    spatial: dict[tuple[str, str], ChunkedEntry] = field(default_factory=dict)
    masks: dict[str, ChunkedEntry] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    computed_chunks: int = 0
    total_chunks: int = 0
    observations: dict[str, Any] = field(default_factory=dict)

    def entries(self) -> Iterator[ChunkedEntry]:
        yield from self.acts.values()
        yield from self.spatial.values()
        yield from self.masks.values()
        yield from self.embeds.values()

    def cache_keys(self) -> dict[str, dict[str, str]]:
        keys = {
            "acts": {f"{t}/{layer}": e.root.name for (t, layer), e in self.acts.items()},
            "embeds": {d: e.root.name for d, e in self.embeds.items()},
        }
        if self.spatial:
            keys["spatial"] = {f"{t}/{layer}": e.root.name for (t, layer), e in self.spatial.items()}
            keys["masks"] = {t: e.root.name for t, e in self.masks.items()}
        return keys


@dataclass
class ChunkPlan:
    """What one chunk still needs: per target the layers to capture, targets whose aligned masks
    are missing, dissectors whose embeddings are missing."""

    layers: dict[str, list[str]]
    masks: list[str]
    dissectors: list[str]

    def __bool__(self) -> bool:
        return bool(self.layers or self.masks or self.dissectors)


def open_entries(res: Resolved, cache: Cache) -> Extraction:
    """The run's cache entries (created empty where missing)."""
    n, chunk, probe = len(res.probe), res.recipe.runtime.chunk_images, res.recipe.probe.name
    probe_fp = res.probe.fingerprint()
    ex = Extraction(acts={}, embeds={}, total_chunks=(n + chunk - 1) // chunk)
    for slot in res.targets.values():
        for info in slot.layers:
            meta = {"target": slot.name, "layer": info.name, "pool": slot.pool, "token_pool": slot.token_pool, "probe": probe}
            ex.acts[(slot.label, info.name)] = cache.entry("acts", activation_key(slot, info.name, probe_fp, chunk), n, chunk, meta)
            if res.needs_spatial:
                meta = {"target": slot.name, "layer": info.name, "max_side": SPATIAL_MAX_SIDE, "probe": probe}
                key = spatial_key(slot, info.name, probe_fp, chunk)
                ex.spatial[(slot.label, info.name)] = cache.entry("spatial", key, n, chunk, meta, dtype="float16")
        if res.needs_spatial:
            meta = {"target": slot.name, "probe": probe}
            ex.masks[slot.label] = cache.entry("masks", mask_key(slot, probe_fp, chunk), n, chunk, meta, dtype="int64")
    for label, d in res.dissectors.items():
        meta = {"dissector": label, "probe": probe}
        ex.embeds[label] = cache.entry("embeds", embedding_key(d, probe_fp, chunk), n, chunk, meta)
    return ex


def plan_chunk(res: Resolved, ex: Extraction, c: int) -> ChunkPlan:
    layers = {}
    for t, slot in res.targets.items():
        missing = [
            i.name for i in slot.layers
            if not ex.acts[(t, i.name)].has_chunk(c) or ((t, i.name) in ex.spatial and not ex.spatial[(t, i.name)].has_chunk(c))
        ]
        if missing:
            layers[t] = missing
    masks = [t for t, e in ex.masks.items() if not e.has_chunk(c)]
    return ChunkPlan(layers, masks, [d for d, e in ex.embeds.items() if not e.has_chunk(c)])


def input_keys(res: Resolved) -> dict[str, str]:
    """The model input each target (``t:<label>``) and dissector (``d:<label>``) reads: those whose
    ``preprocess_key()`` agree share one (``p:<key>``), the others have their own."""
    keys = {}
    for t, slot in res.targets.items():
        key = slot.instance.preprocess_key()
        keys[f"t:{t}"] = f"p:{key}" if key else f"t:{t}"
    for d, dissector in res.dissectors.items():
        key = dissector.preprocess_key()
        keys[f"d:{d}"] = f"p:{key}" if key else f"d:{d}"
    return keys


class _PassDataset:
    """Reads each raw probe image once and preprocesses it once per distinct input that its chunk
    needs (:func:`input_keys`), and gives it to the pass observers' item ``functions``."""

    def __init__(self, res: Resolved, plans: dict[int, ChunkPlan], chunk: int, functions: dict[str, Callable[[Any], Any]]) -> None:
        self.probe = res.probe
        self.strict = res.ctx.strict_data
        self.chunk = chunk
        self.plans = plans
        self.targets = {t: s.instance for t, s in res.targets.items()}
        self.dissectors = res.dissectors
        self.functions = functions
        self.keys = input_keys(res)

    def __len__(self) -> int:
        return len(self.probe)

    def preprocessors(self, index: int) -> dict[str, Callable[[Any], Any]]:
        """Input key -> the preprocessing of the first model (targets, then dissectors) reading it."""
        plan = self.plans[index // self.chunk]
        pre: dict[str, Callable[[Any], Any]] = {}
        for t in plan.layers:
            pre.setdefault(self.keys[f"t:{t}"], self.targets[t].preprocess)
        for d in plan.dissectors:
            pre.setdefault(self.keys[f"d:{d}"], self.dissectors[d].preprocess)
        return pre

    def __getitem__(self, index: int):
        plan = self.plans[index // self.chunk]
        try:
            item = self.probe[index]
            inputs = {key: pre(item.image) for key, pre in self.preprocessors(index).items()}
            masks = {t: align_masks(item.masks, self.targets[t].preprocess_mask) for t in plan.masks}
            return index, inputs, masks, None, item_values(self.functions, item)
        except Exception as exc:  # noqa: BLE001 - a DataError, or a plugin probe's exception, skips the image
            from dissectkit.host.blame import skip_reason

            reason = skip_reason(exc)
            if self.strict or reason is None:
                raise
            return index, None, {t: None for t in plan.masks}, reason, {}


def _collate(batch):
    import torch

    indices = [b[0] for b in batch]
    ok = [b[1] is not None for b in batch]
    reasons = {b[0]: b[3] for b in batch if b[1] is None}
    good = [b[1] for b in batch if b[1] is not None]
    inputs = {name: torch.stack([g[name] for g in good]) for name in good[0]} if good else {}
    masks = {t: [b[2][t] for b in batch] for t in batch[0][2]}
    return indices, ok, inputs, masks, reasons, [b[4] for b in batch]


def _chunk_batches(chunks: list[range], batch_size: int) -> list[list[int]]:
    batches = []
    for r in chunks:
        idx = list(r)
        batches.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
    return batches


def _module_device(module: Any, fallback: str):
    import torch

    for p in module.parameters():
        return p.device
    return torch.device(fallback)


def _capture_fn(slot: TargetSlot, spatial: bool, watch: Watch) -> Callable[[str, Any], Any]:
    """What the pass keeps of a layer output: (pooled ``[B, K]``, bounded maps or ``None``); the
    pass observers see both the pooled values and the raw output."""
    from dissectkit.nn.capture import first_tensor
    from dissectkit.nn.layers import pool_output

    def keep(name: str, out: Any) -> Any:
        out = first_tensor(out)
        pooled = pool_output(out, slot.pool, slot.token_pool).float()
        watch.layer_output(slot.label, name, pooled, out)
        return pooled, bounded_maps(out) if spatial else None

    return keep


def extract_and_embed(res: Resolved, cache: Cache, progress: Any = None, world: World | None = None,
                      watch: Watch | None = None) -> Extraction:
    """One pass over the probe filling every missing chunk this process owns (all of them in a
    one-process run), watched by the reporters' pass observers; returns the run's entries and the
    skipped images of the chunks computed here (:func:`finish_extraction` adds those of chunks
    found in the cache).

    The probe is read by ``runtime.num_workers`` DataLoader workers (``auto``:
    :func:`~dissectkit.engine.runtime.data_workers`), batches prefetched while the main process runs
    the forward passes; the targets are built once the workers have started reading. On CUDA the
    batches come in pinned memory and are copied without blocking."""
    import torch

    from dissectkit.engine.runtime import data_workers
    from dissectkit.nn.capture import Capture

    world, watch = world or World(), watch or Watch()
    rt = res.recipe.runtime
    n, chunk = len(res.probe), rt.chunk_images
    ex = open_entries(res, cache)
    plans = {c: p for c in range(ex.total_chunks) if world.owns(c) and (p := plan_chunk(res, ex, c))}
    if not plans:
        return ex
    ranges = [range(c * chunk, min(n, (c + 1) * chunk)) for c in sorted(plans)]
    batches = _chunk_batches(ranges, rt.batch_size)
    dataset = _PassDataset(res, plans, chunk, watch.functions)
    cuda = torch.device(res.ctx.device).type == "cuda"
    loader = _loader(dataset, batches, data_workers(rt.num_workers, torch.get_num_threads(), len(batches), world.local_size), cuda)
    task = progress.add_task("extract + embed", total=sum(len(r) for r in ranges)) if progress else None
    keys = dataset.keys
    captures: dict[str, Capture] = {}
    buf = _ChunkBuffer(res, ex)
    current = None
    batches_in = iter(loader)  # the workers start reading now
    modules = {t: res.targets[t].instance.module for t in sorted({t for p in plans.values() for t in p.layers})}
    devices = {t: _module_device(m, res.ctx.device) for t, m in modules.items()}
    try:
        with torch.inference_mode():
            for indices, ok, inputs, masks, reasons, values in batches_in:
                c = indices[0] // chunk
                if c != current:  # hook exactly the layers this chunk still needs
                    current = c
                    buf.start(c, plans[c])
                    watch.chunk_started(plans[c].layers)
                    for cap in captures.values():
                        cap.remove()
                    captures = {
                        t: Capture.named(modules[t], layers, _capture_fn(res.targets[t], (t, layers[0]) in ex.spatial, watch))
                        for t, layers in plans[c].layers.items()
                    }
                ex.skipped.update(reasons)
                buf.valid.extend(ok)
                for t, rows in masks.items():
                    buf.masks.setdefault(t, []).extend(rows)
                if inputs:
                    if cuda:  # one copy of each distinct input (pinned memory: the copy does not block)
                        inputs = {k: x.to(res.ctx.device, non_blocking=True) for k, x in inputs.items()}
                    watch.batch_started([i for i, good in zip(indices, ok, strict=True) if good])
                    for t, cap in captures.items():
                        modules[t](inputs[keys[f"t:{t}"]].to(devices[t], non_blocking=cuda))
                        for layer, (pooled, maps) in cap.outputs.items():
                            buf.add(f"a:{t}:{layer}", pooled)
                            if maps is not None:
                                buf.add(f"s:{t}:{layer}", maps)
                    for d in plans[c].dissectors:
                        buf.add(f"e:{d}", res.dissectors[d].encode_images(inputs[keys[f"d:{d}"]]).detach().float())
                    watch.batch_finished(indices, values)
                if progress:
                    progress.advance(task, len(indices))
                if indices[-1] == min(n, (c + 1) * chunk) - 1:
                    buf.flush({i: r for i, r in ex.skipped.items() if i // chunk == c})
                    ex.computed_chunks += 1
    finally:
        for cap in captures.values():
            cap.remove()
    return ex


PREFETCH_BATCHES = 4
"""Batches each DataLoader worker reads ahead of the forward passes."""


def _loader(dataset: _PassDataset, batches: list[list[int]], workers: int, pin: bool) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
        persistent_workers=False,
    )


class _ChunkBuffer:
    """The rows of the chunk in flight; :meth:`flush` writes every entry the chunk still needs
    (skipped images are zero rows marked invalid)."""

    def __init__(self, res: Resolved, ex: Extraction) -> None:
        self.res, self.ex = res, ex
        self.c, self.plan = -1, ChunkPlan({}, [], [])
        self.parts: dict[str, list[Any]] = {}
        self.valid: list[bool] = []
        self.masks: dict[str, list[Any]] = {}

    def start(self, c: int, plan: ChunkPlan) -> None:
        self.c, self.plan, self.parts, self.valid, self.masks = c, plan, {}, [], {}

    def add(self, key: str, values: Any) -> None:
        self.parts.setdefault(key, []).append(values.cpu())

    def _full(self, key: str, shape: tuple[int, ...], dtype: Any):
        import torch

        parts = self.parts.get(key)
        valid = torch.tensor(self.valid, dtype=torch.bool)
        out = torch.zeros(len(self.valid), *(parts[0].shape[1:] if parts else shape), dtype=dtype)
        if parts:
            out[valid] = torch.cat(parts).to(dtype)
        return out

    def flush(self, skipped: dict[int, str]) -> None:
        import torch

        c, ex, valid = self.c, self.ex, torch.tensor(self.valid, dtype=torch.bool)
        for t, layers in self.plan.layers.items():
            infos = {i.name: i for i in self.res.targets[t].layers}
            for layer in layers:
                acts = ex.acts[(t, layer)]
                if not acts.has_chunk(c):
                    acts.write_chunk(c, self._full(f"a:{t}:{layer}", (infos[layer].n_neurons,), torch.float32), valid, skipped)
                maps = ex.spatial.get((t, layer))
                if maps is not None and not maps.has_chunk(c):
                    maps.write_chunk(c, self._full(f"s:{t}:{layer}", spatial_shape(infos[layer]), torch.float16), valid, skipped)
        for t in self.plan.masks:
            offsets, bits, meta = pack_masks(self.masks[t])
            ex.masks[t].write_chunk(c, offsets, valid, skipped, extra={"bits": bits}, metadata=meta)
        for d in self.plan.dissectors:  # embeddings last: a chunk with embeddings is complete
            ex.embeds[d].write_chunk(c, self._full(f"e:{d}", (int(self.res.dissectors[d].embed_dim),), torch.float32), valid, skipped)


def finish_extraction(ex: Extraction, strict: bool) -> Extraction:
    """After every process's pass: check every chunk is present, gather the skipped images of all
    chunks (from the chunks' metadata, so cached and fresh chunks report alike) and enforce
    ``runtime.strict_data`` on them with the error a fresh read gives."""
    for entry in ex.entries():
        missing = entry.missing_chunks()
        if missing:
            raise DataError(f"Cache entry {entry.root} lacks chunks {missing[:5]} after extraction; run again to resume.")
    skipped = dict(ex.skipped)
    for entry in ex.entries():
        skipped.update(entry.skipped())
    ex.skipped = dict(sorted(skipped.items()))
    if strict and ex.skipped:
        index, reason = next(iter(ex.skipped.items()))
        raise DataError(reason if reason else f"Probe image {index} could not be read.")
    return ex
