"""The run: resolve -> extract + embed (one pass over the probe, cached) -> label -> report."""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dissectkit.cache import Cache, ChunkedEntry, content_key
from dissectkit.context import BuildContext, resolve_device
from dissectkit.errors import DataError, DissectkitError, EvidenceError, RecipeError
from dissectkit.layers import select_layers
from dissectkit.methods import Evidence, LayerLabels, concept_list
from dissectkit.preflight import missing_weights
from dissectkit.quality import label_quality
from dissectkit.recipe import Recipe, _recipe_path, component_refs, validate_components
from dissectkit.results import LABELS, MANIFEST, LabelSet, RunResult
from dissectkit.study import run_study
from dissectkit.types import Concept, LayerInfo

TEXT_BATCH = 256


# --------------------------------------------------------------------------- resolve
@dataclass
class TargetSlot:
    label: str
    name: str
    instance: Any
    layers: list[LayerInfo]
    pool: str
    token_pool: str


@dataclass
class Resolved:
    """Every component of a recipe, built and checked, before any image is read."""

    recipe: Recipe
    ctx: BuildContext
    dissectors: dict[str, Any]
    targets: dict[str, TargetSlot]
    probe: Any
    concepts: list[Concept]
    methods: dict[str, Any]
    reporters: dict[str, Any]


def build_context(recipe: Recipe, **overrides: Any) -> BuildContext:
    rt = recipe.runtime
    ctx = BuildContext(device=resolve_device(rt.device), seed=rt.seed, strict_data=rt.strict_data)
    ctx.offline = rt.offline or ctx.offline
    if rt.cache_dir:
        ctx.cache_dir = Path(rt.cache_dir).expanduser()
    for k, v in overrides.items():
        setattr(ctx, k, v)
    if ctx.offline:
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return ctx


def resolve(recipe: Recipe, ctx: BuildContext | None = None, kinds: tuple[str, ...] | None = None) -> Resolved:
    """Validate params, build the components (all of them, collecting every error) and check layers."""
    from dissectkit.plugins import get_host

    ctx = ctx or build_context(recipe)
    registry = get_host().registry
    validated = validate_components(recipe, registry)
    built: dict[int, Any] = {}
    problems: list[str] = []
    for kind, path, ref in component_refs(recipe):
        if kinds is not None and kind not in kinds:
            continue
        spec = registry.get(kind, ref.name)
        where = recipe.position(*_recipe_path(recipe, path))
        try:
            built[id(ref)] = spec.factory(validated[id(ref)], ctx)
        except DissectkitError as exc:
            problems.append(f"  - {kind} '{ref.display}' ({where}): {exc}")
            continue
        problems += [f"  - {kind} '{ref.display}' ({where}): {msg}" for msg in missing_weights(validated[id(ref)], ctx)]
    if problems:
        raise RecipeError("Cannot start the run; nothing was computed:\n" + "\n".join(problems))

    targets: dict[str, TargetSlot] = {}
    for ref in recipe.targets:
        if id(ref) not in built:
            continue
        target = built[id(ref)]
        layers = select_layers(ref.layers, target.layers(), target=f"target '{ref.display}'")
        targets[ref.display] = TargetSlot(ref.display, ref.name, target, layers, ref.pool, ref.token_pool)
    probe = built.get(id(recipe.probe))
    if probe is not None and len(probe) == 0:
        raise DataError(f"Probe '{recipe.probe.name}' has no images ({recipe.position('probe')}). Check its root and split.")
    concepts: list[Concept] = []
    if id(recipe.concepts) in built:
        concepts = concept_list(built[id(recipe.concepts)])
        if not concepts:
            raise DataError(f"Concept set '{recipe.concepts.name}' is empty ({recipe.position('concepts')}).")
    methods = {r.display: built[id(r)] for r in recipe.methods if id(r) in built}
    for label, method in methods.items():
        if getattr(method, "needs_masks", False) and probe is not None and not getattr(probe, "has_masks", False):
            raise EvidenceError(
                f"Method '{label}' needs a probe with per-concept masks, but probe '{recipe.probe.name}' has none. "
                "Use a probe with masks (synth-mammo, cbis-ddsm, nih-cxr14, csv with a mask column) or another method."
            )
    return Resolved(
        recipe=recipe,
        ctx=ctx,
        dissectors={r.display: built[id(r)] for r in recipe.dissectors if id(r) in built},
        targets=targets,
        probe=probe,
        concepts=concepts,
        methods=methods,
        reporters={r.display: built[id(r)] for r in recipe.output.reporters if id(r) in built},
    )


