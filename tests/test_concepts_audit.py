"""``dissectkit concepts audit``: duplicates after normalisation (a trailing space), concepts under two
categories, text and probe near-duplicates, concepts no image is close to; its groups file read by a
recipe changes group-level accuracy; on the synthetic set it finds the planted near-synonyms."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

import dissectkit as dk
from dissectkit.builtin.concepts.groups import audit_concepts, normalise
from dissectkit.cli.app import main
from dissectkit.synthetic import vocab

ROOT = Path(__file__).resolve().parents[1]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _workbook(path: Path) -> Path:
    """Sheet 'Findings': each synthetic finding, first with a trailing space, then as it is; sheet
    'Materials': 'membrane' (also a Findings entry) and two everyday words."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Findings"
    names = [f"{f} " for f in vocab.FINDINGS] + list(vocab.FINDINGS) + ["membrane"]
    ws.append(["lesion"])
    for n in names:
        ws.append([n])
    other = wb.create_sheet("Materials")
    other.append(["materials"])
    for n in ("membrane", "glass", "timber"):
        other.append([n])
    wb.save(path)
    return path


def _recipe(tmp_path: Path, workbook: Path, groups: Path | None = None) -> Path:
    concepts = {"name": "mcd-workbook", "params": {"path": str(workbook)}, **({"groups": str(groups)} if groups else {})}
    path = tmp_path / ("grouped.yaml" if groups else "recipe.yaml")
    path.write_text(yaml.safe_dump({
        "schema_version": 1, "name": "audit", "dissector": "synth-clip",
        "target": {"name": "synth-effnet-concepts", "layers": ["classifier"]},
        "probe": {"name": "synth-mammo", "params": {"n": 120, "seed": 0}}, "concepts": concepts,
        "method": {"name": "clip-dissect", "params": {"similarity": "soft_wpmi"}},
        "output": {"dir": str(tmp_path / ("run_grouped" if groups else "run")), "reporters": ["json"]},
        "runtime": {"device": "cpu", "batch_size": 30, "offline": True, "seed": 0,
                    "cache_dir": str(tmp_path / "cache")}}))
    return path


def test_normalise_folds_case_space_punctuation_and_plural():
    assert normalise(" Spiculated  Margins ") == normalise("spiculated margin") == "spiculated margin"
    assert normalise("fine-linear branching calcifications") == normalise("Fine linear branching calcification")
    assert normalise("Calcifications") == normalise("calcification") and normalise("mass") == "mass"
    assert normalise("opacities") == "opacity" and normalise("boxes") == "box"


def test_audit_cli_lists_the_trailing_space_duplicate_and_the_two_categories(tmp_path, capsys):
    with pytest.warns(UserWarning, match="listed more than once"):
        book = _workbook(tmp_path / "concepts.xlsx")
        recipe = _recipe(tmp_path, book)
        assert main(["concepts", "audit", str(recipe), "--no-probe", "-o", str(tmp_path / "audit")]) == 0
    rows = _read(tmp_path / "audit" / "audit.csv")
    dups = {(r["concept"], r["other"]) for r in rows if r["check"] == "duplicate"}
    assert ("spiculated margin ", "spiculated margin") in dups  # the trailing space
    assert len([d for d in dups if d[0].strip() in vocab.FINDINGS]) == len(vocab.FINDINGS)
    multi = [r for r in rows if r["check"] == "multi_category"]
    assert [(r["concept"], r["category"], r["other_category"]) for r in multi] == [("membrane", "Findings", "Materials")]
    assert not [r for r in rows if r["check"] in ("probe_indistinguishable", "no_close_image")]  # --no-probe
    groups = yaml.safe_load((tmp_path / "audit" / "audit_groups.yaml").read_text())["groups"]
    assert groups["spiculated margin"][:2] == ["spiculated margin ", "spiculated margin"]
    assert "audit_groups.yaml" in capsys.readouterr().out.replace("\n", "")


def test_the_audit_groups_file_changes_group_level_accuracy(tmp_path):
    with pytest.warns(UserWarning):
        book = _workbook(tmp_path / "concepts.xlsx")
        assert main(["concepts", "audit", str(_recipe(tmp_path, book)), "--no-probe", "-o", str(tmp_path / "audit")]) == 0
    groups = tmp_path / "audit" / "audit_groups.yaml"
    plain = dk.run(dk.load_recipe(_recipe(tmp_path, book)))
    grouped = dk.run(dk.load_recipe(_recipe(tmp_path, book, groups)))
    m0 = plain.measures[plain.label_sets[0].key]["classifier"]
    m1 = grouped.measures[grouped.label_sets[0].key]["classifier"]
    assert "top1_group" not in m0  # no groups: the exact level only
    assert m1["top1"] == m0["top1"]  # the same labels ...
    assert m1["top1_group"] > m1["top1"]  # ... right at group level when they name the truth with a trailing space
    assert m1["top1_group"] >= 0.5
    concepts = {c.text: c.group for c in grouped.concepts}
    assert concepts["spiculated margin "] == concepts["spiculated margin"] == "spiculated margin"


def test_audit_finds_the_synthetic_sets_planted_near_synonyms():
    import torch

    from dissectkit.cli.commands.concepts import _image_embeddings
    from dissectkit.engine.resolve import resolve

    r = dk.load_recipe(ROOT / "recipes" / "study_synthetic.yaml", ["probe.params.n=200", "runtime.device=cpu"])
    res = resolve(r, kinds=("dissector", "concepts", "probe"))
    d = res.dissectors["synth-clip"]

    def encode(texts):
        with torch.inference_mode():
            return d.encode_texts(texts)

    audit = audit_concepts(res.concepts, None, encode, _image_embeddings(d, res.probe, "cpu", 100, None))
    group = {m: name for name, members in audit.groups.items() for m in members}
    texts = {c.text for c in res.concepts}
    pairs = [(a, b) for syns in vocab.SYNONYMS.values() for i, a in enumerate(syns) for b in syns[i + 1:]
             if a in texts and b in texts]
    found = [p for p in pairs if group.get(p[0]) is not None and group.get(p[0]) == group.get(p[1])]
    print(f"planted synonym pairs in one group: {len(found)} of {len(pairs)}")
    assert len(found) >= 0.8 * len(pairs)  # the planted synonyms of a class share a group
    for name, members in audit.groups.items():  # and no group joins two classes
        classes = {c for c, syns in vocab.SYNONYMS.items() for m in members if m in syns}
        assert len(classes) <= 1, (name, members)
    assert audit.of("probe_indistinguishable") and audit.of("no_close_image")
