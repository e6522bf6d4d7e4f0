"""``python -m dissectkit.cli``: the same as ``python -m dissectkit``."""

from dissectkit.__main__ import _main

if __name__ == "__main__":
    _main()
