"""Conformance checks for components of every kind, for a plugin's own tests (docs/plugins.md, "Testing
a plugin"): each ``check_*`` raises ``AssertionError`` naming the property that does not hold."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.base.contract import adapt
from dissectkit.base.errors import ComponentError, DataError, PluginError
from dissectkit.base.types import Concept, LayerInfo, ProbeItem

DEFAULT_TEXTS = ("mass", "a spiculated mass in the upper outer quadrant", "calcification", "normal breast tissue")


@contextmanager
def registered(plugin: Any, name: str | None = None, distribution: str = "in-process") -> Iterator[Any]:
    """Register a plugin module (or its import name) with the process-wide host without installing
    it, for the ``with`` block; yields its ``PluginRecord``. A failed registration raises
    ``PluginError`` with every problem; only what this call added is removed afterwards (a plugin
    installed and already registered stays)."""
    from dissectkit.host.manager import get_host

    host = get_host()
    if isinstance(plugin, str):
        plugin = importlib.import_module(plugin)
    known = {id(r) for r in host.records}
    record = host.add_plugin(plugin, name=name, distribution=distribution)
    added = id(record) not in known
    try:
        if not record.ok:
            raise PluginError(f"Plugin '{record.name}' failed to register:\n  - " + "\n  - ".join(record.errors))
        yield record
    finally:
        if added:
            host.remove_plugin(record)


def sample_images(height: int = 48, width: int = 40, seed: int = 0) -> list[Any]:
    """Raw images of every accepted form: PIL L / RGB / I;16, HxW / HxWx1 / HxWx3 arrays of uint8,
    uint16 and float (grayscale and RGB)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    gray8 = rng.integers(0, 256, (height, width), dtype=np.uint8)
    rgb8 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    return [
        Image.fromarray(gray8, mode="L"),
        Image.fromarray(rgb8, mode="RGB"),
        Image.fromarray(gray16),  # mode I;16
        gray8,
        gray8[:, :, None],
        rgb8,
        gray16,
        np.repeat(gray16[:, :, None], 3, axis=2),
        rng.random((height, width), dtype=np.float32),
        (rng.random((height, width, 3)) * 1000.0).astype(np.float64),
    ]


def invalid_images() -> list[Any]:
    """Inputs a dissector's ``preprocess`` must refuse with ``DataError``."""
    return [
        "not an image",
        np.zeros((4, 5, 6, 3), dtype=np.uint8),
        np.zeros((8, 8, 2), dtype=np.uint8),
        np.zeros((8, 8), dtype=np.complex64),
        np.full((8, 8), np.nan, dtype=np.float32),
        None,
    ]


