"""``python -m dissectkit ...``: the CLI, also as ``torchrun --nproc-per-node N -m dissectkit run RECIPE``
(ranks other than 0 print nothing on stdout; their errors still reach stderr)."""

from __future__ import annotations

import os
import sys


def _main() -> None:
    if os.environ.get("RANK", "0") not in ("", "0"):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    from dissectkit.cli.app import main

    sys.exit(main())


if __name__ == "__main__":
    _main()
