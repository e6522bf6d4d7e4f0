"""The plugin host: entry-point discovery, broken and blocked plugins, duplicates, misspelled hooks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dissectkit as dk
from dissectkit.base.errors import ComponentError, PluginError
from dissectkit.host.manager import Host, get_host


def make_distribution(root: Path, dist: str, module: str, source: str, ep_name: str | None = None) -> None:
    """A throwaway installed distribution: its package plus a dist-info with a `dissectkit` entry point."""
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dissectkit]\n{ep_name or module} = {module}\n")
    (info / "RECORD").write_text("")


WORDS_PLUGIN = """
from dissectkit.plugin import Concept, Params, hookimpl

class WordsParams(Params):
    n: int = 3

class Words:
    def __init__(self, n):
        self.concepts = [Concept(f"word {i}", category="thirdparty") for i in range(n)]

@hookimpl
def dissectkit_register_concept_sets(register):
    register("tp-words", lambda p, ctx: Words(p.n), params=WordsParams, description="third-party words")
"""


@pytest.fixture
def site(plugin_site):
    """A fresh site folder whose distributions are the only entry points the host discovers."""
    return plugin_site


def test_builtins_are_registered_through_the_hooks():
    host = Host()
    builtin = [r for r in host.records if r.distribution == "dissectkit"]
    assert builtin and all(r.name.startswith("builtin:") for r in builtin)
    for spec in host.registry.list():
        assert spec.kind in dk.KINDS and spec.params is not None and spec.distribution


def test_third_party_distribution_is_discovered_and_usable(site, tmp_path):
    make_distribution(site, "dissectkit-words", "dk_words", WORDS_PLUGIN)
    host = get_host(reload=True)
    rec = next(r for r in host.records if r.distribution == "dissectkit-words")
    assert rec.ok and rec.components == ["concepts:tp-words"] and rec.version == "0.1"
    spec = next(s for s in dk.list_components("concepts") if s.name == "tp-words")
    assert spec.distribution == "dissectkit-words" and spec.description == "third-party words"
    words = dk.create("concepts", "tp-words", n=2)
    assert [c.text for c in words.concepts] == ["word 0", "word 1"]
    with pytest.raises(ComponentError, match="tp-words' params"):
        dk.create("concepts", "tp-words", n="two")
    # a recipe names it like any built-in
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "dissector: {name: open-clip, params: {model: ViT-B-32}}\n"
        "target: {name: timm, params: {model: resnet18}, layers: [layer4]}\n"
        "probe: {name: image-folder, params: {root: images}}\n"
        "concepts: {name: tp-words, params: {n: 4}}\nmethod: clip-dissect\n"
    )
    from dissectkit.host.recipe import validate_components

    rec = dk.load_recipe(recipe)
    validated = validate_components(rec, host.registry)
    assert validated[id(rec.concepts)].n == 4


def test_broken_plugin_is_recorded_not_fatal(site):
    make_distribution(site, "dissectkit-broken", "dk_broken", "raise RuntimeError('boom at import')\n")
    host = get_host(reload=True)
    rec = next(r for r in host.records if r.distribution == "dissectkit-broken")
    assert not rec.ok and "RuntimeError: boom at import" in rec.error
    assert dk.list_components("method") == host.registry.list("method")  # the host still works
    with pytest.raises(PluginError, match="(?s)dk_broken.*failed to load.*boom at import"):
        Host(strict=True)


def test_disable_plugins_blocks_by_name(site, monkeypatch):
    make_distribution(site, "dissectkit-words", "dk_words", WORDS_PLUGIN)
    monkeypatch.setenv("DISSECTKIT_DISABLE_PLUGINS", "other, dissectkit-words")
    host = Host()
    rec = next(r for r in host.records if r.distribution == "dissectkit-words")
    assert rec.error == "disabled by DISSECTKIT_DISABLE_PLUGINS"
    assert "tp-words" not in host.registry.names("concepts")


def test_duplicate_component_names_an_error_naming_both(site):
    make_distribution(site, "dissectkit-words", "dk_words", WORDS_PLUGIN)
    make_distribution(site, "dissectkit-words-copy", "dk_words_copy", WORDS_PLUGIN)
    host = Host()
    failed = [r for r in host.records if r.error and "already has" in r.error]
    assert [r.distribution for r in failed] == ["dissectkit-words-copy"]  # the later one (sorted) is reported
    assert "'dissectkit-words'" in failed[0].error and "'dissectkit-words-copy'" in failed[0].error
    assert host.registry.get("concepts", "tp-words").distribution == "dissectkit-words"
    with pytest.raises(PluginError, match="registers concepts 'tp-words', a name distribution 'dissectkit-words'"):
        Host(strict=True)


SHADOW_PLUGIN = """
from dissectkit.plugin import Params, hookimpl