def write_wordpiece_tokenizer(root, words: str):
    """A tiny BERT WordPiece tokenizer directory (special tokens + ``words``) for offline tests of
    BERT-based dissectors; returns ``(root, vocab_size)``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words.split()]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (root / "tokenizer_config.json").write_text('{"do_lower_case": true, "tokenizer_class": "BertTokenizer"}')
    return root, len(vocab)


def _adapted(kind: str, component: Any) -> Any:
    """The component as the engine sees it (its kind's base class, defaults filled in); a missing
    required member fails the check, naming it."""
    try:
        return adapt(kind, component)
    except ComponentError as exc:
        raise AssertionError(str(exc)) from None


def stream_of(A: Any, rows: int = 37) -> Any:
    """A ``[N, K]`` tensor as the ``ActivationStream`` a similarity receives in a run (blocks of ``rows``)."""
    from dissectkit.labelling.streaming import ActivationStream

    return ActivationStream.from_tensor(A, rows=rows)


def _max_diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def check_dissector(
    dissector: Any,
    texts: Sequence[str] = DEFAULT_TEXTS,
    images: Sequence[Any] | None = None,
    atol: float = 1e-5,
) -> dict[str, Any]:
    """Check the dissector contract; returns a few measured numbers (max deviations) for logging."""
    import torch

    dissector = _adapted("dissector", dissector)
    assert isinstance(dissector.embed_dim, int) and dissector.embed_dim > 0, "embed_dim must be a positive int"
    module = getattr(dissector, "model", None)
    if module is not None and hasattr(module, "modules"):
        training = [type(m).__name__ for m in module.modules() if getattr(m, "training", False)]
        assert not training, f"dissector.model is not in eval mode ({', '.join(sorted(set(training))[:5])} in training mode)"
    fp = dissector.fingerprint()
    assert isinstance(fp, str) and fp, "fingerprint() must return a non-empty string"
    assert fp == dissector.fingerprint(), "fingerprint() is not stable"

    # preprocess: every accepted form gives one same-shaped finite float tensor [3, H, W]
    images = list(images) if images is not None else sample_images()
    tensors = []
    for i, image in enumerate(images):
        kind = type(image).__name__ + (f" {image.shape} {image.dtype}" if isinstance(image, np.ndarray) else "")
        try:
            x = dissector.preprocess(image)
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"preprocess refused accepted input #{i} ({kind}): {exc}") from exc
        assert isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3, (
            f"preprocess(#{i}: {kind}) must return Tensor[3, H, W], got {getattr(x, 'shape', type(x))}"
        )
        assert torch.isfinite(x).all(), f"preprocess(#{i}: {kind}) produced NaN/inf"
        tensors.append(x)
    shapes = {tuple(t.shape) for t in tensors}
    assert len(shapes) == 1, f"preprocess output shape depends on the input form: {sorted(shapes)}"
    for bad in invalid_images():
        try:
            dissector.preprocess(bad)
        except DataError as exc:
            assert str(exc), "DataError without a message"
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(
                f"preprocess raised {type(exc).__name__} (not DataError) for invalid input {type(bad).__name__}: {exc}"
            ) from exc
        raise AssertionError(f"preprocess accepted invalid input {type(bad).__name__} {getattr(bad, 'shape', '')}")

    batch = torch.stack(tensors[:4])
    emb = dissector.encode_images(batch)
    txt = dissector.encode_texts(list(texts))
    for what, e, n in (("encode_images", emb, len(batch)), ("encode_texts", txt, len(texts))):
        assert tuple(e.shape) == (n, dissector.embed_dim), f"{what} gave {tuple(e.shape)}, expected ({n}, {dissector.embed_dim})"
        assert torch.isfinite(e).all(), f"{what} produced NaN/inf"
        norms = e.float().norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4), f"{what} rows are not unit norm: {norms.tolist()}"
    again_img = dissector.encode_images(batch)
    again_txt = dissector.encode_texts(list(texts))
    det = max(_max_diff(emb, again_img), _max_diff(txt, again_txt))
    assert det <= atol, f"encoding is not deterministic in eval mode (max difference {det:.2e})"

    single_img = torch.cat([dissector.encode_images(batch[i : i + 1]) for i in range(len(batch))])
    single_txt = torch.cat([dissector.encode_texts([t]) for t in texts])
    dev_img, dev_txt = _max_diff(emb, single_img), _max_diff(txt, single_txt)
    assert dev_img <= atol, f"encode_images: a batch differs from its items encoded one by one ({dev_img:.2e} > {atol})"
    assert dev_txt <= atol, f"encode_texts: a batch differs from its items encoded one by one ({dev_txt:.2e} > {atol})"
    empty = dissector.encode_texts([])
    assert tuple(empty.shape) == (0, dissector.embed_dim), "encode_texts([]) must return an empty [0, D] tensor"
    return {"batch_vs_single_images": dev_img, "batch_vs_single_texts": dev_txt, "determinism": det}


def _check_image(image: Any, where: str) -> tuple[int, int]:
    """An accepted raw image form; returns its ``(H, W)``."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.size[1], image.size[0]
    assert isinstance(image, np.ndarray), f"{where}: image must be a PIL image or a numpy array, got {type(image).__name__}"
    assert image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)), (
        f"{where}: image array must be HxW or HxWxC (C = 1, 3 or 4), got shape {image.shape}"
    )
    assert image.dtype in (np.uint8, np.uint16, np.float32, np.float64), f"{where}: unsupported image dtype {image.dtype}"
    return int(image.shape[0]), int(image.shape[1])


