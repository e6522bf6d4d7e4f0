"""CLI behaviour: start-up, validate, list, schema, cache; usage errors, preflight, run-directory
replacement, Ctrl-C, hints and fetch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import tiny_recipe

from dissectkit.cli.app import main


def test_help_does_not_import_torch():
    code = "import sys; from dissectkit.cli.app import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("False")
    assert "validate" in out.stdout and "run" in out.stdout


def test_validate_accepts_a_good_recipe_and_checks_layers(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    assert main(["validate", str(recipe)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate", str(recipe), "--set", "target.layers=[layer9]"]) == 2
    assert "has no layer 'layer9'" in capsys.readouterr().err.replace("\n", " ")


def test_validate_reports_yaml_errors_with_position(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dissector: {name: open-clip\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "YAML syntax error" in err and "bad.yaml:" in err and "Traceback" not in err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "Recipe file not found" in capsys.readouterr().err


def test_list_and_schema_show_installed_components(capsys):
    assert main(["list", "similarity"]) == 0
    out = capsys.readouterr().out
    for name in ("cos", "cos3", "wpmi", "soft_wpmi", "rank_reorder"):
        assert name in out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    names = [o["properties"]["name"]["const"] for o in schema["$defs"]["similarity_component"]["oneOf"]]
    assert "soft_wpmi" in names
    soft = next(o for o in schema["$defs"]["similarity_component"]["oneOf"] if o["properties"]["name"]["const"] == "soft_wpmi")
    assert soft["properties"]["params"]["properties"]["top_k"]["default"] == 100
    assert main(["list", "dissectors"]) == 2


def test_layers_command_lists_neuron_counts(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    assert main(["layers", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "layer4" in out and "512" in out and "3 selected" in out


def test_cache_ls_and_clear(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    cache = tmp_path / "cache"
    assert main(["run", str(recipe), "--quiet", "--set", f"runtime.cache_dir={cache}"]) == 0
    capsys.readouterr()
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "acts" in out and "embeds" in out and "layer4" in out
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "Removed" in capsys.readouterr().out
    assert not (cache / "acts").exists()


# --------------------------------------------------------------------------- CLI hygiene (issue 12)
def test_usage_errors_are_clicks_own_message_and_exit_2(capsys):
    assert main(["run", "--quite"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --quite" in err and "--quiet" in err and "internal error" not in err
    assert main(["frobnicate"]) == 2
    assert "No such command 'frobnicate'" in capsys.readouterr().err
    assert main(["list", "similarity", "--names"]) == 0
    assert capsys.readouterr().out.split() == ["cos", "cos3", "rank_reorder", "soft_wpmi", "wpmi"]


def _no_work_done(cache: Path) -> bool:
    return not list(cache.glob("acts/*/chunk_*"))


def test_preflight_refuses_a_missing_device_before_any_work(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    import torch

    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    cache = tmp_path / "cache"
    assert main(["run", str(recipe), "-q", "-s", f"runtime.device={device}", "-s", f"runtime.cache_dir={cache}"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"runtime.device is '{device}'" in err and "internal error" not in err
    assert _no_work_done(cache) and not (tmp_path / "out").exists()


def test_preflight_names_an_unwritable_or_full_directory(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys, monkeypatch):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["run", str(recipe), "-q", "--out", str(blocker / "sub" / "run")]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"The output directory {blocker / 'sub'} cannot be created: {blocker} is a file" in err
    assert main(["run", str(recipe), "-q", "-s", f"runtime.cache_dir={blocker / 'cache'}"]) == 2
    assert f"The cache directory {blocker / 'cache'} cannot be created" in capsys.readouterr().err.replace("\n", "")
    from dissectkit.base.errors import DissectkitError
    from dissectkit.engine import preflight

    def refuse(*_a, **_k):  # a read-only directory (root, running the tests, may write anywhere)
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m, pytest.raises(DissectkitError, match=f"{tmp_path} is not writable \\(Permission denied\\)"):
        m.setattr(preflight.tempfile, "NamedTemporaryFile", refuse)
        preflight.check_directory(tmp_path, "output directory", "")

    import shutil as real_shutil

    usage = real_shutil.disk_usage(tmp_path)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage._replace(free=50 * 2**20))
    cache = tmp_path / "cache"
    assert main(["run", str(recipe), "-q", "-s", f"runtime.cache_dir={cache}"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"The output directory {tmp_path} has only 50 MB free; a run needs at least 200 MB" in err
    assert _no_work_done(cache)


def test_a_rerun_replaces_the_previous_runs_files_and_keeps_the_others(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    out = tmp_path / "out"
    assert main(["run", str(recipe), "-q"]) == 0
    assert (out / "neurons.csv").exists() and (out / "neurons.json").exists()
    (out / "notes.txt").write_text("a user's own file")
    capsys.readouterr()
    assert main(["run", str(recipe), "-q", "-s", "output.reporters=[csv]"]) == 0
    # the previous run's neurons.json goes (its manifest lists it); the user's file stays, named
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "manifest.json", "neurons.csv", "notes.txt", "recipe.yaml"]
    assert (out / "notes.txt").read_text() == "a user's own file"
    assert "what no dissectkit run wrote there: notes.txt" in capsys.readouterr().err.replace("\n", " ")
    (out / "notes.txt").unlink()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left
    # a cache inside the run directory is carried over, not thrown away
    inner = ["-s", f"runtime.cache_dir={out / 'cache'}"]
    assert main(["run", str(recipe), "-q", *inner]) == 0
    assert main(["run", str(recipe), "-q", *inner, "-s", "output.reporters=[json]"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["chunks"]["computed"] == 0 and (out / "neurons.json").exists()
    assert (out / "cache" / "acts").is_dir() and not (out / "neurons.csv").exists()
    assert main(["run", str(recipe), "-q", "-s", f"runtime.cache_dir={out}"]) == 2
    assert "The cache directory and the output directory are the same" in capsys.readouterr().err.replace("\n", " ")
    # a directory that is not a run is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    capsys.readouterr()
    assert main(["run", str(recipe), "-q", "--out", str(mine)]) == 2
    assert "is not a dissectkit run" in capsys.readouterr().err.replace("\n", " ")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys, monkeypatch):
    from dissectkit.engine import pipeline

    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    cache = tmp_path / "cache"
    args = ["run", str(recipe), "-q", "-s", f"runtime.cache_dir={cache}"]
    assert main(args) == 0
    before = (tmp_path / "out" / "labels.json").read_bytes()

    def interrupted(*_a, **_k):  # Ctrl-C once the chunks are written
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(pipeline, "label_all", interrupted)
    args_new = [*args, "-s", "runtime.chunk_images=8"]  # new chunks are computed, then Ctrl-C
    capsys.readouterr()
    assert main(args_new) == 130
    err = capsys.readouterr().err.replace("\n", " ")
    n_layers, n_dissectors, n_chunks = 3, 1, 3  # 24 images in chunks of 8
    assert f"Kept: {(n_layers + n_dissectors) * n_chunks} chunk(s) computed by this run" in err
    assert f"in the cache {cache}" in err and "Resume with the same command" in err
    assert "dissectkit run " + str(recipe) in err and "runtime.chunk_images=8" in err
    assert (tmp_path / "out" / "labels.json").read_bytes() == before  # the previous run is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_a_reporter_listed_twice_is_an_error(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    assert main(["validate", str(recipe), "-s", "output.reporters=[csv, json, csv]"]) == 2
    assert "output.reporters lists 'csv' more than once" in capsys.readouterr().err.replace("\n", " ")


def test_an_unreachable_hub_fails_fast_and_a_reachable_one_is_seen(tmp_path, monkeypatch):
    import socket

    from huggingface_hub import constants

    from dissectkit.base import weights
    from dissectkit.base.context import BuildContext
    from dissectkit.base.errors import WeightsError
    from dissectkit.engine import preflight

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights, "_REACHABLE", {})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    assert weights.hub_reachable() is True
    listener.close()  # now nothing listens there: connection refused
    monkeypatch.setattr(weights, "_REACHABLE", {})
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    ctx = BuildContext(offline=False, cache_dir=tmp_path / "c")
    with pytest.raises(WeightsError, match="unreachable from this machine. Fetch it on a connected machine with: hf download org/model w.bin"):
        weights.resolve({"hf": "org/model", "file": "w.bin"}, ctx)
    note = preflight.check_network(ctx)
    assert ctx.offline and "is unreachable: running offline" in note
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # undo go_offline's environment for the next tests


def _command_paths() -> set[str]:
    import typer

    from dissectkit.cli.app import app

    paths = set()

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.add(f"{prefix}{name}")
            walk(sub, f"{prefix}{name} ")

    walk(typer.main.get_command(app), "")
    return paths


def test_every_hint_names_a_command_that_exists():
    import re
    from importlib import metadata

    import dissectkit
    from dissectkit.base.weights import HubRef, UrlRef, fetch_command

    commands = _command_paths()
    assert {"run", "fetch", "plugin new", "cache clear"} <= commands
    root = Path(dissectkit.__file__).parent
    named = set()
    for path in root.rglob("*.py"):
        for m in re.finditer(r"`dissectkit ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", path.read_text()):
            named.add((path.name, m.group(1), m.group(2)))
    assert named, "no hint found: the pattern is wrong"
    for file, cmd, sub in sorted(named):
        assert cmd in commands, f"{file} names `dissectkit {cmd}`, which does not exist"
        if sub and any(c.startswith(f"{cmd} ") for c in commands):
            assert f"{cmd} {sub}" in commands, f"{file} names `dissectkit {cmd} {sub}`, which does not exist"
    url_hint = fetch_command(UrlRef(url="https://example.org/w.bin", sha256="0" * 64))
    assert url_hint.startswith("dissectkit fetch ") and "fetch" in commands
    hub_hint = fetch_command(HubRef(hf="org/model", file="w.bin"))
    assert hub_hint.startswith("hf download ")
    assert metadata.entry_points(group="console_scripts", name="hf"), "the `hf` command is not installed"


def test_fetch_downloads_and_verifies_into_the_cache(tmp_path, capsys):
    import hashlib

    src = tmp_path / "w.bin"
    src.write_bytes(b"weights" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    assert main(["fetch", src.as_uri(), "--sha256", digest, "--cache-dir", str(cache)]) == 0
    assert (cache / "downloads" / digest / "w.bin").read_bytes() == src.read_bytes()
    assert main(["fetch", src.as_uri(), "--sha256", "1" * 64, "--cache-dir", str(cache)]) == 2
    assert f"has sha256 {digest}, expected" in capsys.readouterr().err.replace("\n", "")


def test_a_failing_study_keeps_the_finished_labels(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys, monkeypatch):
    import dissectkit.study

    def broken(*_args):
        raise ValueError("figure backend exploded")

    monkeypatch.setattr(dissectkit.study, "write_study", broken)
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    assert main(["run", str(recipe), "-q", "-s", f"runtime.cache_dir={tmp_path / 'cache'}", "-s",
                 "output.reporters=[csv, {name: study, params: {general_categories: []}}]"]) == 2  # no categories here
    err = capsys.readouterr().err.replace("\n", " ")
    assert "Reporter 'study' failed" in err and "figure backend exploded" in err
    assert (tmp_path / "out" / "labels.json").is_file()  # the run directory was committed, not discarded
    assert (tmp_path / "out" / "neurons.csv").is_file()  # with the reports written before it
