"""Fault injection (issue 19), part 2: recipes, probes, checkpoints, plugins and finished runs a new
user might get wrong, and the places where the docs and the code disagreed. Each test asserts the
exit code, that the message names the file / field / plugin and the fix, and that no compute started
where none had to. Cache, run directories, mounts, full disks and signals: tests/test_faults.py."""

from __future__ import annotations

import json
import os
import re
import types
from pathlib import Path

import numpy as np
import pytest
from support import tiny_recipe

import dissectkit as dk
from dissectkit.cli.app import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file) -> Path:
    return tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)


def _run(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).replace("\n", " ")


def _nothing_computed(cache: Path) -> bool:
    return not list(cache.glob("*/*/chunk_*.safetensors"))


# --------------------------------------------------------------------------- recipes
def test_top_k_larger_than_the_probe_is_caught_by_validate_and_before_any_compute(recipe, tmp_path, capsys):
    code, text = _run(capsys, "validate", recipe, "-s", "method.params.similarity_params.top_k=50")
    assert code == 2 and "top_k = 50 is larger than the probe (24 images)" in text and "tiny.yaml:" in text
    cache = tmp_path / "cache"
    code, text = _run(capsys, "run", recipe, "-q", "-s", "method.params.similarity_params.top_k=50",
                      "-s", f"runtime.cache_dir={cache}")
    assert code == 2 and "nothing was computed" in text and "top_k = 50" in text and _nothing_computed(cache)
    code, text = _run(capsys, "validate", recipe, "-s", "method.params={similarity: rank_reorder, similarity_params: {top_fraction: 0.01}}")
    assert code == 2 and "top_fraction = 0.01 selects no image" in text and "at least 100" in text


def test_a_study_category_missing_from_the_concept_set_is_caught_before_any_compute(tmp_path, capsys):
    recipe = tmp_path / "study.yaml"
    recipe.write_text(
        "dissector: synth-clip\ntarget: {name: synth-effnet-concepts, layers: [classifier]}\n"
        "probe: {name: synth-mammo, params: {n: 24}}\nconcepts: synth-mammo-concepts\n"
        "method: {name: clip-dissect, params: {similarity: cos}}\n"
        f"output: {{dir: '{tmp_path / 'out'}', reporters: [csv, {{name: study, params: {{general_categories: [distracter]}}}}]}}\n"
        f"runtime: {{device: cpu, offline: true, cache_dir: '{tmp_path / 'cache'}'}}\n"
    )
    code, text = _run(capsys, "validate", recipe)
    assert code == 2 and "study.yaml:6:" in text and "params.general_categories names category 'distracter'" in text
    assert "concept set 'synth-mammo-concepts' does not have" in text and "Did you mean 'distractor'" in text
    code, text = _run(capsys, "run", recipe, "-q")
    assert code == 2 and "nothing was computed" in text and "'distracter'" in text
    assert _nothing_computed(tmp_path / "cache") and not (tmp_path / "out").exists()
    fixed = ["-s", "output.reporters.1.params.general_categories=[distractor, mass]"]
    assert main(["validate", str(recipe), *fixed]) == 0


