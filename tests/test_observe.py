"""Reporters' optional members: a pass observer watches the single pass (its observation is kept in
the cache and read back by a cached run) and ``pages`` are collected before any reporter writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

import dissectkit as dk
from dissectkit.host.hookspecs import hookimpl
from dissectkit.results.run_result import RunResult

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"blocks.1", "blocks.5", "classifier"}


def image_side(item) -> int:
    """The per-item value computed in the data workers (module level: picklable)."""
    return int(max(item.image.shape[:2]))


class Seen:
    """What the observer saw; stored as JSON bytes."""

    def __init__(self, data: dict, loaded: bool = False) -> None:
        self.data, self.loaded = data, loaded

    def to_bytes(self) -> bytes:
        return json.dumps(self.data).encode()


class Observer:
    key = {"test": "counting"}

    def __init__(self, plan) -> None:
        self.plan, self.chunks, self.rows, self.sides, self.layers = plan, 0, [], [], set()

    def item_function(self):
        return image_side

    def chunk_started(self, layers) -> None:
        self.chunks += 1

    def batch_started(self, rows) -> None:
        self.rows += list(rows)

    def layer_output(self, target, layer, pooled, output) -> None:
        assert pooled.shape[0] == output.shape[0]
        self.layers.add(layer)

    def batch_finished(self, rows, values) -> None:
        self.sides += [v for v in values if v is not None]

    def result(self):
        if not self.chunks:
            return None  # nothing seen (every chunk came from the cache)
        return Seen({"rows": self.rows, "sides": self.sides, "layers": sorted(self.layers),
                     "plan": {t: [i.name for i in infos] for t, infos in self.plan.layers.items()}})

    def complete(self, total_chunks: int) -> bool:
        return self.chunks == total_chunks

    def load(self, path: Path) -> Seen:
        return Seen(json.loads(path.read_bytes()), loaded=True)


class Watching:
    written: list = []

    def pass_observer(self, plan):
        return Observer(plan)

    def pages(self, run_result) -> dict[str, str]:
        return {"Counting": "counting.txt"}

    def write(self, run_result, out_dir: Path) -> Path:
        Watching.written.append((dict(run_result.pages), run_result.evidence.observations.get("watching")))
        (Path(out_dir) / "counting.txt").write_text("seen")
        return Path(out_dir) / "counting.txt"


class Plugin:
    @hookimpl
    def dissectkit_register_reporters(self, registry):
        registry.add("reporter", "watching", lambda p, ctx: Watching(), description="a test pass observer")


def _run(tmp_path: Path, *overrides: str):
    recipe = dk.load_recipe(ROOT / "recipes" / "quickstart.yaml", [
        "probe.params.n=40", "runtime.batch_size=16", "runtime.chunk_images=20", "runtime.num_workers=1",
        f"output.dir={tmp_path / 'out'}", f"runtime.cache_dir={tmp_path / 'cache'}",
        "output.reporters=[csv, watching, {name: html, params: {top_images: 0}}]",
        "method={name: clip-dissect, params: {similarity_params: {top_k: 10}}}", *overrides,
    ])
    Watching.written.clear()
    result = dk.run(recipe)
    (pages, observation), = Watching.written
    return result, pages, observation


@pytest.mark.slow
def test_a_reporter_observes_the_pass_and_its_observation_is_kept(tmp_path, dissectkit_plugin, caplog):
    dissectkit_plugin(Plugin(), name="watching-test")
    result, pages, seen = _run(tmp_path)
    assert pages == {"Counting": "counting.txt", "HTML report": "report.html"}  # collected before writing
    assert not seen.loaded and seen.data["rows"] == list(range(40))  # every valid row, in order
    assert len(seen.data["sides"]) == 40 and all(side > 0 for side in seen.data["sides"])  # made in the workers
    assert set(seen.data["layers"]) == LAYERS and set(seen.data["plan"]["synth-effnet-concepts"]) == LAYERS
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["pages"] == pages
    assert '<a href="counting.txt">Counting</a>' in (tmp_path / "out" / "report.html").read_text()
    assert RunResult.load(tmp_path / "out").pages == pages
    kept = list((tmp_path / "cache" / "observed").glob("*/observation"))
    assert len(kept) == 1

    again, _, cached = _run(tmp_path, "method={name: clip-dissect, params: {similarity: cos}}")
    assert again.stats["chunks"]["computed"] == 0 and cached.loaded and cached.data == seen.data

    kept[0].write_bytes(b"{not json")  # a damaged file fails its checksum: moved aside with a warning, not read
    with caplog.at_level(logging.WARNING):
        _, _, lost = _run(tmp_path)
    assert lost is None and "observation failed its check" in caplog.text and "moved aside" in caplog.text
    assert list((tmp_path / "cache" / "quarantine" / "observed").glob("*/observation.2*"))  # kept aside, never deleted


def test_only_the_main_process_observes():
    from dissectkit.engine.reporting import Watch

    res = SimpleNamespace(targets={}, probe=[], reporters={"watching": Watching()})
    assert set(Watch.for_run(res, SimpleNamespace(is_main=True)).observers) == {"watching"}
    assert Watch.for_run(res, SimpleNamespace(is_main=False)).observers == {}
    assert Watch.for_run(SimpleNamespace(targets={}, probe=[], reporters={"csv": dk.create("reporter", "csv")}),
                         SimpleNamespace(is_main=True)).observers == {}


def test_an_item_function_that_raises_gives_none():
    from dissectkit.engine.reporting import item_values

    def bad(item):
        raise ValueError("boom")

    assert item_values({"a": bad, "b": len}, [1, 2]) == {"a": None, "b": 2}
