"""The result of a run: label sets per (dissector, target, method), top images, and evidence for reporters.

Every run directory holds ``manifest.json`` (resolved recipe, versions, device, timings, cache keys)
and ``labels.json`` (every label set and each neuron's top images), written by the engine whatever
reporters were chosen, so finished runs can be reloaded (:meth:`RunResult.load`) and compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dissectkit.base.types import Concept, LayerInfo
from dissectkit.labelling.evidence import LayerLabels

if TYPE_CHECKING:
    from dissectkit.results.evidence import RunEvidence

MANIFEST = "manifest.json"
LABELS = "labels.json"


@dataclass
class LabelSet:
    """The labels one method gave to the layers of one target, seen through one dissector."""

    dissector: str
    target: str
    method: str
    layers: dict[str, LayerLabels] = field(default_factory=dict)
    columns: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    """``columns[layer][name]``: one value per neuron of each per-neuron column
    (:mod:`dissectkit.labelling.columns`; label quality and the other groups)."""

    @property
    def key(self) -> str:
        return f"{self.dissector}/{self.target}/{self.method}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dissector": self.dissector,
            "target": self.target,
            "method": self.method,
            "layers": {name: ll.to_dict() for name, ll in self.layers.items()},
            "columns": self.columns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSet:
        return cls(
            data["dissector"], data["target"], data["method"],
            {name: LayerLabels.from_dict(ll) for name, ll in data["layers"].items()},
            _renamed(dict(data.get("columns") or data.get("quality") or {})),  # "quality": runs written before 0.2
        )


def _renamed(columns: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
    """Runs written before the rename (0.2) name the quality flag ``interpretable`` only: it is ``label_supported``."""
    for values in columns.values():
        if "interpretable" in values and "label_supported" not in values:
            values["label_supported"] = list(values["interpretable"])
    return columns


@dataclass
class RunResult:
    """What ``dk.run`` returns and reporters receive.

    ``top_images[target][layer][k]`` lists the probe indices of neuron ``k``'s most activating
    valid images (at most ``run_evidence.TOP_IMAGES``, best first; empty for a constant neuron);
    it is saved in ``labels.json``. Live handles (``probe``, ``targets``, ``dissectors`` and the
    cache-backed ``evidence``) are set during a run and are ``None`` on a result reloaded from disk.
    """

    name: str
    out_dir: Path
    recipe: dict[str, Any]
    concepts: list[Concept]
    probe_ids: list[str]
    label_sets: list[LabelSet]
    layer_infos: dict[str, list[LayerInfo]] = field(default_factory=dict)
    measures: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    probe: Any = None
    targets: dict[str, Any] | None = None
    dissectors: dict[str, Any] | None = None
    top_images: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict)
    evidence: RunEvidence | None = None
    """Cache entries, probe and targets of the run (``dissectkit.results.evidence``); ``None`` when reloaded."""
    pages: dict[str, str] = field(default_factory=dict)
    """Title -> path (relative to ``out_dir``) of the pages the reporters write (``manifest.json``)."""

    # -- top images ------------------------------------------------------------------------------
    def top_image_indices(self, target: str, layer: str, unit: int) -> list[int]:
        """Probe indices of a neuron's top images (``[]`` when unknown or constant)."""
        rows = self.top_images.get(target, {}).get(layer)
        return list(rows[unit]) if rows is not None and unit < len(rows) else []

    def top_image_ids(self, target: str, layer: str, unit: int) -> list[str]:
        """Probe ids of a neuron's top images (``probe_ids[index]``)."""
        return [self.probe_ids[i] for i in self.top_image_indices(target, layer, unit)]

    # -- live evidence -------------------------------------------------------------------------
    def live_evidence(self) -> RunEvidence:
        """The run's cache-backed evidence; a reloaded run has none."""
        from dissectkit.base.errors import DataError

        if self.evidence is None:
            raise DataError(f"Run '{self.name}' was reloaded from {self.out_dir}: it has no live evidence (cache handles).")
        return self.evidence

    def activations(self, target: str, layer: str) -> Any:
        """``Tensor[N, K]`` of one layer, read from the cache (skipped images are zero rows)."""
        return self.live_evidence().activations(target, layer)

    def image_embeddings(self, dissector: str) -> Any:
        """``Tensor[N, D]`` image embeddings of one dissector, read from the cache."""
        return self.live_evidence().image_embeddings(dissector)

    # -- tidy rows ---------------------------------------------------------------------------
    def concept_index(self) -> dict[str, Concept]:
        return {c.text: c for c in self.concepts}

    def rows(self, top: int = 5) -> Iterator[dict[str, Any]]:
        """One tidy row per (label set, layer, neuron): label, score, category, top concepts and the
        label quality columns (``None`` when not computed)."""
        from dissectkit.labelling.column_groups import all_columns

        names = [c.name for c in all_columns()]

        index = self.concept_index()
        grouped = any(c.group for c in self.concepts)
        for ls in self.label_sets:
            for layer, ll in ls.layers.items():
                columns = ls.columns.get(layer, {})
                for unit, ranked in enumerate(ll.neurons):
                    label, score = (ranked[0][0], ranked[0][1]) if ranked else (None, None)
                    concept = index.get(label) if label else None
                    yield {
                        "dissector": ls.dissector,
                        "target": ls.target,
                        "method": ls.method,
                        "layer": layer,
                        "unit": unit,
                        "label": label,
                        "score": score,
                        "no_concept": None if ranked else (ll.reason(unit) or "no concept"),
                        "category": concept.category if concept else None,
                        "subcategory": concept.subcategory if concept else None,
                        "label_group": ((concept.group if concept else None) or label) if grouped else None,
                        "n_concepts": len(ranked),
                        "top_concepts": [c for c, _ in ranked[:top]],
                        "top_scores": [float(s) for _, s in ranked[:top]],
                        **{c: columns[c][unit] if c in columns else None for c in names},
                    }

    # -- persistence ---------------------------------------------------------------------------
    def labels_payload(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "concepts": [c.__dict__ for c in self.concepts],
            "probe_ids": self.probe_ids,
            "layer_infos": {t: [i.__dict__ for i in infos] for t, infos in self.layer_infos.items()},
            "label_sets": [ls.to_dict() for ls in self.label_sets],
            "measures": self.measures,
            "top_images": self.top_images,
        }

    @classmethod
    def load(cls, out_dir: str | Path) -> RunResult:
        """Reload a finished run from its directory (no live handles)."""
        from dissectkit.base.errors import DataError

        out_dir = Path(out_dir)
        labels_path = out_dir / LABELS
        if not out_dir.is_dir():
            raise DataError(f"{out_dir} is not a run directory ({'a file' if out_dir.exists() else 'it does not exist'}). "
                            "Give the folder a `dissectkit run` wrote (it holds labels.json).")
        if not labels_path.exists():
            raise DataError(f"{out_dir} is not a finished dissectkit run: {LABELS} is missing.")
        data = _read_json(labels_path)
        manifest = _read_json(out_dir / MANIFEST) if (out_dir / MANIFEST).exists() else {}
        try:
            return cls._from_payload(out_dir, data, manifest)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise DataError(
                f"{labels_path} is not the labels file of a dissectkit run ({type(exc).__name__}: {exc}); it is damaged "
                "or from another program. Run the recipe again to write it anew."
            ) from None

    @classmethod
    def _from_payload(cls, out_dir: Path, data: dict[str, Any], manifest: dict[str, Any]) -> RunResult:
        if not isinstance(manifest, dict):
            manifest = {}
        return cls(
            name=data.get("name", out_dir.name),
            out_dir=out_dir,
            recipe=manifest.get("recipe", {}),
            concepts=[Concept(**c) for c in data["concepts"]],
            probe_ids=list(data["probe_ids"]),
            label_sets=[LabelSet.from_dict(d) for d in data["label_sets"]],
            layer_infos={
                t: [LayerInfo(i["name"], i["n_neurons"], i["kind"], tuple(i["shape"]) if i.get("shape") else None) for i in infos]
                for t, infos in data.get("layer_infos", {}).items()
            },
            measures=data.get("measures", {}),
            stats=manifest.get("stats", {}),
            top_images=data.get("top_images", {}),
            pages=manifest.get("pages", {}),
        )


def _read_json(path: Path) -> Any:
    """A run file's JSON; a truncated or damaged one is a ``DataError`` naming it and the fix."""
    from dissectkit.base.errors import DataError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path} cannot be read: it is truncated or damaged ({exc}). Run the recipe again to write it anew "
            "(finished chunks are cached, so only the labelling runs)."
        ) from None
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc.strerror or exc}.") from None