EVENTS = []

@hookimpl
def dissectkit_register_similarities(register):
    register("my-sim", lambda p, ctx: (lambda P, A: None))
    register("cos", lambda p, ctx: (lambda P, A: None), description="shadow cos")
    register("wpmi", lambda p, ctx: (lambda P, A: None))

@hookimpl
def dissectkit_register_dissectors(register):
    register("synth-clip", lambda p, ctx: None)

@hookimpl
def dissectkit_register_methods(register):
    raise RuntimeError("methods hook is broken too")

@hookimpl
def dissectkit_run_started(recipe, out_dir):
    EVENTS.append(out_dir)
"""


def test_a_plugin_never_displaces_a_builtin_and_fails_atomically_with_every_problem(site):
    make_distribution(site, "dissectkit-evil", "dk_evil", SHADOW_PLUGIN)
    host = Host()
    builtin_sims = {"cos", "cos3", "wpmi", "soft_wpmi", "rank_reorder"}
    assert builtin_sims <= set(host.registry.names("similarity"))
    assert all(host.registry.get("similarity", n).distribution == "dissectkit" for n in builtin_sims)
    assert host.registry.get("dissector", "synth-clip").distribution == "dissectkit"
    assert all(r.ok for r in host.records if r.distribution == "dissectkit")  # no built-in is marked failed
    rec = next(r for r in host.records if r.distribution == "dissectkit-evil")
    assert not rec.ok and rec.components == []
    # every problem, each naming both distributions and the component
    assert "registers similarity 'cos', a name distribution 'dissectkit' (plugin 'builtin:similarities')" in rec.error
    assert "registers similarity 'wpmi'" in rec.error and "registers dissector 'synth-clip'" in rec.error
    assert "dissectkit_register_methods raised RuntimeError: methods hook is broken too" in rec.error
    assert "(distribution 'dissectkit-evil')" in rec.error
    # atomic: its own new name is gone too, and its event hooks are not called
    assert "my-sim" not in host.registry.names("similarity")
    assert not any(impl.plugin_name.startswith("dissectkit-evil") for impl in host.pm.hook.dissectkit_run_started.get_hookimpls())


@pytest.mark.parametrize("blocked", ["builtin:similarities", "dissectkit.builtin.similarities", "similarities"])
def test_disable_plugins_accepts_builtin_modules(site, monkeypatch, blocked):
    module = f"dk_evil_{blocked.replace(':', '_').replace('.', '_')}"  # a fresh module per case
    make_distribution(site, "dissectkit-evil", module, SHADOW_PLUGIN.replace(
        'register("synth-clip"', 'register("synth-clip-2"').replace(
        'raise RuntimeError("methods hook is broken too")', "pass"))
    monkeypatch.setenv("DISSECTKIT_DISABLE_PLUGINS", blocked)
    host = Host()
    sims = next(r for r in host.records if r.name == "builtin:similarities")
    assert sims.disabled and sims.error == "disabled by DISSECTKIT_DISABLE_PLUGINS"
    evil = next(r for r in host.records if r.distribution == "dissectkit-evil")
    assert evil.ok, evil.error
    assert host.registry.get("similarity", "cos").distribution == "dissectkit-evil"  # the user chose this
    assert "soft_wpmi" not in host.registry.names("similarity")
    assert host.unmatched_disabled == []


def test_disable_plugins_warns_about_names_that_match_nothing(monkeypatch):
    monkeypatch.setenv("DISSECTKIT_DISABLE_PLUGINS", "builtin:similarity, dissectkit-nothing")
    host = Host()
    assert host.unmatched_disabled == ["builtin:similarity", "dissectkit-nothing"]
    assert "Did you mean 'builtin:similarities'" in host.disable_hint()


FACTORY_BUG_PLUGIN = """
from dissectkit.plugin import hookimpl

