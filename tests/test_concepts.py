"""Concept sets: text, table, workbook, bundled sets and the from-reports builder."""

from __future__ import annotations

import warnings

import pytest

import dissectkit as dk
from dissectkit.base.errors import DataError
from dissectkit.base.types import Concept


def test_text_blank_and_duplicates(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("mass\n\ncalcification\nmass\n  \nasymmetry\n")
    with pytest.warns(UserWarning, match="dropped 1 duplicate"):
        cs = dk.create("concepts", "text", path=str(f))
    assert [c.text for c in cs.concepts] == ["mass", "calcification", "asymmetry"]
    f.write_text("\n\n")
    with pytest.raises(DataError, match="holds no concepts"):
        dk.create("concepts", "text", path=str(f))
    f.write_text("a\na\n")
    with pytest.raises(DataError, match="holds no concepts"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f.write_text("")
        dk.create("concepts", "text", path=str(f))
    with pytest.raises(DataError, match="not found"):
        dk.create("concepts", "text", path=str(tmp_path / "nope.txt"))


def test_table_csv_and_yaml(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("concept,category,subcategory\nspiculated,mass,margin\noval,mass,shape\ndog,distractor,\n")
    assert dk.create("concepts", "table", path=str(f)).concepts == [
        Concept("spiculated", "mass", "margin"), Concept("oval", "mass", "shape"), Concept("dog", "distractor", None)]
    f.write_text("term,category\nx,y\n")
    with pytest.raises(DataError, match=r"'concept'.*Columns found: 'term', 'category'"):
        dk.create("concepts", "table", path=str(f))
    y = tmp_path / "c.yaml"
    y.write_text("mass:\n  shape: [oval, round]\ndistractor: [cat]\n")
    assert dk.create("concepts", "table", path=str(y)).concepts == [
        Concept("oval", "mass", "shape"), Concept("round", "mass", "shape"), Concept("cat", "distractor")]
    y.write_text("- {concept: oval, category: mass}\n- round\n")
    assert [c.text for c in dk.create("concepts", "table", path=str(y)).concepts] == ["oval", "round"]


def test_mcd_workbook(tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Mass"
    ws.append(["shape", "margin"])
    ws.append(["oval", "spiculated"])
    ws.append(["round", None])
    ws2 = wb.create_sheet("Calcification")
    ws2.append(["morphology"])
    ws2.append(["pleomorphic"])
    wb.save(tmp_path / "c.xlsx")
    cs = dk.create("concepts", "mcd-workbook", path=str(tmp_path / "c.xlsx")).concepts
    assert cs == [Concept("oval", "Mass", "shape"), Concept("round", "Mass", "shape"),
                  Concept("spiculated", "Mass", "margin"), Concept("pleomorphic", "Calcification", "morphology")]


def test_mcd_workbook_last_listing_and_spaces_as_published(tmp_path):
    """A concept under two categories takes the last (the published lookup is overwritten sheet by
    sheet); spaces around texts, sheet titles and headers are kept as the workbook has them."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Findings"
    ws.append(["other", "mass "])
    ws.append(["foreign body including implants", "oval"])
    ws.append(["oval ", "   "])
    ws2 = wb.create_sheet("General ")
    ws2.append(["objects"])
    ws2.append(["foreign body including implants"])
    wb.save(tmp_path / "w.xlsx")
    with pytest.warns(UserWarning, match="listed more than once"):
        cs = dk.create("concepts", "mcd-workbook", path=str(tmp_path / "w.xlsx")).concepts
    assert cs == [Concept("foreign body including implants", "General ", "objects"),
                  Concept("oval ", "Findings", "other"), Concept("oval", "Findings", "mass ")]
    with pytest.warns(UserWarning, match="category of its first listing"):
        first = dk.create("concepts", "mcd-workbook", path=str(tmp_path / "w.xlsx"), duplicates="first",
                          whitespace="strip").concepts
    assert first == [Concept("foreign body including implants", "Findings", "other"),
                     Concept("oval", "Findings", "other")]


def test_bundled_sets():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no duplicates in our files
        mb = dk.create("concepts", "mammo-birads").concepts
        cxr = dk.create("concepts", "cxr-findings").concepts
    medical = [c for c in mb if c.category != "distractor"]
    assert len(medical) >= 150 and len(mb) - len(medical) >= 150
    cats = {c.category for c in medical}
    assert {"breast composition", "mass", "calcification", "architectural distortion", "asymmetries",
            "intramammary lymph node", "skin lesion", "associated features", "location", "assessment"} <= cats
    texts = {c.text for c in mb}
    from dissectkit.builtin.probes.cbis import cbis_concepts

    for v in ("SPICULATED-ILL_DEFINED", "PLEOMORPHIC", "FINE_LINEAR_BRANCHING", "LUCENT_CENTER", "CLUSTERED"):
        assert set(cbis_concepts(v)) <= texts  # CBIS mask keys exist in the set
    from dissectkit.builtin.probes.nih import finding_text
    from dissectkit.builtin.targets import NIH_FINDINGS

    assert {finding_text(f) for f in NIH_FINDINGS} <= {c.text for c in cxr}
    only = dk.create("concepts", "mammo-birads", categories=["mass"]).concepts
    assert only and all(c.category == "mass" for c in only)
    with pytest.raises(DataError, match="Did you mean 'mass'"):
        dk.create("concepts", "mammo-birads", categories=["masss"])


def test_nouns_from_reports():
    from dissectkit.builtin.concepts.reports import get_tagger, normalise, nouns_from_reports

    assert normalise("Left breast: mass, (spiculated)!") == "left breast mass spiculated"
    nouns = nouns_from_reports(
        ["There is a spiculated MASS in the upper outer quadrant of the left breast.",
         "Fine pleomorphic calcifications; the mass is stable."], get_tagger("spacy"))
    assert nouns[:3] == ["mass", "quadrant", "breast"] and "calcifications" in nouns
    assert "spiculated" not in nouns and "the" not in nouns and nouns.count("mass") == 1
    with pytest.raises(DataError):
        nouns_from_reports(["...", ""], get_tagger("spacy"))


def test_from_reports_cli(tmp_path):
    import typer
    from typer.testing import CliRunner

    from dissectkit.cli.commands.data import register

    app = typer.Typer()
    register(app)
    (tmp_path / "r.csv").write_text('id,report\n1,"Mild cardiomegaly, small pleural effusion."\n2,Clear lungs.\n')
    res = CliRunner().invoke(app, ["concepts", "from-reports", str(tmp_path / "r.csv"), str(tmp_path / "out.txt")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out.txt").read_text().split() == ["cardiomegaly", "effusion", "lungs"]