def test_a_recipe_naming_python_code_is_refused_without_the_trust_flag_and_nothing_runs(recipe, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = ["-s", "target={name: module, params: {factory: 'os:system', kwargs: {command: 'touch " + str(marker) + "'}}, layers: [x]}"]
    for command in ("validate", "run", "layers"):
        code, text = _run(capsys, command, recipe, *evil)
        assert code == 2 and "names Python code" in text and "'os:system'" in text and "--trust-code" in text
        assert "tiny.yaml" in text and not marker.exists()
    code, text = _run(capsys, "validate", recipe, *evil, "--trust-code")  # trusted: valid, and still never run
    assert code == 0 and "not checked" in text and "dissectkit layers --trust-code" in text and not marker.exists()
    code, text = _run(capsys, "validate", recipe, *evil, "-s", "runtime.trust_code=true")
    assert code == 0 and not marker.exists()


def test_a_trusted_module_target_is_built(recipe, tmp_path, capsys):
    module = "target={name: module, params: {factory: 'torchvision.models:resnet18', kwargs: {num_classes: 4}, input_size: 64}, layers: [layer4, fc]}"
    code, text = _run(capsys, "layers", recipe, "-s", module, "--trust-code", "--selected")
    assert code == 0 and "layer4" in text and "layer3" not in text
    code, text = _run(capsys, "layers", recipe, "-s", module, "--trust-code")
    assert code == 0 and "layer3" in text  # --all (the default) shows every layer, the selected ones marked


def test_duplicate_keys_are_an_error_with_both_lines(tmp_path, recipe, capsys):
    text = recipe.read_text() + "runtime: {device: cpu, seed: 1}\n"
    dup = tmp_path / "dup.yaml"
    dup.write_text(text)
    code, out = _run(capsys, "validate", dup)
    n = len(text.splitlines())
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("runtime:"))
    assert code == 2 and f"dup.yaml:{n}:1: 'runtime' is given again (first at line {first})" in out and "Keep one" in out


def test_an_empty_recipe_names_every_missing_key_at_once(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    code, text = _run(capsys, "validate", empty)
    assert code == 2
    for key in ("dissector", "target", "method", "probe", "concepts"):
        assert f"required key '{key}' is missing" in text


def test_method_on_the_command_line_keeps_the_recipes_method_params(recipe):
    from dissectkit.cli.app import _load

    kept = _load(recipe, None, ["clip-dissect", "mammi"])
    assert [m.name for m in kept.methods] == ["clip-dissect", "mammi"]
    assert kept.methods[0].params == {"similarity": "soft_wpmi", "similarity_params": {"top_k": 5}}
    assert kept.methods[1].params == {}
    replaced = _load(recipe, ["methods=[{name: clip-dissect, params: {similarity: cos}}]"])
    assert replaced.methods[0].params == {"similarity": "cos"}  # unless overridden


def test_extends_and_overrides_never_carry_params_into_another_component(recipe, tmp_path, image_root, capsys):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {recipe.name}\nprobe: {{name: csv, params: {{root: {tmp_path / 'list.csv'}}}}}\n")
    (tmp_path / "list.csv").write_text("path\n" + "\n".join(str(p.relative_to(tmp_path)) for p in sorted(image_root.rglob("*.png"))) + "\n")
    assert dk.load_recipe(child).probe.params == {"root": str(tmp_path / "list.csv")}
    # --set probe.name: the new component starts without the old one's params
    synth = dk.load_recipe(recipe, ["probe.name=synth-mammo", "probe.params.n=30"])
    assert synth.probe.model_dump(exclude_none=True) == {"name": "synth-mammo", "params": {"n": 30}}
    code, text = _run(capsys, "validate", recipe, "-s", "probe.params.n=30", "-s", "probe.name=synth-mammo")
    assert code == 0 and "unknown parameter" not in text
    code, text = _run(capsys, "validate", child, "-s", "probe=image-folder", "-s", f"probe.params.root={image_root}")
    assert code == 0  # a component written as a bare name takes params from --set


# --------------------------------------------------------------------------- probes
def test_a_non_utf8_file_name_is_left_out_with_its_folder_named(recipe, image_root, tmp_path, capsys):
    bad = os.fsencode(image_root / "a") + b"/caf\xe9.png"
    with open(bad, "wb") as fh:
        fh.write((image_root / "a" / "img_0000.png").read_bytes())
    code, text = _run(capsys, "validate", recipe)
    assert code == 0 and "caf\\xe9.png" in text and "not valid UTF-8" in text and str(image_root / "a") in text
    code, text = _run(capsys, "run", recipe, "-q", "-s", "output.reporters=[csv, json, html]")
    assert code == 0 and "1 listed probe file(s) left out" in text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["stats"]["probe_skipped"]) == 1 and "rename it" in manifest["stats"]["probe_skipped"][0][1]


def _csv_recipe(recipe: Path, tmp_path: Path, image_root: Path, rows: list[str], extra: str = "") -> list[str]:
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "\n".join(rows) + "\n")
    return ["-s", f"probe={{name: csv, params: {{root: '{listing}'{extra}}}}}"]


