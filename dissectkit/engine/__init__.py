"""The run engine, one job per module:

- :mod:`~dissectkit.engine.resolve`: build and check every component before any image is read;
- :mod:`~dissectkit.engine.extract`: the single cached pass (pooled activations, spatial maps and
  aligned masks for mask methods, image embeddings) and its typed result ``Extraction``;
- :mod:`~dissectkit.engine.spatial`: the bounded spatial evidence and how methods stream it;
- :mod:`~dissectkit.engine.label`: every method on every (dissector, target, layer);
- :mod:`~dissectkit.engine.outputs`: the ``RunResult`` and the files of the run directory;
- :mod:`~dissectkit.engine.distributed`: the ranks of a ``torchrun`` run;
- :mod:`~dissectkit.engine.runtime`: seeds, intra-op threads, progress;
- :mod:`~dissectkit.engine.pipeline`: ``run``, sequencing the stages.

(The package is ``engine``, not ``run``: a subpackage ``dissectkit.run`` would shadow ``dk.run``.)
"""

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