def check_probe(probe: Any, max_items: int = 16, has_masks: bool = False) -> dict[str, Any]:
    """Check the probe contract on up to ``max_items`` items spread over the probe; ``has_masks``:
    what its registration declares for these params (items may carry masks only then)."""
    probe = _adapted("probe", probe)
    n = len(probe)
    assert isinstance(n, int) and n > 0, f"len(probe) must be a positive int, got {n!r}"
    fp = probe.fingerprint()
    assert isinstance(fp, str) and fp and fp == probe.fingerprint(), "fingerprint() must be a stable non-empty string"
    ids = probe.ids()
    assert len(ids) == n, f"ids() gave {len(ids)} ids for {n} images"
    assert len(set(ids)) == n, "ids() are not unique"
    indices = list(range(n)) if n <= max_items else sorted({round(i * (n - 1) / (max_items - 1)) for i in range(max_items)})
    with_masks = 0
    for i in indices:
        item = probe[i]
        assert isinstance(item, ProbeItem), f"probe[{i}] must be a ProbeItem, got {type(item).__name__}"
        assert item.id == ids[i], f"probe[{i}].id is {item.id!r} but ids()[{i}] is {ids[i]!r}"
        hw = _check_image(item.image, f"probe[{i}]")
        again = probe[i]
        assert np.array_equal(np.asarray(again.image), np.asarray(item.image)), f"probe[{i}] is not deterministic"
        if item.masks:
            with_masks += 1
            for concept, mask in item.masks.items():
                mask = np.asarray(mask)
                assert mask.dtype == bool, f"probe[{i}] mask {concept!r} must be boolean, got {mask.dtype}"
                assert mask.shape == hw, f"probe[{i}] mask {concept!r} has shape {mask.shape}, image is {hw}"
    if not has_masks:
        assert with_masks == 0, "items carry masks but the probe is not declared with has_masks"
    try:
        probe[n]
    except IndexError:
        pass
    else:
        raise AssertionError(f"probe[{n}] (past the end) must raise IndexError")
    skipped = probe.skipped
    assert all(isinstance(s, tuple | list) and len(s) == 2 for s in skipped), "skipped must hold (id, reason) pairs"
    return {"n": n, "checked": len(indices), "with_masks": with_masks, "has_masks": has_masks}


def check_target(target: Any, images: Sequence[Any] | None = None) -> dict[str, Any]:
    """Check the target contract: eval mode, layers that exist and whose pooled width is their
    neuron count, a stable fingerprint, and the optional ``ground_truth`` / ``preprocess_mask``."""
    import torch

    from dissectkit.nn.capture import Capture, first_tensor
    from dissectkit.nn.layers import pool_output

    target = _adapted("target", target)
    training = [type(m).__name__ for m in target.module.modules() if m.training]
    assert not training, f"target.module is not in eval mode ({', '.join(sorted(set(training))[:5])})"
    fp = target.fingerprint()
    assert isinstance(fp, str) and fp and fp == target.fingerprint(), "fingerprint() must be a stable non-empty string"
    infos = target.layers()
    assert infos, "layers() returned no layer"
    names = [i.name for i in infos]
    assert len(set(names)) == len(names), "layers() has duplicate names"
    images = list(images) if images is not None else sample_images()[:3]
    x = torch.stack([target.preprocess(im) for im in images])
    assert torch.isfinite(x).all(), "preprocess produced NaN/inf"
    modules = {}
    for info in infos:
        try:
            modules[info.name] = target.module.get_submodule(info.name)
        except AttributeError as exc:
            raise AssertionError(f"layer {info.name!r} is not a submodule of target.module") from exc
    with Capture(modules, lambda _name, out: first_tensor(out)) as cap, torch.inference_mode():
        target.module(x)
    for info in infos:
        assert info.name in cap.outputs, f"layer {info.name!r} did not run in a forward pass"
        width = pool_output(cap.outputs[info.name]).shape[1]
        assert width == info.n_neurons, f"layer {info.name!r} declares {info.n_neurons} neurons, its output pools to {width}"
        truth = target.ground_truth(info.name)
        if truth is not None:
            assert len(truth) == info.n_neurons, f"ground_truth({info.name!r}) has {len(truth)} entries for {info.n_neurons} neurons"
    align = target.preprocess_mask
    if align is not None:
        h, w = _check_image(images[0], "image 0")
        m = np.asarray(align(np.ones((h, w), dtype=bool)))
        assert m.shape == tuple(x.shape[-2:]), f"preprocess_mask gives {m.shape}, preprocess gives {tuple(x.shape[-2:])}"
    return {"layers": len(infos), "input": tuple(x.shape[1:])}


def check_concepts(concept_set: Any) -> dict[str, Any]:
    """Concepts: a non-empty list of ``Concept`` with unique non-empty texts, the same on each read."""
    concept_set = _adapted("concepts", concept_set)
    concepts = list(concept_set.concepts)
    assert concepts, "the concept set is empty"
    assert all(isinstance(c, Concept) for c in concepts), "concepts must be dissectkit.plugin.Concept objects"
    texts = [c.text for c in concepts]
    assert all(isinstance(t, str) and t.strip() == t and t for t in texts), "concept texts must be non-empty and stripped"
    dups = sorted({t for t in texts if texts.count(t) > 1})
    assert not dups, f"duplicate concepts: {dups[:5]}"
    assert [c.text for c in concept_set.concepts] == texts, "concepts change between reads"
    return {"n": len(texts), "categories": len({c.category for c in concepts})}