def make(params, ctx):
    return {}["missing"]

@hookimpl
def dissectkit_register_concept_sets(register):
    register("buggy-words", make)
"""


def test_a_factory_bug_names_the_plugin_and_component(site, tmp_path, capsys):
    make_distribution(site, "dissectkit-buggy", "dk_buggy", FACTORY_BUG_PLUGIN)
    get_host(reload=True)
    with pytest.raises(PluginError, match="factory of concepts 'buggy-words' from distribution 'dissectkit-buggy'.*KeyError"):
        dk.create("concepts", "buggy-words")
    from dissectkit.cli.app import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "dissector: {name: synth-clip}\ntarget: {name: synth-effnet-concepts, layers: [classifier]}\n"
        "probe: {name: synth-mammo, params: {n: 8}}\nconcepts: buggy-words\nmethod: clip-dissect\n"
    )
    assert main(["run", str(recipe), "--quiet", "--out", str(tmp_path / "out")]) == 1  # the plugin's fault: exit 1
    err = capsys.readouterr().err.replace("\n", " ")
    assert "dissectkit-buggy" in err and "buggy-words" in err and "internal error" not in err


@pytest.mark.parametrize(
    "source, message",
    [
        ("from dissectkit.plugin import hookimpl\n@hookimpl\ndef dissectkit_register_concepts(register):\n    pass\n",
         "Unknown hook 'dissectkit_register_concepts'. Did you mean 'dissectkit_register_concept_sets'"),
        ("def dissectkit_register_method(register):\n    pass\n", "Did you mean 'dissectkit_register_methods'"),
        ("def dissectkit_register_methods(register):\n    pass\n", "decorate it with @hookimpl"),
    ],
)
def test_misspelled_or_unmarked_hooks_are_caught(site, source, message):
    module = f"dk_typo_{abs(hash(source)) % 10**8}"
    make_distribution(site, "dissectkit-typo", module, source)
    host = Host()
    rec = next(r for r in host.records if r.distribution == "dissectkit-typo")
    assert not rec.ok and message in rec.error


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ComponentError, match="Unknown reporter 'cvs'. Did you mean 'csv'"):
        dk.create("reporter", "cvs")
    with pytest.raises(ComponentError, match="Unknown component kind 'dissectors'.*Did you mean 'dissector'"):
        dk.list_components("dissectors")


def test_plugins_json_cli_shows_the_broken_plugin(site, capsys):
    from dissectkit.cli.app import main

    make_distribution(site, "dissectkit-broken", "dk_broken", "import not_a_module_anywhere\n")
    get_host(reload=True)
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    broken = next(d for d in data if d["distribution"] == "dissectkit-broken")
    assert broken["ok"] is False and "not_a_module_anywhere" in broken["error"]
    assert main(["--strict-plugins", "plugins"]) == 2


def test_plugins_cli_lists_every_problem_and_names_are_easy_to_get(site, capsys, monkeypatch):
    from dissectkit.cli.app import main

    make_distribution(site, "dissectkit-evil", "dk_evil_cli", SHADOW_PLUGIN)
    get_host(reload=True)
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["plugins", "--json"]) == 0
    evil = next(d for d in json.loads(capsys.readouterr().out) if d["distribution"] == "dissectkit-evil")
    assert not evil["ok"] and len(evil["errors"]) == 5  # cos, wpmi, synth-clip, the broken hook, and the rollback note
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for needle in ("registers similarity 'cos'", "registers similarity 'wpmi'", "registers dissector 'synth-clip'",
                   "methods hook is broken too"):
        assert needle in out.replace("\n", " ") or needle in out
    assert dk.list_components("similarity", names=True) == ["cos", "cos3", "rank_reorder", "soft_wpmi", "wpmi"]
    assert "concepts:synth-mammo-concepts" in dk.list_components(names=True)
    assert [s.name for s in dk.list_components("similarity")] == dk.list_components("similarity", names=True)


# --------------------------------------------------------------------------- the contract, enforced
WRONG_KIND_PLUGIN = """
from dissectkit.plugin import NoParams, Probe, hookimpl

