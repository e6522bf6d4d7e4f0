"""``python -m dissectkit.cli``: the same as ``python -m dissectkit``."""

from dissectkit.cli.app import entry

if __name__ == "__main__":
    entry()
