"""The first-party tracking plugin (plugins/dissectkit-tensorboard) really installs (`pip install -e`,
its `tensorboard` dependency from the package registry already present) and, discovered through its
entry point, logs a run offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_env import layered_venv, pip_install_editable, run_in

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "dissectkit-tensorboard"


@pytest.mark.slow
def test_tensorboard_plugin_installs_and_logs_a_run_through_its_entry_point(tmp_path):
    pytest.importorskip("tensorboard", reason="install the plugin's dependency: pip install tensorboard")
    python = layered_venv(tmp_path / "venv")
    installed = pip_install_editable(python, PLUGIN, tmp_path)
    assert installed.returncode == 0, installed.stderr
    listed = run_in(python, ["-m", "dissectkit.cli", "plugins", "--json"], tmp_path)
    record = next(r for r in json.loads(listed.stdout) if r["distribution"] == "dissectkit-tensorboard")
    assert record["ok"] and record["components"] == [] and record["name"] == "tensorboard"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: tracked\ndissector: synth-clip\ntarget: {name: synth-effnet-concepts, layers: [classifier]}\n"
        "probe: {name: synth-mammo, params: {n: 12, height: 96, width: 64}}\n"
        "concepts: {name: synth-mammo-concepts, params: {groups: [findings]}}\nmethod: mammi\n"
        f"output: {{dir: {tmp_path / 'runs' / 'tracked'}, reporters: [csv]}}\nruntime: {{device: cpu, offline: true}}\n"
    )
    ran = run_in(python, ["-m", "dissectkit.cli", "run", str(recipe), "-q"], tmp_path)
    assert ran.returncode == 0, ran.stderr
    events = list((tmp_path / "runs" / "tensorboard" / "tracked").glob("*/events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 1000