class MyProbe(Probe):
    def __init__(self, params, ctx):
        pass

def make(params, ctx):
    return None

@hookimpl
def dissectkit_register_dissectors(register):
    register("my-probe", MyProbe)
    register("my-clip", make, descripton="typo")
    register("my-masked", make, has_masks=True)
"""


def test_a_hook_registers_its_own_kind_and_known_fields_only(site):
    make_distribution(site, "dissectkit-wrong", "dk_wrong", WRONG_KIND_PLUGIN)
    host = Host()
    rec = next(r for r in host.records if r.distribution == "dissectkit-wrong")
    assert not rec.ok and rec.components == []
    assert ("Plugin 'dk_wrong' (distribution 'dissectkit-wrong') registered 'my-probe' as a dissector, but its factory "
            "is a probe class (MyProbe). Register it in dissectkit_register_probes.") in rec.error
    assert "unknown field 'descripton'. Did you mean 'description'?" in rec.error
    assert "with 'has_masks', a field of probes only. Register a probe in dissectkit_register_probes." in rec.error
    assert all(r.ok for r in host.records if r.distribution == "dissectkit")  # the built-ins keep working
    assert "synth-clip" in host.registry.names("dissector") and "my-clip" not in host.registry.names("dissector")
    with pytest.raises(PluginError, match="registered 'my-probe' as a dissector"):
        Host(strict=True)


LEGACY_PLUGIN = """
from dissectkit.plugin import NoParams, hookimpl

def make(params, ctx):
    return None

@hookimpl
def dissectkit_register_similarities(registry):
    registry.add("similarity", "legacy-sim", make, description="the 0.1 form")
"""

LEGACY_WRONG_PLUGIN = """
from dissectkit.plugin import hookimpl

def make(params, ctx):
    return None

@hookimpl
def dissectkit_register_dissectors(registry):
    registry.add("probe", "legacy-probe", make)
    registry.add("dissector", "legacy-clip", make, foo=1)