def check_similarity(sim: Any, n_images: int = 256, n_concepts: int = 12, n_neurons: int = 8, seed: int = 0) -> dict[str, Any]:
    """Shape ``[K, C]``, finite, deterministic, order-equivariant, a planted match ranked first and
    ``from_embeddings`` equal to ``sim(I @ T.T, A)``, on an ``ActivationStream`` of uneven blocks."""
    import torch

    sim = _adapted("similarity", sim)
    g = torch.Generator().manual_seed(seed)
    emb_dim = 16
    images = torch.nn.functional.normalize(torch.randn(n_images, emb_dim, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(n_concepts, emb_dim, generator=g), dim=-1)
    P = images @ texts.T
    A = P[:, :n_neurons] + 0.05 * torch.randn(n_images, n_neurons, generator=g)
    S = sim(P, stream_of(A))
    assert tuple(S.shape) == (n_neurons, n_concepts), f"sim(P[N, C], A[N, K]) gave {tuple(S.shape)}, expected (K, C)"
    assert torch.isfinite(S).all(), "scores contain NaN/inf"
    assert torch.equal(S, sim(P, stream_of(A))), "scores are not deterministic"
    pk, pc = torch.randperm(n_neurons, generator=g), torch.randperm(n_concepts, generator=g)
    S_perm = sim(P[:, pc], stream_of(A[:, pk]))
    dev = float((S_perm - S[pk][:, pc]).abs().max())
    assert dev <= 1e-4 * max(1.0, float(S.abs().max())), f"scores depend on the order of neurons/concepts ({dev:.2e})"
    planted = float((S.argmax(dim=1) == torch.arange(n_neurons)).float().mean())
    assert planted >= 0.75, f"a neuron equal to a concept's similarity column ranks that concept first for only {planted:.0%}"
    lazy = sim.from_embeddings(images, texts, stream_of(A))
    dev_lazy = float((lazy - S).abs().max())
    assert dev_lazy <= 1e-4 * max(1.0, float(S.abs().max())), f"from_embeddings differs from sim(I @ T.T, A) by {dev_lazy:.2e}"
    return {"planted_top1": planted, "order_deviation": dev, "from_embeddings_deviation": dev_lazy}


def planted_evidence(n_images: int = 240, n_neurons: int = 6, seed: int = 0, masks: bool = False, layer: str = "layer"):
    """Evidence where neuron k fires on the images showing concept k (its embedding near concept
    k's text embedding, and, with ``masks``, a mask where the neuron's map is high)."""
    import torch

    from dissectkit.labelling.evidence import Evidence, SpatialBatch

    g = torch.Generator().manual_seed(seed)
    names = [f"concept {k}" for k in range(n_neurons)] + ["distractor a", "distractor b"]
    text = torch.nn.functional.normalize(torch.randn(len(names), 32, generator=g), dim=-1)
    table = dict(zip(names, text, strict=True))
    shown = torch.arange(n_images) % n_neurons
    images = torch.nn.functional.normalize(text[shown] + 0.3 * torch.randn(n_images, 32, generator=g), dim=-1)
    acts = 0.1 * torch.rand(n_images, n_neurons, generator=g)
    acts[torch.arange(n_images), shown] += 1.0
    spatial = None
    if masks:
        side = 8
        maps = 0.05 * torch.rand(n_images, n_neurons, side, side, generator=g)
        mask_list = []
        for i in range(n_images):
            k = int(shown[i])
            region = np.zeros((side, side), dtype=bool)
            region[2:6, 2:6] = True
            maps[i, k][torch.from_numpy(region)] += 1.0
            mask_list.append({names[k]: region})

        def spatial():
            for s in range(0, n_images, 32):
                yield SpatialBatch(maps[s : s + 32], mask_list[s : s + 32])

    def encode_texts(texts: list[str]):
        """Any text (methods wrap concepts in templates): the vector of the concept it names,
        plus a small text-specific part; a text naming none gets its own random vector."""
        rows = []
        for t in texts:
            seed_t = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            own = torch.randn(32, generator=torch.Generator().manual_seed(seed_t))
            named = [n for n in names if n in t]
            base = table[max(named, key=len)] if named else own
            rows.append(torch.nn.functional.normalize(base + 0.05 * own, dim=0))
        return torch.stack(rows) if rows else torch.zeros(0, 32)

    return Evidence(
        layer=layer, activations=acts, image_embeddings=images, concepts=[Concept(t) for t in names],
        encode_texts=encode_texts, spatial_maps=spatial, seed=seed, device="cpu",
    )


def check_method(method: Any, evidence: Any = None, min_planted: float | None = 0.5) -> dict[str, Any]:
    """``label(evidence)`` gives one ranked list per neuron of known concepts with finite scores in
    descending order, deterministically; on :func:`planted_evidence` (the default) at least
    ``min_planted`` of the neurons get their planted concept first (``None``: skip that check)."""
    from dissectkit.labelling.evidence import LayerLabels

    method = _adapted("method", method)
    assert isinstance(method.name, str) and method.name, "method.name must be a non-empty string"
    needs = bool(method.needs_masks)
    ev = evidence if evidence is not None else planted_evidence(masks=needs)
    labels = method.label(ev)
    assert isinstance(labels, LayerLabels), f"label() must return LayerLabels, got {type(labels).__name__}"
    K = int(ev.activations.shape[1])
    assert len(labels.neurons) == K, f"label() gave {len(labels.neurons)} neurons for a layer of {K}"
    known = set(ev.concept_texts)
    for k, ranked in enumerate(labels.neurons):
        for concept, score in ranked:
            assert concept in known, f"neuron {k}: {concept!r} is not one of the evidence's concepts"
            assert isinstance(score, float) and np.isfinite(score), f"neuron {k}: score {score!r} is not a finite float"
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True), f"neuron {k}: concepts are not ranked by descending score"
    again = method.label(ev)
    assert again.to_dict()["neurons"] == labels.to_dict()["neurons"], "label() is not deterministic"
    planted = None
    if evidence is None:
        planted = sum(labels.label(k) == f"concept {k}" for k in range(K)) / K
        if min_planted is not None:
            assert planted >= min_planted, f"planted concept ranked first for {planted:.0%} of the neurons (< {min_planted:.0%})"
    return {"neurons": K, "planted_top1": planted, "needs_masks": needs}


