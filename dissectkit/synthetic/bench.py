"""``dissectkit bench synthetic``: every method (and similarity) x every offline dissector on the
synthetic targets, scored against the known truth (docs/synthetic.md, "Benchmark"); every figure comes
from running ``dk.run``."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DissectkitError
from dissectkit.synthetic import vocab

TARGETS = ("synth-effnet-concepts", "synth-effnet-malignancy", "synth-effnet-general")
INNER_LAYERS = ("blocks.1", "blocks.3", "blocks.5")
OUTPUT_LAYER = "classifier"
DEFAULT_METHOD = "clip-dissect:soft_wpmi"
MAMMI_TEMPLATE = "There is {} in the breast."  # words the synthetic reports use
# CLIP-Dissect's final-layer protocol: each true name once, among distractor words (no synonyms,
# no BI-RADS descriptors that also name the finding, which an exact match would count wrong)
PROTOCOL_GROUPS = ("findings", "distractors")


def lexical_embed(texts: list[str], dim: int = 2048):
    """An independent text space: L2-normalised hashed counts of words and character 3-grams."""
    import re

    import torch

    out = np.zeros((len(texts), dim), np.float32)
    for i, t in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", str(t).lower())
        feats = [f"w:{w}" for w in words]
        for w in words:
            m = f"<{w}>"
            feats += [f"c:{m[j:j + 3]}" for j in range(max(len(m) - 2, 1))]
        for f in feats:
            out[i, zlib.crc32(f.encode()) % dim] += 1.0
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)
    return torch.from_numpy(out)


def offline_dissectors(log: Callable[[str], None]) -> list[str]:
    """Dissectors that build without downloads and without extra parameters."""
    import dissectkit as dk

    names = []
    for spec in dk.list_components("dissector"):
        try:
            dk.create("dissector", spec.name, _ctx=BuildContext(device="cpu", offline=True))
            names.append(spec.name)
        except (DissectkitError, OSError, ValueError, RuntimeError) as exc:
            log(f"  skipping dissector {spec.name}: {str(exc).splitlines()[0][:120]}")
    return names


def bench_recipes(n: int, seed: int, out_dir: Path, device: str, batch_size: int, dissectors: list[str]) -> list[dict[str, Any]]:
    """Two recipes sharing one cache: the mask-free methods on every benchmark layer, and the
    mask-based ones (``netdissect``) on the inner layers only (where they are compared)."""
    import dissectkit as dk

    free: list[dict[str, Any]] = [
        {"name": "clip-dissect", "label": f"clip-dissect:{spec.name}", "params": {"similarity": spec.name}}
        for spec in dk.list_components("similarity")
    ]
    masked: list[dict[str, Any]] = []
    for spec in dk.list_components("method"):
        if spec.name == "clip-dissect":
            continue
        params = {"template": MAMMI_TEMPLATE} if spec.name == "mammi" else {}
        method = dk.create("method", spec.name, **params)
        (masked if method.needs_masks else free).append({"name": spec.name, "label": spec.name, "params": params})
    common = {
        "schema_version": 1,
        "dissectors": [{"name": d} for d in dissectors],
        "probe": {"name": "synth-mammo", "params": {"n": n, "seed": seed}},
        "concepts": {"name": "synth-mammo-concepts"},
        "runtime": {"device": device, "batch_size": batch_size, "offline": True, "seed": seed,
                    "cache_dir": str(out_dir / "cache")},
    }
    recipes = [{
        **common, "name": "bench_synthetic", "methods": free,
        "targets": [{"name": t, "layers": [*INNER_LAYERS, OUTPUT_LAYER]} for t in TARGETS],
        "output": {"dir": str(out_dir / "run_maskfree"), "reporters": ["json"]},
    }]
    # every concept ranked on the protocol's output layer: the truth's rank is then exact
    ranked = [{**m, "params": {**m["params"], "top_m": 10_000}} if m["name"] == "clip-dissect" else m for m in free]
    recipes.append({
        **common, "name": "bench_synthetic_protocol", "methods": ranked,
        "concepts": {"name": "synth-mammo-concepts", "params": {"groups": list(PROTOCOL_GROUPS)}},
        "targets": [{"name": "synth-effnet-concepts", "layers": [OUTPUT_LAYER]}],
        "output": {"dir": str(out_dir / "run_protocol"), "reporters": ["json"]},
    })
    if masked:
        recipes.append({
            **common, "name": "bench_synthetic_masks", "methods": masked,
            "targets": [{"name": t, "layers": list(INNER_LAYERS)} for t in TARGETS],
            "output": {"dir": str(out_dir / "run_masks"), "reporters": ["json"]},
        })
    return recipes


def zero_shot(result: Any, n: int) -> dict[str, dict[str, float]]:
    """Per dissector and finding: AUC of cos(image, finding text) for the finding's presence."""
    import torch

    from dissectkit.synthetic.training import auc, concept_targets

    labels = np.array([concept_targets(result.probe[i].labels) for i in range(n)])
    out: dict[str, dict[str, float]] = {}
    for d_label, dissector in (result.dissectors or {}).items():
        img = torch.as_tensor(result.image_embeddings(d_label)).float()
        txt = torch.as_tensor(dissector.encode_texts(list(vocab.CONCEPT_CLASSES))).float().cpu()
        sims = (img @ txt.T).numpy()
        out[d_label] = {c: auc(sims[:, j], labels[:, j]) for j, c in enumerate(vocab.CONCEPT_CLASSES)}
    return out


