"""Label stability (issue 23): does it separate right from wrong labels, what does it cost, how much memory.

Prints, in one run:

(a) truth: the output layer of ``synth-effnet-concepts`` labelled by ``synth-clip`` on ``--n`` images
    (default 1,000, seed 0) with every mask-free method and similarity (clip-dissect x 5 similarities
    and MAMMI, as ``dissectkit bench synthetic`` runs them) on both concept sets (the quickstart's
    names + distractors, and the full set): the AUC of ``stability`` separating right from wrong top-1
    labels (right = the finding's name or a synonym), next to ``sim_z``'s, ``sim_corr``'s and
    ``top_auc``'s on the same labels; and with a groups file of the synonyms, ``stability_group`` and
    group-level accuracy;
(b) cost: for one synthetic layer (K=2,048 neurons, C=2,000 concepts, D=512) streamed from a
    temporary cache at ``--sizes`` (default N = 10,000 and 100,000), the wall time of one labelling
    (``method.label``) and of the stability columns with B = 20 (``method.label_resampled`` + the
    columns), their ratio, and the peak resident memory of each above the level before it
    (``/proc/self/clear_refs`` + ``VmHWM``), in the same process, for ``--methods`` (default
    soft_wpmi, the default similarity; also cos, cos3, wpmi, rank_reorder, mammi).

    OMP_NUM_THREADS=1 python benchmarks/stability.py                 # both parts
    OMP_NUM_THREADS=1 python benchmarks/stability.py --parts b --sizes 100000 --methods soft_wpmi,mammi
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

MASK_FREE = ("soft_wpmi", "wpmi", "cos", "cos3", "rank_reorder", "mammi")
SCORES = ("stability", "stability_group", "sim_z", "sim_corr", "top_auc")


def part_a(n: int, out: Path, columns: dict | None = None) -> dict:
    import numpy as np

    import dissectkit as dk
    from dissectkit.host.recipe import recipe_from_dict
    from dissectkit.labelling.groups import write_groups
    from dissectkit.synthetic import vocab
    from dissectkit.synthetic.bench import (
        MAMMI_TEMPLATE,
        PROTOCOL_GROUPS,
        RELATED_COS,
        lexical_embed,
        truth_sets,
    )
    from dissectkit.synthetic.training import auc

    groups_file = write_groups(out / "synonym_groups.yaml", {c: list(vocab.SYNONYMS[c]) for c in vocab.CONCEPT_CLASSES})
    methods = [{"name": "clip-dissect", "label": f"clip-dissect:{s}", "params": {"similarity": s}} for s in MASK_FREE[:-1]]
    methods.append({"name": "mammi", "label": "mammi", "params": {"template": MAMMI_TEMPLATE}})
    items, related, group_rows = [], [], []
    for tag, groups in (("names + distractors", list(PROTOCOL_GROUPS)), ("full set", None)):
        concepts = {"name": "synth-mammo-concepts", **({"params": {"groups": groups}} if groups else {}),
                    "groups": str(groups_file)}
        recipe = recipe_from_dict({
            "name": "stability_truth", "dissector": "synth-clip", "methods": methods,
            "target": {"name": "synth-effnet-concepts", "layers": ["classifier"]},
            "probe": {"name": "synth-mammo", "params": {"n": n, "seed": 0}}, "concepts": concepts,
            "output": {"dir": str(out / tag.replace(" ", "_").replace("+", "and")), "reporters": ["json"],
                       "columns": columns or {}},
            "runtime": {"device": "cpu", "batch_size": 100, "offline": True, "seed": 0},
        })
        t = time.perf_counter()
        result = dk.run(recipe)
        print(f"  ran {tag}: {time.perf_counter() - t:.1f} s", flush=True)
        sets = truth_sets({c.text for c in result.concepts})
        for ls in result.label_sets:
            cols = ls.columns["classifier"]
            m = result.measures[ls.key]["classifier"]
            group_rows.append({"concepts": tag, "method": ls.method, "top1": m["top1"], "top1_group": m.get("top1_group")})
            for k, label in enumerate(ls.layers["classifier"].top1()):
                if label is None or cols["sim_corr"][k] is None or cols["stability_group"][k] is None:
                    continue
                items.append((label in sets[k], {s: float(cols[s][k]) for s in SCORES}))
                e = lexical_embed([label, *sorted(sets[k])])
                related.append(label not in sets[k] and float((e[1:] @ e[0]).max()) >= RELATED_COS)

    def aucs(chosen):
        right = np.array([r for r, _ in chosen], dtype=bool)
        return {"n_right": int(right.sum()), "n_wrong": int((~right).sum()),
                **{f"auc_{s}": auc(np.array([v[s] for _, v in chosen]), right) for s in SCORES},
                **{f"mean_{s}_right": float(np.mean([v[s] for r, v in chosen if r])) for s in SCORES},
                **{f"mean_{s}_wrong": float(np.mean([v[s] for r, v in chosen if not r])) for s in SCORES}}

    res = {"all": aucs(items), "wrong = unrelated": aucs([it for it, rel in zip(items, related, strict=True) if not rel]),
           "accuracy": group_rows}
    return res


def part_b(sizes: list[int], methods: list[str], resamples: int) -> list[dict]:
    import torch
    from scale import C, D, Peak, method_for, write_layer

    from dissectkit.builtin.similarities import LazyP  # noqa: F401 - the import cost is not timed
    from dissectkit.labelling.evidence import Evidence
    from dissectkit.labelling.stability import Resamples, label_indices, stability_columns

    rows = []
    for N in sizes:
        with tempfile.TemporaryDirectory(prefix="dk-stability-") as tmp:
            entry, V = write_layer(Path(tmp), N, 512)
            g = torch.Generator().manual_seed(1)
            table = torch.nn.functional.normalize(torch.randn(C + 1, D, generator=g), dim=1)

            def encode(texts, table=table):  # "concept i" in any template -> row i; other texts -> row C
                found = [re.search(r"concept (\d+)", t) for t in texts]
                return table[[int(f.group(1)) if f else C for f in found]]

            for name in methods:
                method = method_for(name)

                def chunks(entry=entry):
                    for c in range(entry.n_chunks):
                        values, valid = entry.read_chunk(c)
                        yield values[valid]

                ev = Evidence("layer", None, V, [f"concept {i}" for i in range(C)], encode, activation_chunks=chunks)
                with Peak() as lab:
                    labels = method.label(ev)
                gc.collect()
                with Peak() as stab:
                    got = method.label_resampled(ev, labels, Resamples(resamples, N, 0))
                    cols = stability_columns(got, label_indices(labels, ev.concept_texts))
                mean = sum(v for v in cols["stability"] if v is not None) / max(1, sum(v is not None for v in cols["stability"]))
                row = {"N": N, "method": name, "B": resamples, "label_s": round(lab.seconds, 2),
                       "label_peak_mb": round(lab.mb, 1), "stability_s": round(stab.seconds, 2),
                       "stability_peak_mb": round(stab.mb, 1), "ratio": round(stab.seconds / lab.seconds, 2),
                       "mean_stability": round(mean, 3)}
                print("  " + json.dumps(row), flush=True)
                rows.append(row)
                del labels, got, cols
                gc.collect()
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="ab")
    ap.add_argument("--n", type=int, default=1000, help="probe images of part (a)")
    ap.add_argument("--sizes", default="10000,100000", help="N of part (b)")
    ap.add_argument("--methods", default="soft_wpmi,cos,mammi", help=f"part (b), of {','.join(MASK_FREE)}")
    ap.add_argument("--resamples", type=int, default=20)
    ap.add_argument("--columns", default="{}", help="part (a): output.columns as JSON, e.g. '{\"stability\": {\"resamples\": 50}}'")
    ap.add_argument("--out", default=None, help="folder for part (a)'s runs (default: a temporary one)")
    args = ap.parse_args(argv)
    import torch

    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    if "a" in args.parts:
        print("(a) stability vs the truth, output layer of synth-effnet-concepts", flush=True)
        with tempfile.TemporaryDirectory(prefix="dk-stability-a-") as tmp:
            res = part_a(args.n, Path(args.out or tmp), json.loads(args.columns))
        print(json.dumps(res, indent=1), flush=True)
    if "b" in args.parts:
        print(f"(b) cost of stability (B={args.resamples}) vs one labelling, streamed from a cache", flush=True)
        part_b([int(x) for x in args.sizes.split(",")], args.methods.split(","), args.resamples)


if __name__ == "__main__":
    main()