def sample_run_result(out_dir: Any, n_images: int = 12, n_neurons: int = 4):
    """A small finished run (two label sets, one layer with known truth) as a reporter receives it."""
    import torch

    from dissectkit.labelling.evidence import LayerLabels
    from dissectkit.results.run_result import LabelSet, RunResult

    concepts = [Concept("mass", "finding"), Concept("calcification", "finding"), Concept("skin", "anatomy")]
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(n_images, n_neurons, generator=g)
    sets = []
    for method in ("clip-dissect", "mammi"):
        ll = LayerLabels("layer4", method, {"threshold": 0.5}, [
            [(concepts[(k + j) % 3].text, round(0.9 - 0.1 * j - 0.01 * k, 4)) for j in range(2)] if k != 1 else []
            for k in range(n_neurons)
        ])
        sets.append(LabelSet("clip", "resnet", method, {"layer4": ll}))
    return RunResult(
        name="sample", out_dir=Path(out_dir), recipe={"name": "sample"}, concepts=concepts,
        probe_ids=[f"img_{i:03d}" for i in range(n_images)], label_sets=sets,
        layer_infos={"resnet": [LayerInfo("layer4", n_neurons, "conv", (n_neurons, 2, 2))]},
        measures={}, stats={"n_images": n_images, "timings": {}},
        top_images={"resnet": {"layer4": [acts[:, k].argsort(descending=True, stable=True)[:5].tolist() for k in range(n_neurons)]}},
    )


def _snapshot(root: Any) -> dict[str, bytes]:
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_reporter(reporter: Any, tmp_dir: Any, run_result: Any = None) -> dict[str, Any]:
    """``write(run_result, out_dir)`` writes non-empty files inside ``out_dir`` only, leaves the
    result unchanged, and writes the same bytes when run twice (deterministic)."""
    reporter = _adapted("reporter", reporter)
    tmp_dir = Path(tmp_dir)
    out = tmp_dir / "run"
    out.mkdir(parents=True, exist_ok=True)
    result = run_result if run_result is not None else sample_run_result(out)
    before = result.labels_payload()
    outside = _snapshot(tmp_dir)
    reporter.write(result, out)
    files = _snapshot(out)
    assert files, "the reporter wrote no file into out_dir"
    empty = [name for name, data in files.items() if not data]
    assert not empty, f"the reporter wrote empty files: {empty[:5]}"
    leaked = sorted(set(_snapshot(tmp_dir)) - set(outside) - {f"run/{n}" for n in files})
    assert not leaked, f"the reporter wrote outside out_dir: {leaked[:5]}"
    assert result.labels_payload() == before, "the reporter changed the run result"
    reporter.write(result, out)
    changed = sorted(n for n, data in _snapshot(out).items() if files.get(n) != data)
    assert not changed, f"a second write gave different files: {changed[:5]}"
    return {"files": sorted(files), "bytes": sum(len(d) for d in files.values())}
