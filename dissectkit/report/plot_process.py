"""The run report's summary plots, drawn from a JSON file of the labels by a child Python process
that loads ``plots.py`` by path while the pages are written, else here (docs/reports.md, "HTML report")."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dissectkit.labelling.measures import layer_threshold
from dissectkit.report import plots

log = logging.getLogger(__name__)

CHILD = (
    "import importlib.util as u, sys; s = u.spec_from_file_location('dissectkit_summary_plots', sys.argv[1]); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); m.main(sys.argv[2:])"
)

WAITING_CHILD = (
    "import importlib.util as u, json, sys; import matplotlib.figure, matplotlib.backends.backend_agg; "
    "s = u.spec_from_file_location('dissectkit_summary_plots', sys.argv[1]); m = u.module_from_spec(s); "
    "s.loader.exec_module(m); line = sys.stdin.readline(); m.main(json.loads(line)) if line.strip() else sys.exit(0)"
)


def early_child() -> subprocess.Popen | None:
    """A plot process started before the report (the ``html`` reporter starts it when the pass
    starts): it imports matplotlib while the run goes on, then waits on stdin for its job
    (:class:`SummaryPlots` ``child=``); it exits when stdin closes without one. ``None`` when it
    cannot start (the report then starts one, or draws here)."""
    try:
        return subprocess.Popen([sys.executable, "-c", WAITING_CHILD, plots.__file__], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    except OSError as exc:
        log.info("No early plot process (%s): the report starts one.", exc)
        return None


def summary_data(run: Any) -> dict[str, Any]:
    """What the summary plots show, as plain data: concept categories and, per label set, each
    layer's top-1 labels, top-1 scores and threshold."""
    return {
        "concepts": {c.text: [c.category, c.subcategory] for c in run.concept_index().values()},
        "sets": [
            {
                "key": ls.key, "method": ls.method,
                "top1": {layer: ll.top1() for layer, ll in ls.layers.items()},
                "scores": {layer: [float(r[0][1]) for r in ll.neurons if r] for layer, ll in ls.layers.items()},
                "thresholds": {layer: layer_threshold(ll) for layer, ll in ls.layers.items()},
            }
            for ls in run.label_sets
        ],
    }


class SummaryPlots:
    """The summary plots of one run being drawn into ``folder`` by a child process: ``child``, one
    :func:`early_child` started before, when it still waits; else one started now."""

    def __init__(self, run: Any, folder: Path, child: subprocess.Popen | None = None) -> None:
        self.data, self.folder = summary_data(run), folder
        fd, name = tempfile.mkstemp(prefix="dissectkit-plots-", suffix=".json")
        self.job = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.data, fh)
        if child is not None and child.poll() is None and child.stdin is not None:
            try:
                child.stdin.write(json.dumps([str(self.job), str(folder)]) + "\n")
                child.stdin.close()
                self.child: subprocess.Popen | None = child
                return
            except OSError:  # it died meanwhile: a fresh one
                child.kill()
                child.wait()
        try:
            self.child = subprocess.Popen(
                [sys.executable, "-c", CHILD, plots.__file__, str(self.job), str(folder)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            log.info("Drawing the summary plots in this process (no child process: %s).", exc)
            self.child = None

    def finish(self) -> None:
        """Wait for the child; draw here when it could not."""
        code = self.child.wait() if self.child is not None else None
        self.job.unlink(missing_ok=True)
        if code != 0:
            if code is not None:
                log.info("The plot process exited with %s; drawing the summary plots in this process.", code)
            plots.summary_plots(self.data, self.folder)

    def cancel(self) -> None:
        """Stop the child (the report failed or was interrupted)."""
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        self.job.unlink(missing_ok=True)
