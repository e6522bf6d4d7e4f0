"""The run engine, one job per module (docs/architecture.md, "Modules of the host"). The package is
``engine``, not ``run``: a subpackage ``dissectkit.run`` would shadow ``dk.run``."""

from dissectkit.engine.extract import Extraction, activation_key, embedding_key, extract_and_embed
from dissectkit.engine.label import TextEncoder, label_all
from dissectkit.engine.outputs import versions, write_outputs
from dissectkit.engine.pipeline import run
from dissectkit.engine.resolve import Resolved, TargetSlot, build_context, probe_ids, resolve
from dissectkit.engine.runtime import seed_everything
from dissectkit.results.run_result import RunResult

__all__ = [
    "Extraction",
    "Resolved",
    "RunResult",
    "TargetSlot",
    "TextEncoder",
    "activation_key",
    "build_context",
    "embedding_key",
    "extract_and_embed",
    "label_all",
    "probe_ids",
    "resolve",
    "run",
    "seed_everything",
    "versions",
    "write_outputs",
]