def test_csv_rows_outside_the_root_are_refused_and_named_missing_rows_listed(recipe, tmp_path, image_root, capsys, monkeypatch):
    good = [str(p.relative_to(tmp_path)) for p in sorted(image_root.rglob("*.png"))]
    rows = [*good, "../../etc/passwd", "/etc/shadow", "images/a/missing.png"]
    spec = _csv_recipe(recipe, tmp_path, image_root, rows)
    opened: list[str] = []
    import dissectkit.imaging.files as files

    real = files.read_image
    monkeypatch.setattr(files, "read_image", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k))
    code, text = _run(capsys, "validate", recipe, *spec)
    assert code == 0 and "leaves out 3 listed file(s)" in text and "/etc/shadow" in text and "allow_outside_root" in text
    code, text = _run(capsys, "run", recipe, "-q", *spec)
    assert code == 0 and "3 listed probe file(s) left out" in text and "missing.png" in text
    skipped = dict(json.loads((tmp_path / "out" / "manifest.json").read_text())["stats"]["probe_skipped"])
    assert set(skipped) == {"../../etc/passwd", "/etc/shadow", "images/a/missing.png"}
    assert "outside the probe's root" in skipped["/etc/shadow"] and "file not found" in skipped["images/a/missing.png"]
    assert not any("etc" in p for p in opened)  # never opened
    allowed = _csv_recipe(recipe, tmp_path, image_root, [*good, str(image_root / "a" / "img_0000.png").replace(str(tmp_path), str(tmp_path / ".." / tmp_path.name))], ", allow_outside_root: true")
    assert main(["validate", str(recipe), *allowed]) == 0


def test_image_folder_probe_fixes(tmp_path, capsys):
    from PIL import Image

    from dissectkit.base.errors import DataError
    from dissectkit.synthetic.export import export_world

    export = export_world("image-folder", 6, tmp_path / "export").probe
    root = Path(export["params"]["root"]).parent
    with pytest.raises(DataError, match=r"holds images/ and masks/.*Set root: .*images and masks_root: .*masks"):
        dk.create("probe", "image-folder", root=str(root))
    with_masks = dk.create("probe", "image-folder", root=str(root), masks_root=str(root / "masks"), allow_outside_root=False)
    assert len(with_masks) == 6 and not any(i.startswith("masks/") for i in with_masks.ids())  # masks are not images
    gifs = tmp_path / "gifs"
    gifs.mkdir()
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 200)]
    frames[0].save(gifs / "two.gif", save_all=True, append_images=frames[1:])
    probe = dk.create("probe", "image-folder", root=str(gifs))
    assert probe.ids() == ["two.gif"] and np.asarray(probe[0].image).max() == 10  # GIF read, first frame
    empty = tmp_path / "none"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    with pytest.raises(DataError) as err:
        dk.create("probe", "image-folder", root=str(empty))
    assert "split" not in str(err.value) and "Check `root`" in str(err.value)


def test_six_all_black_pngs_give_the_almost_constant_warning(tmp_path, capsys):
    from PIL import Image

    black = tmp_path / "black"
    black.mkdir()
    for i in range(6):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(black / f"b{i}.png")
    recipe = tmp_path / "black.yaml"
    recipe.write_text(
        "dissector: synth-clip\ntarget: {name: synth-effnet-concepts, layers: [classifier]}\n"
        f"probe: {{name: image-folder, params: {{root: '{black}'}}}}\nconcepts: synth-mammo-concepts\n"
        "method: {name: clip-dissect, params: {similarity: cos}}\n"
        f"output: {{dir: '{tmp_path / 'out'}', reporters: [csv]}}\nruntime: {{device: cpu, offline: true}}\n"
    )
    code, text = _run(capsys, "run", recipe, "-q")
    assert code == 0 and text.count("almost constant image") == 1 and "b0.png" in text