"""


def test_the_former_registry_argument_works_for_one_release_within_its_kind(site):
    make_distribution(site, "dissectkit-legacy", "dk_legacy", LEGACY_PLUGIN)
    make_distribution(site, "dissectkit-legacy-wrong", "dk_legacy_wrong", LEGACY_WRONG_PLUGIN)
    with pytest.warns(DeprecationWarning, match=r"dissectkit_register_similarities\(registry\) is deprecated"):
        host = Host()
    ok = next(r for r in host.records if r.distribution == "dissectkit-legacy")
    assert ok.ok and ok.components == ["similarity:legacy-sim"] and "is deprecated" in ok.warnings[0]
    assert host.registry.get("similarity", "legacy-sim").description == "the 0.1 form"
    bad = next(r for r in host.records if r.distribution == "dissectkit-legacy-wrong")
    assert not bad.ok
    assert ("dissectkit_register_dissectors registered the probe 'legacy-probe'; a hook registers its own kind only. "
            "Move it to dissectkit_register_probes") in bad.error
    assert "registered dissector 'legacy-clip' with unknown field 'foo'" in bad.error


def test_registration_fields_are_typed_and_masks_declared_once():
    from dissectkit.base.types import MasksWhen
    from dissectkit.host.registry import Registry

    registry = Registry()
    spec = registry.add("probe", "p", lambda p, ctx: None, licence="CC0", has_masks=MasksWhen("big", lambda p: p.big))
    assert spec.licence == "CC0" and spec.masks == "with big"
    assert spec.probe_has_masks(type("P", (), {"big": True})()) is True
    with pytest.raises(PluginError, match="unknown field 'metadata'"):
        registry.add("probe", "q", lambda p, ctx: None, metadata={})
    with pytest.warns(DeprecationWarning, match="'embed_dim' .* is ignored"):
        assert registry.add("dissector", "d", lambda p, ctx: None, embed_dim=64).kind == "dissector"

    from dissectkit.plugin import FileProbe

    class Declared(FileProbe):
        has_masks = True

    assert registry.add("probe", "declared", Declared).has_masks is True  # read from the class
    with pytest.raises(PluginError, match="declares has_masks of probe 'twice' twice, differently"):
        registry.add("probe", "twice", Declared, has_masks=False)


def test_list_probe_shows_the_masks_from_the_one_declaration(capsys):
    from dissectkit.cli import main

    assert main(["list", "probe", "--json"]) == 0
    masks = {row["name"]: row["masks"] for row in json.loads(capsys.readouterr().out)}
    assert masks["cbis-ddsm"] == masks["nih-cxr14"] == masks["synth-mammo"] == "yes"
    assert masks["vindr-mammo"] == "with box_masks: true" and masks["csv"] == "with mask_columns"
    assert masks["rsna-mammo"] == "no"


def test_components_are_adapted_to_their_kind_once_at_build():
    from dissectkit.base.contract import Probe, adapt
    from dissectkit.base.errors import ComponentError

    class Duck:  # a probe that does not subclass Probe
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise IndexError(i)

        def fingerprint(self):
            return "duck"

    duck = adapt("probe", Duck())
    assert isinstance(duck, Probe) and duck.ids() == ["0", "1"] and duck.skipped == [] and duck.component.fingerprint() == "duck"
    with pytest.raises(ComponentError, match="lacks the required member\\(s\\) fingerprint of a probe"):
        adapt("probe", type("NoFp", (), {"__len__": lambda s: 1, "__getitem__": lambda s, i: None})())
    built = dk.create("probe", "synth-mammo", n=4)
    assert adapt("probe", built) is built  # built-ins subclass their kind: nothing to adapt


def test_the_run_records_licences_and_the_files_a_probe_left_out(tmp_path):
    from dissectkit.host.recipe import recipe_from_dict

    (tmp_path / "img").mkdir()
    from PIL import Image

    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"img/{i}.png\n" for i in range(6)) + "img/gone.png\n")
    recipe = recipe_from_dict({
        "dissector": "synth-clip", "target": {"name": "synth-effnet-concepts", "layers": ["classifier"]},
        "probe": {"name": "csv", "params": {"root": str(tmp_path / "list.csv")}},
        "concepts": {"name": "synth-mammo-concepts", "params": {"groups": ["findings"]}},
        "method": {"name": "clip-dissect", "params": {"similarity": "cos"}},
        "output": {"dir": str(tmp_path / "run"), "reporters": ["csv"]}, "runtime": {"device": "cpu"},
    })
    dk.run(recipe)
    stats = json.loads((tmp_path / "run" / "manifest.json").read_text())["stats"]
    assert stats["licences"]["dissector synth-clip"].startswith("Apache-2.0")
    assert stats["probe_skipped"] == [["img/gone.png", f"file not found: {tmp_path / 'img' / 'gone.png'}"]]