def truth_sets(concept_texts: set[str]) -> list[set[str]]:
    return [{s for s in vocab.SYNONYMS[c] if s in concept_texts} | {c} for c in vocab.CONCEPT_CLASSES]


PUBLISHED = ("clip_cos", "mpnet_cos", "rank_mean", "rank_median", "rank_n", "medclip_pair_cos", "clip_pair_cos",
             "mpnet_pair_cos")
CLIP_DISSECT_LIST = 5  # the concepts of a clip-dissect list that MAMMI's measures read (its default top_m)


def output_layer_rows(result: Any, concept_set: str, encoders: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Output layer of ``synth-effnet-concepts`` against the truth, one row per dissector x method, with
    the published metrics (:func:`dissectkit.labelling.evaluation.evaluate_layer`: exact top-1 / top-5,
    the truth's rank, MAMMI's hit rate / precision / recall / F1 with ddof-0 standard errors and, given
    ``encoders``, the CLIP / MPNet / MedCLIP cosines), plus ``top1_named`` (the label is the name or one
    of its synonyms) and ``cos_independent`` (the cosine in dissectkit's lexical space). The truth is the
    name (CLIP-Dissect) and the name with its synonyms (MAMMI); a clip-dissect list is read to its
    first five concepts for MAMMI's measures."""
    from dissectkit.labelling import measures
    from dissectkit.labelling.evaluation import evaluate_layer

    sets = truth_sets({c.text for c in result.concepts})
    truth = {k: [c, *sorted(sets[k] - {c})] for k, c in enumerate(vocab.CONCEPT_CLASSES)}
    rows = []
    for ls in sorted(result.label_sets, key=lambda s: (s.dissector, s.method)):
        if ls.target != "synth-effnet-concepts" or OUTPUT_LAYER not in ls.layers:
            continue
        ll = ls.layers[OUTPUT_LAYER]
        acc = measures.final_layer_accuracy(ll, list(vocab.CONCEPT_CLASSES), text_encoder=lexical_embed)
        top = CLIP_DISSECT_LIST if ls.method.startswith("clip-dissect") else None
        ev = evaluate_layer(ll, truth, encoders, list_top=top)
        named = float(np.mean([ll.label(k) in sets[k] for k in range(len(sets))]))
        rows.append({
            "concepts": concept_set, "dissector": ls.dissector, "method": ls.method, "top1": ev["top1"],
            "top1_named": named, "top5": ev["top5"], "cos_independent": acc["cos"],
            **{k: ev.get(k) for k in ("hit_rate", "precision", "recall", "f1")},
            **{f"{k}_se": ev.get(f"{k}_se") for k in ("hit_rate", "precision", "recall", "f1")},
            **{k: ev.get(k) for k in PUBLISHED},
        })
    return rows


QUALITY_SCORES = ("sim_corr", "top_auc", "sim_z")
RELATED_COS = 0.5  # a wrong label this close to a true text in the independent space is "related"


def quality_rows(results: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Output layer of ``synth-effnet-concepts``: per (concept set, dissector, method) and pooled over
    every label set of ``results``, the mean quality scores of right and wrong top-1 labels (right =
    the finding's name or a synonym; neurons without a label or a score left out) and the AUC of
    each score separating right from wrong labels. A last pooled row leaves out the wrong labels
    that are *related* to the truth (cosine >= ``RELATED_COS`` to the name or a synonym in the
    independent text space, e.g. "spiculated mass" for "spiculated margin")."""
    from dissectkit.synthetic.training import auc

    items: list[tuple[str, str, str, bool, dict[str, float]]] = []
    related: list[bool] = []
    for concept_set, result in results:
        if result is None:
            continue
        sets = truth_sets({c.text for c in result.concepts})
        for ls in sorted(result.label_sets, key=lambda s: (s.dissector, s.method)):
            quality = ls.columns.get(OUTPUT_LAYER)
            if ls.target != "synth-effnet-concepts" or OUTPUT_LAYER not in ls.layers or not quality:
                continue
            for k, label in enumerate(ls.layers[OUTPUT_LAYER].top1()):
                if label is None or quality["sim_corr"][k] is None:
                    continue
                scores = {q: float(quality[q][k]) for q in QUALITY_SCORES}
                items.append((concept_set, ls.dissector, ls.method, label in sets[k], scores))
                e = lexical_embed([label, *sorted(sets[k])])
                related.append(label not in sets[k] and float((e[1:] @ e[0]).max()) >= RELATED_COS)

    def row(name: dict[str, str], chosen: list[tuple[str, str, str, bool, dict[str, float]]]) -> dict[str, Any]:
        right = np.array([it[3] for it in chosen], dtype=bool)
        out: dict[str, Any] = {**name, "n_right": int(right.sum()), "n_wrong": int((~right).sum())}
        for q in QUALITY_SCORES:
            vals = np.array([it[4][q] for it in chosen], dtype=np.float64)
            out[f"{q}_right"] = float(vals[right].mean()) if right.any() else None
            out[f"{q}_wrong"] = float(vals[~right].mean()) if (~right).any() else None
            out[f"auc_{q}"] = auc(vals, right) if len(chosen) else float("nan")
        return out

    keys = list(dict.fromkeys(it[:3] for it in items))
    rows = [row({"concepts": c, "dissector": d, "method": m}, [it for it in items if it[:3] == (c, d, m)])
            for c, d, m in keys]
    rows.append(row({"concepts": "all", "dissector": "all", "method": "all"}, items))
    rows.append(row({"concepts": "all", "dissector": "all", "method": "all, wrong = unrelated"},
                    [it for it, rel in zip(items, related, strict=True) if not rel]))
    return rows


def score(result: Any, n: int, protocol: Any = None, encoders: dict[str, Any] | None = None) -> dict[str, Any]:
    """All benchmark figures from a finished run (``protocol``: the run on ``PROTOCOL_GROUPS``;
    ``encoders``: the text encoders of the published metrics, by name: clip, mpnet, medclip)."""
    from dissectkit.labelling import measures

    sets = {(ls.dissector, ls.target, ls.method): ls for ls in result.label_sets}
    agreement_rows, compare_rows = [], []
    output_rows = output_layer_rows(protocol, "names + distractors", encoders) if protocol is not None else []
    output_rows += output_layer_rows(result, "full set", encoders)
    for (d, t, m), ls in sorted(sets.items()):
        if m != "netdissect" and (d, t, "netdissect") in sets:
            ref = sets[(d, t, "netdissect")]
            for layer in INNER_LAYERS:
                if layer in ls.layers and layer in ref.layers:
                    ag = measures.agreement(ls.layers[layer], ref.layers[layer])
                    agreement_rows.append({"dissector": d, "target": t, "method": m, "layer": layer, **ag.to_dict()})
    for d in sorted({k[0] for k in sets}):
        for regime_a, regime_b in (("synth-effnet-general", "synth-effnet-concepts"),
                                   ("synth-effnet-concepts", "synth-effnet-malignancy")):
            a, b = sets.get((d, regime_a, DEFAULT_METHOD)), sets.get((d, regime_b, DEFAULT_METHOD))
            if a is None or b is None:
                continue
            for layer in (*INNER_LAYERS,):
                g = measures.global_threshold_counts(a.layers[layer], b.layers[layer], result.concepts)
                compare_rows.append({
                    "dissector": d, "a": regime_a, "b": regime_b, "layer": layer,
                    "threshold_a": measures.layer_threshold(a.layers[layer]),
                    "threshold_b": measures.layer_threshold(b.layers[layer]),
                    "global_threshold": g["threshold"],
                    "above_a": g["a"]["above"], "above_b": g["b"]["above"],
                    "broad_a": g["a"]["broad_category"], "broad_b": g["b"]["broad_category"],
                })
    return {
        "output_layer": output_rows,
        "agreement_with_netdissect": agreement_rows,
        "zero_shot_auc": zero_shot(result, n),
        "regimes": compare_rows,
        "quality_vs_truth": quality_rows([("names + distractors", protocol), ("full set", result)]),
    }


def run_benchmark(n: int = 1000, seed: int = 0, out_dir: Path = Path("runs/bench_synthetic"), device: str = "auto",
                  batch_size: int = 64, log: Callable[[str], None] = print,
                  encoders: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run everything, score it, write ``bench_synthetic.json`` / ``.md`` and return the figures."""
    import dissectkit as dk
    from dissectkit.host.recipe import recipe_from_dict

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log("Finding the dissectors available offline ...")
    dissectors = offline_dissectors(log)
    recipes = bench_recipes(n, seed, out_dir, device, batch_size, dissectors)
    result = protocol = None
    for data in recipes:
        log(f"Running {data['name']}: {len(data['methods'])} method(s) x {len(dissectors)} dissector(s) x "
            f"{len(data['targets'])} target(s) on {n} images ...")
        res = dk.run(recipe_from_dict(data))
        if data["name"] == "bench_synthetic_protocol":
            protocol = res
        elif result is None:
            result = res
        else:
            result.label_sets.extend(res.label_sets)
    figures = {"n_images": n, "seed": seed, "dissectors": dissectors, **score(result, n, protocol, encoders)}
    (out_dir / "bench_synthetic.json").write_text(json.dumps(_clean(figures), indent=1) + "\n")
    (out_dir / "bench_synthetic.md").write_text(to_markdown(figures))
    return figures


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        return None if x != x else round(x, 4)
    return x


def _f(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else (f"{v:.3f}" if isinstance(v, float) else str(v))


def tables(figures: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, columns, rows) of every table."""
    out = []
    cols = ["concepts", "dissector", "method", "top1", "top1_named", "top5", "rank_mean", "rank_median", "clip_cos",
            "mpnet_cos", "cos_independent", "hit_rate", "precision", "recall", "f1", "medclip_pair_cos", "clip_pair_cos",
            "mpnet_pair_cos"]
    out.append(("Output layer of synth-effnet-concepts vs the truth (published metrics; '-': no encoder given)", cols,
                [[_f(r.get(c)) for c in cols] for r in figures["output_layer"]]))
    cols = ["dissector", "target", "method", "layer", "top1", "top5_jaccard", "kappa"]
    out.append(("Agreement with netdissect (inner layers)", cols,
                [[_f(r[c]) for c in cols] for r in figures["agreement_with_netdissect"]]))
    for d, aucs in figures["zero_shot_auc"].items():
        vals = [aucs[f] for f in vocab.FINDINGS if aucs[f] == aucs[f]]
        rows = [[c, _f(aucs[c])] for c in vocab.CONCEPT_CLASSES]
        rows.append(["mean over findings", _f(float(np.mean(vals)) if vals else None)])
        out.append((f"Zero-shot AUC of {d}", ["concept", "AUC"], rows))
    cols = ["dissector", "a", "b", "layer", "threshold_a", "threshold_b", "global_threshold", "above_a", "above_b", "broad_a", "broad_b"]
    out.append((f"General / domain / fine-tuned ({DEFAULT_METHOD})", cols,
                [[_f(r[c]) if not isinstance(r[c], dict) else json.dumps(r[c], sort_keys=True) for c in cols]
                 for r in figures["regimes"]]))
    cols = ["concepts", "dissector", "method", "n_right", "n_wrong"]
    for q in QUALITY_SCORES:
        cols += [f"{q}_right", f"{q}_wrong", f"auc_{q}"]
    out.append(("Label quality (no ground truth) vs correctness, output layer: AUC separating right from wrong labels",
                cols, [[_f(r[c]) for c in cols] for r in figures.get("quality_vs_truth", [])]))
    return out


def to_markdown(figures: dict[str, Any]) -> str:
    lines = [f"# dissectkit bench synthetic ({figures['n_images']} images, seed {figures['seed']})", ""]
    for title, cols, rows in tables(figures):
        lines += [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def print_tables(figures: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    for title, cols, rows in tables(figures):
        keep = [i for i, c in enumerate(cols) if not c.startswith("broad")]  # category counts: see the .md
        table = Table(title=title, title_justify="left")
        for i in keep:
            table.add_column(cols[i])
        for r in rows:
            table.add_row(*(r[i] for i in keep))
        console.print(table)