# --------------------------------------------------------------------------- checkpoints and finished runs
def test_a_truncated_checkpoint_is_a_data_error_naming_the_file(recipe, tmp_path, capsys):
    import torch

    ckpt = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1000)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    code, text = _run(capsys, "run", recipe, "-q", "-s", f"target.params.checkpoint={ckpt}", "-s", f"runtime.cache_dir={tmp_path / 'c'}")
    assert code == 2 and str(ckpt) in text and "truncated, damaged" in text and "Download or copy it again" in text
    assert "DISSECTKIT_DISABLE_PLUGINS" not in text and "internal error" not in text and _nothing_computed(tmp_path / "c")


def test_compare_damaged_runs_an_out_file_and_the_default_out(recipe, tmp_path, capsys):
    assert main(["run", str(recipe), "-q", "--out", str(tmp_path / "runs" / "a")]) == 0
    assert main(["run", str(recipe), "-q", "--out", str(tmp_path / "runs" / "b"), "-s", "method.params.similarity=cos"]) == 0
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    code, text = _run(capsys, "compare", a, b)  # the README's command, without --out
    out = tmp_path / "runs" / "compare-a-b"
    assert code == 0 and (out / "compare.html").is_file() and (out / "comparison_quality.csv").is_file()
    documented = (ROOT / "docs" / "reports.md").read_text()
    assert all(f"`{p.name}`" in documented for p in out.iterdir() if p.is_file())  # every file it writes is documented
    (tmp_path / "file").write_text("x")
    code, text = _run(capsys, "compare", a, b, "--out", tmp_path / "file")
    assert code == 2 and "is not a folder" in text and "internal error" not in text
    labels = b / "labels.json"
    labels.write_text(labels.read_text()[:200])
    code, text = _run(capsys, "compare", a, b)
    assert code == 2 and str(labels) in text and "truncated or damaged" in text and "Run the recipe again" in text


# --------------------------------------------------------------------------- plugins
def _flaky_plugin(images: Path) -> types.ModuleType:
    """An in-process plugin whose probe fails on one item, whose similarity and reporter raise."""
    from dissectkit.plugin import Probe, ProbeItem, Reporter, Similarity, hookimpl
    from dissectkit.plugin import read_image as read

    paths = sorted(images.rglob("*.png"))

    class Flaky(Probe):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            if i == 3:
                raise ValueError("cannot decode item 3")
            return ProbeItem(read(paths[i]), f"img{i}")

        def fingerprint(self):
            return "flaky-v1"

    class Exploding(Similarity):
        def __call__(self, P, A):
            raise RuntimeError("the similarity exploded")

    class Broken(Reporter):
        def write(self, run_result, out_dir):
            raise KeyError("no such column")

    plugin = types.ModuleType("dk_flaky")

    @hookimpl
    def dissectkit_register_probes(register):
        register("flaky", lambda p, ctx: Flaky())

    @hookimpl
    def dissectkit_register_similarities(register):
        register("exploding", lambda p, ctx: Exploding())

    @hookimpl
    def dissectkit_register_reporters(register):
        register("broken", lambda p, ctx: Broken())

    plugin.dissectkit_register_probes = dissectkit_register_probes
    plugin.dissectkit_register_similarities = dissectkit_register_similarities
    plugin.dissectkit_register_reporters = dissectkit_register_reporters
    return plugin


