"""``python -m dissectkit ...``: the CLI, also as ``torchrun --nproc-per-node N -m dissectkit run RECIPE``
(ranks other than 0 print nothing on stdout; their errors still reach stderr)."""

from dissectkit.cli.app import entry

if __name__ == "__main__":
    entry()