# --------------------------------------------------------------------------- cache keys
def activation_key(slot: TargetSlot, layer: str, probe_fp: str, chunk: int) -> str:
    return content_key("acts", slot.instance.fingerprint(), layer, slot.pool, slot.token_pool, probe_fp, chunk)


def embedding_key(dissector: Any, probe_fp: str, chunk: int) -> str:
    return content_key("embeds", dissector.fingerprint(), probe_fp, chunk)


# --------------------------------------------------------------------------- the pass
class _PassDataset:
    """Reads each raw probe image once and preprocesses it for every model that needs it."""

    def __init__(self, probe: Any, preprocessors: dict[str, Callable[[Any], Any]], strict: bool) -> None:
        self.probe = probe
        self.preprocessors = preprocessors
        self.strict = strict

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, index: int):
        try:
            item = self.probe[index]
            return index, {name: pre(item.image) for name, pre in self.preprocessors.items()}, None
        except DataError as exc:
            if self.strict:
                raise
            return index, None, str(exc)


def _collate(batch):
    import torch

    indices = [b[0] for b in batch]
    ok = [b[1] is not None for b in batch]
    reasons = {b[0]: b[2] for b in batch if b[1] is None}
    good = [b[1] for b in batch if b[1] is not None]
    inputs = {name: torch.stack([g[name] for g in good]) for name in good[0]} if good else {}
    return indices, ok, inputs, reasons


def _chunk_batches(chunks: list[range], batch_size: int) -> list[list[int]]:
    batches = []
    for r in chunks:
        idx = list(r)
        batches.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
    return batches


def _hook_layers(module: Any, layers: list[str], pool: str, token_pool: str, store: dict[str, Any], spatial: bool = False):
    import torch

    from dissectkit.layers import pool_output, spatial_output

    handles = []
    for name in layers:

        def hook(_m, _inp, out, name=name):
            if not isinstance(out, torch.Tensor):
                out = next(o for o in out if isinstance(o, torch.Tensor))
            store[name] = spatial_output(out).float() if spatial else pool_output(out, pool, token_pool).float()

        handles.append(module.get_submodule(name).register_forward_hook(hook))
    return handles


def _module_device(module: Any, fallback: str):
    import torch

    for p in module.parameters():
        return p.device
    return torch.device(fallback)