def test_a_plugins_exceptions_name_the_plugin_not_dissectkit(recipe, tmp_path, image_root, capsys, dissectkit_plugin):
    dissectkit_plugin(_flaky_plugin(image_root), name="dk_flaky", distribution="dissectkit-flaky")
    flaky = ["-s", "probe=flaky"]
    # an item-level exception of the probe skips that image, with its reason
    code, text = _run(capsys, "run", recipe, "-q", *flaky)
    assert code == 0 and "1 probe image(s) skipped" in text
    skipped = json.loads((tmp_path / "out" / "manifest.json").read_text())["stats"]["skipped"]
    assert list(skipped) == ["3"] and "probe 'flaky' from plugin 'dk_flaky'" in skipped["3"] and "cannot decode item 3" in skipped["3"]
    # ... and stops the run with strict_data, blaming the plugin
    code, text = _run(capsys, "run", recipe, "-q", *flaky, "-s", "runtime.strict_data=true", "-s", f"runtime.cache_dir={tmp_path / 'c1'}")
    assert code == 1 and "probe 'flaky' from plugin 'dk_flaky' (distribution 'dissectkit-flaky' dev)" in text
    before = (tmp_path / "out" / "labels.json").read_bytes()
    for override, who, what in (
        ("method.params.similarity=exploding", "similarity 'exploding'", "RuntimeError: the similarity exploded"),
        ("output.reporters=[csv, broken]", "reporter 'broken'", "KeyError: 'no such column'"),
    ):
        code, text = _run(capsys, "run", recipe, "-q", "-s", override)
        assert code == 1, text
        assert f"{who} from plugin 'dk_flaky' (distribution 'dissectkit-flaky' dev) raised {what}" in text
        assert "problem of that plugin, not of dissectkit" in text and "DISSECTKIT_DISABLE_PLUGINS=dk_flaky" in text
        assert "internal error" not in text and "please report it" not in text
        log = Path(re.search(r"traceback in (\S+\.log)", text).group(1))
        assert what.split(":")[0] in log.read_text() and "Traceback" in log.read_text()
        assert (tmp_path / "out" / "labels.json").read_bytes() == before  # the previous run is untouched
    assert (tmp_path / "out.incomplete" / "labels.json").is_file()  # the reporter's run kept its labels beside


def test_strict_plugins_reports_every_failing_plugin(capsys, plugin_site):
    from test_plugins import make_distribution

    for dist, module in (("dissectkit-bad-one", "dk_bad_one"), ("dissectkit-bad-two", "dk_bad_two")):
        make_distribution(plugin_site, dist, module, "raise RuntimeError('boom in " + module + "')\n")
    code, text = _run(capsys, "--strict-plugins", "plugins")
    assert code == 2 and "dk_bad_one" in text and "dk_bad_two" in text and "boom in dk_bad_two" in text


# --------------------------------------------------------------------------- docs and readability
def test_the_plugin_new_install_line_brings_pytest(tmp_path, capsys):
    code, text = _run(capsys, "plugin", "new", "zz", "--kinds", "method", "--dir", tmp_path / "zz")
    assert code == 0 and f"pip install -e '{tmp_path / 'zz'}[test]'" in text.replace("  ", " ").replace("' ", "'")
    assert 'test = ["pytest' in (tmp_path / "zz" / "pyproject.toml").read_text()
    assert "pip install -e 'dissectkit-my-clip[test]'" in (ROOT / "docs" / "plugins.md").read_text()


def test_the_docs_count_the_event_hooks_there_are():
    from dissectkit.host import hookspecs

    events = [n for n in dir(hookspecs) if n.startswith("dissectkit_") and "register" not in n]
    words = {2: "two", 3: "three", 4: "four", 5: "five"}
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert f"{words[len(events)]} event hooks" in text and all(f"`{e}`" in text for e in events)


def test_terminal_tables_never_cut_a_label_at_80_columns(recipe, tmp_path):
    from rich.console import Console

    from dissectkit.cli import app

    result = dk.run(dk.load_recipe(recipe))
    longest = max((ranked[0][0] for ls in result.label_sets for ll in ls.layers.values() for ranked in ll.neurons[:8] if ranked), key=len)
    narrow = Console(width=80, record=True)
    real = app.console
    app.console = narrow
    try:
        app.print_summary(result, 8)
    finally:
        app.console = real
    text = narrow.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for word in longest.split():
        assert word in text  # a label wraps between words, never cut to "cir…"


def test_the_report_explains_scores_and_keeps_thumbnail_ids_apart(recipe, tmp_path):
    dk.run(dk.load_recipe(recipe, ["output.reporters=[html]"]))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Scores: soft-WPMI" in html and "compare them within one label set" in html
    pages = "".join(p.read_text() for p in (tmp_path / "out").rglob("*.html"))  # thumbnails: the layer pages
    assert "<figcaption><bdi>" in pages and "direction: rtl" in pages  # a long id is cut at its start, not its end