def extract_and_embed(res: Resolved, cache: Cache, progress: Any = None) -> dict[str, Any]:
    """One pass over the probe filling every missing activation and embedding chunk.

    Returns the cache entries: ``{"acts": {(target, layer): entry}, "embeds": {dissector: entry}}``
    plus the skipped images ``{"skipped": {index: reason}}``.
    """
    import torch
    from torch.utils.data import DataLoader

    rt = res.recipe.runtime
    n = len(res.probe)
    probe_fp = res.probe.fingerprint()
    chunk = rt.chunk_images
    acts: dict[tuple[str, str], ChunkedEntry] = {}
    for slot in res.targets.values():
        for info in slot.layers:
            key = activation_key(slot, info.name, probe_fp, chunk)
            meta = {"target": slot.name, "layer": info.name, "pool": slot.pool, "token_pool": slot.token_pool, "probe": res.recipe.probe.name}
            acts[(slot.label, info.name)] = cache.entry("acts", key, n, chunk, meta)
    embeds = {
        label: cache.entry("embeds", embedding_key(d, probe_fp, chunk), n, chunk, {"dissector": label, "probe": res.recipe.probe.name})
        for label, d in res.dissectors.items()
    }
    n_chunks = (n + chunk - 1) // chunk
    need: dict[int, dict[str, Any]] = {}
    for c in range(n_chunks):
        t_layers = {t: [layer for (tl, layer), e in acts.items() if tl == t and not e.has_chunk(c)] for t in res.targets}
        t_layers = {t: ls for t, ls in t_layers.items() if ls}
        ds = [d for d, e in embeds.items() if not e.has_chunk(c)]
        if t_layers or ds:
            need[c] = {"targets": t_layers, "dissectors": ds}
    skipped: dict[int, str] = {}
    computed = 0
    if need:
        pre: dict[str, Callable] = {}
        for c_need in need.values():
            for t in c_need["targets"]:
                pre[f"t:{t}"] = res.targets[t].instance.preprocess
            for d in c_need["dissectors"]:
                pre[f"d:{d}"] = res.dissectors[d].preprocess
        dataset = _PassDataset(res.probe, pre, res.ctx.strict_data)
        ranges = [range(c * chunk, min(n, (c + 1) * chunk)) for c in sorted(need)]
        loader = DataLoader(
            dataset,
            batch_sampler=_chunk_batches(ranges, rt.batch_size),
            num_workers=rt.num_workers,
            collate_fn=_collate,
            persistent_workers=False,
        )
        widths = {f"a:{t}:{i.name}": i.n_neurons for t, s in res.targets.items() for i in s.layers}
        widths.update({f"e:{d}": int(res.dissectors[d].embed_dim) for d in res.dissectors})
        stores: dict[str, dict[str, Any]] = {t: {} for t in res.targets}
        handles: list[Any] = []
        task = progress.add_task("extract + embed", total=sum(len(r) for r in ranges)) if progress else None
        buffers: dict[str, list] = {}
        valid_buf: list[bool] = []
        current = None
        try:
            with torch.inference_mode():
                for indices, ok, inputs, reasons in loader:
                    c = indices[0] // chunk
                    if c != current:  # hook exactly the layers this chunk still needs
                        current, buffers, valid_buf = c, {}, []
                        for h in handles:
                            h.remove()
                        handles = []
                        for t, layer_names in need[c]["targets"].items():
                            slot = res.targets[t]
                            handles += _hook_layers(slot.instance.module, layer_names, slot.pool, slot.token_pool, stores[t])
                    skipped.update(reasons)
                    valid_buf.extend(ok)
                    if inputs:
                        for t, layer_names in need[c]["targets"].items():
                            slot = res.targets[t]
                            slot.instance.module(inputs[f"t:{t}"].to(_module_device(slot.instance.module, res.ctx.device)))
                            for layer in layer_names:
                                buffers.setdefault(f"a:{t}:{layer}", []).append(stores[t][layer].cpu())
                        for d in need[c]["dissectors"]:
                            emb = res.dissectors[d].encode_images(inputs[f"d:{d}"])
                            buffers.setdefault(f"e:{d}", []).append(emb.detach().float().cpu())
                    if progress:
                        progress.advance(task, len(indices))
                    if indices[-1] == min(n, (c + 1) * chunk) - 1:
                        chunk_skips = {i: r for i, r in skipped.items() if i // chunk == c}
                        _flush(c, need[c], buffers, valid_buf, chunk_skips, widths, acts, embeds)
                        computed += 1
        finally:
            for h in handles:
                h.remove()
    first = next(iter(acts.values()), None) or next(iter(embeds.values()), None)
    if first is not None:
        skipped = {**first.skipped(), **skipped}
    return {"acts": acts, "embeds": embeds, "skipped": dict(sorted(skipped.items())), "computed_chunks": computed, "total_chunks": n_chunks}


def _flush(c, need, buffers, valid_buf, skipped, widths, acts, embeds) -> None:
    """Write the finished chunk ``c`` of every entry that needed it (skipped rows are zeros)."""
    import torch

    valid = torch.tensor(valid_buf, dtype=torch.bool)

    def full(key: str) -> Any:
        parts = buffers.get(key)
        width = parts[0].shape[1] if parts else widths[key]
        out = torch.zeros(len(valid_buf), width, dtype=torch.float32)
        if parts:
            out[valid] = torch.cat(parts)
        return out

    for t, layers in need["targets"].items():
        for layer in layers:
            acts[(t, layer)].write_chunk(c, full(f"a:{t}:{layer}"), valid, skipped)
    for d in need["dissectors"]:
        embeds[d].write_chunk(c, full(f"e:{d}"), valid, skipped)


# --------------------------------------------------------------------------- label
class TextEncoder:
    """``encode_texts`` for methods: memoised in memory and in the cache, batched, CPU float32."""

    def __init__(self, dissector: Any, cache: Cache) -> None:
        self.dissector = dissector
        self.cache = cache
        self.fp = dissector.fingerprint()
        self._memo: dict[tuple[str, ...], Any] = {}

    def __call__(self, texts: list[str]):
        import torch

        key = tuple(texts)
        if key in self._memo:
            return self._memo[key]
        values = self.cache.load_texts(self.fp, list(texts))
        if values is None:
            with torch.inference_mode():
                parts = [self.dissector.encode_texts(list(texts[i : i + TEXT_BATCH])).detach().float().cpu() for i in range(0, len(texts), TEXT_BATCH)]
            values = torch.cat(parts) if parts else torch.zeros(0, int(self.dissector.embed_dim))
            self.cache.save_texts(self.fp, list(texts), values)
        self._memo[key] = values
        return values


def _probe_subset_loader(res: Resolved, slot: TargetSlot, indices: list[int], with_masks: bool):
    """A DataLoader over chosen probe images giving (target input, masks) batches; masks are
    aligned with the target's input when it offers ``preprocess_mask``."""
    import numpy as np
    from torch.utils.data import DataLoader

    probe, pre = res.probe, slot.instance.preprocess
    align = getattr(slot.instance, "preprocess_mask", None)

    class _View:
        def __len__(self) -> int:
            return len(indices)

        def __getitem__(self, j: int):
            item = probe[indices[j]]
            masks = item.masks if with_masks else None
            if masks and callable(align):  # put masks through the target's resize / crop
                masks = {c: np.asarray(align(m)) for c, m in masks.items()}
            return pre(item.image), masks

    def collate(batch):
        import torch

        return torch.stack([b[0] for b in batch]), [b[1] for b in batch]

    return DataLoader(_View(), batch_size=res.recipe.runtime.batch_size, num_workers=res.recipe.runtime.num_workers, collate_fn=collate)


def spatial_maps_fn(res: Resolved, slot: TargetSlot, layer: str, indices: list[int]) -> Callable[[], Any]:
    """A factory of fresh iterators of ``SpatialBatch`` for one layer (mask-based methods)."""

    def iterate():
        import torch

        from dissectkit.methods import SpatialBatch

        store: dict[str, Any] = {}
        handles = _hook_layers(slot.instance.module, [layer], slot.pool, slot.token_pool, store, spatial=True)
        try:
            with torch.inference_mode():
                for x, masks in _probe_subset_loader(res, slot, indices, with_masks=True):
                    slot.instance.module(x.to(_module_device(slot.instance.module, res.ctx.device)))
                    yield SpatialBatch(store[layer].cpu(), masks)
        finally:
            for h in handles:
                h.remove()

    return iterate


def compute_spatial_maps(res: Resolved, slot: TargetSlot, layer: str, indices: list[int]):
    """``[n, K, h, w]`` maps of chosen probe images (for report heatmaps)."""
    import torch

    if not indices:
        return torch.zeros(0)
    return torch.cat([b.maps for b in spatial_maps_fn(res, slot, layer, indices)()])


def label_all(res: Resolved, entries: dict[str, Any], cache: Cache, progress: Any = None) -> tuple[list[LabelSet], dict[str, Any]]:
    """Run every method on every (dissector, target, layer) from the cached evidence.

    Each layer's activations are read from the cache once and shared by every dissector and method;
    the dissectors' image embeddings (``[N, D]``, small) are read once up front.
    """
    from dissectkit.plugins import get_host

    hook = get_host().pm.hook
    sets = {(d, t, m): LabelSet(d, t, m) for d in res.dissectors for t in res.targets for m in res.methods}
    measures: dict[str, Any] = {}
    embeddings = {d: entries["embeds"][d].read_all() for d in res.dissectors}
    encoders = {d: TextEncoder(dissector, cache) for d, dissector in res.dissectors.items()}
    total = len(res.dissectors) * len(res.methods) * sum(len(s.layers) for s in res.targets.values())
    task = progress.add_task("label", total=total) if progress else None
    for t_label, slot in res.targets.items():
        for info in slot.layers:
            acts, valid_a = entries["acts"][(t_label, info.name)].read_all()
            truth = _ground_truth(slot, info.name)
            for d_label, (image_emb, valid_e) in embeddings.items():
                valid = valid_a & valid_e
                if not valid.any():
                    raise DataError("No probe image could be read; nothing to label. See the skipped images in the manifest.")
                indices = valid.nonzero().flatten().tolist()
                layer_acts, layer_emb = acts[valid], image_emb[valid]
                for m_label, method in res.methods.items():
                    spatial = spatial_maps_fn(res, slot, info.name, indices) if getattr(res.probe, "has_masks", False) else None
                    evidence = Evidence(
                        layer=info.name,
                        activations=layer_acts,
                        image_embeddings=layer_emb,
                        concepts=res.concepts,
                        encode_texts=encoders[d_label],
                        spatial_maps=spatial,
                        seed=res.ctx.seed,
                        device=res.ctx.device,
                    )
                    labels: LayerLabels = method.label(evidence)
                    labels.layer = info.name
                    label_set = sets[(d_label, t_label, m_label)]
                    label_set.layers[info.name] = labels
                    label_set.quality[info.name] = label_quality(layer_acts, layer_emb, encoders[d_label], res.concepts, labels, res.ctx.device)
                    hook.dissectkit_layer_labelled(layer_labels=labels, dissector=d_label, target=t_label, method=m_label)
                    if truth is not None:
                        measures.setdefault(label_set.key, {})[info.name] = _final_layer_measures(labels, truth)
                    if progress:
                        progress.advance(task)
    ordered = {ls.key: measures[ls.key] for ls in sets.values() if ls.key in measures}
    return list(sets.values()), ordered


def _ground_truth(slot: TargetSlot, layer: str) -> list[str | None] | None:
    fn = getattr(slot.instance, "ground_truth", None)
    return fn(layer) if callable(fn) else None


def _final_layer_measures(labels: LayerLabels, truth: list[str | None]) -> dict[str, Any]:
    from dissectkit.measures import final_layer_accuracy

    return final_layer_accuracy(labels, truth)


# --------------------------------------------------------------------------- run
def versions(ctx: BuildContext) -> dict[str, Any]:
    import torch

    import dissectkit
    from dissectkit.plugins import get_host

    device_name = torch.cuda.get_device_name(0) if ctx.device.startswith("cuda") and torch.cuda.is_available() else platform.processor() or platform.machine()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "dissectkit": dissectkit.__version__,
        "device": ctx.device,
        "device_name": device_name,
        "plugins": {r.distribution: r.version for r in get_host().records if r.ok},
    }


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(recipe: Recipe, progress: bool = False, console: Any = None, out_dir: str | Path | None = None) -> RunResult:
    """Run a validated recipe end to end and return its result (reporters have written)."""
    from dissectkit.plugins import get_host

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    res = resolve(recipe)
    timings["resolve"] = time.perf_counter() - t0
    seed_everything(recipe.runtime.seed)
    cache = Cache(res.ctx.cache_dir)
    out = Path(out_dir) if out_dir else recipe.output_dir
    out.mkdir(parents=True, exist_ok=True)
    hook = get_host().pm.hook
    hook.dissectkit_run_started(recipe=recipe, out_dir=out)

    bar = _progress(console) if progress else None
    try:
        if bar:
            bar.start()
        t0 = time.perf_counter()
        entries = extract_and_embed(res, cache, bar)
        timings["extract_embed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        label_sets, measures = label_all(res, entries, cache, bar)
        timings["label"] = time.perf_counter() - t0
    finally:
        if bar:
            bar.stop()

    result = RunResult(
        name=recipe.run_name,
        out_dir=out,
        recipe=recipe.resolved_dict(),
        concepts=res.concepts,
        probe_ids=[_probe_id(res.probe, i) for i in range(len(res.probe))],
        label_sets=label_sets,
        layer_infos={t: s.layers for t, s in res.targets.items()},
        measures=measures,
        stats={
            "timings": timings,
            "n_images": len(res.probe),
            "chunks": {"computed": entries["computed_chunks"], "total": entries["total_chunks"]},
            "skipped": {str(k): v for k, v in entries["skipped"].items()},
            "cache": {
                "acts": {f"{t}/{layer}": e.root.name for (t, layer), e in entries["acts"].items()},
                "embeds": {d: e.root.name for d, e in entries["embeds"].items()},
            },
            "versions": versions(res.ctx),
        },
        probe=res.probe,
        targets={t: s.instance for t, s in res.targets.items()},
        dissectors=res.dissectors,
        activations=lambda t, layer: _all_rows(entries["acts"][(t, layer)]),
        image_embeddings=lambda d: _all_rows(entries["embeds"][d]),
        spatial_maps=lambda t, layer, idx: compute_spatial_maps(res, res.targets[t], layer, list(idx)),
    )
    write_outputs(result, recipe)
    t0 = time.perf_counter()
    for name, reporter in res.reporters.items():
        try:
            reporter.write(result, out)
        except DissectkitError:
            raise
        except Exception as exc:
            raise DissectkitError(
                f"Reporter '{name}' failed: {type(exc).__name__}: {exc}. The labels are already saved in {out / LABELS}."
            ) from exc
    timings["report"] = time.perf_counter() - t0
    run_study(result)
    _write_json(out / MANIFEST, _manifest(result))
    hook.dissectkit_run_finished(run_result=result)
    return result


def _all_rows(entry: ChunkedEntry):
    """All rows of an entry, skipped images included as zero rows (indices match ``probe_ids``)."""
    values, _valid = entry.read_all()
    return values


def _probe_id(probe: Any, index: int) -> str:
    ids = getattr(probe, "ids", None)
    if callable(ids):
        return str(ids()[index])
    if isinstance(ids, list | tuple):
        return str(ids[index])
    return str(index)


def _manifest(result: RunResult) -> dict[str, Any]:
    return {"name": result.name, "recipe": result.recipe, "stats": result.stats}


def _write_json(path: Path, data: Any) -> None:
    from dissectkit.cache import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=False, default=str) + "\n").encode())


def write_outputs(result: RunResult, recipe: Recipe) -> None:
    """The files every run directory holds: recipe.yaml, manifest.json and labels.json."""
    import yaml

    from dissectkit.cache import atomic_write_bytes

    atomic_write_bytes(result.out_dir / "recipe.yaml", yaml.safe_dump(result.recipe, sort_keys=False).encode())
    _write_json(result.out_dir / LABELS, result.labels_payload())
    _write_json(result.out_dir / MANIFEST, _manifest(result))


def _progress(console: Any):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )
