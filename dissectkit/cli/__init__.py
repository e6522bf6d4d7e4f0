"""The ``dissectkit`` command line (typer): ``app`` holds the commands, ``commands/`` the sub-commands
of other areas. ``main`` is the console script's entry point."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (the ``dissectkit`` console script)."""
    from dissectkit.cli.app import main as run_cli

    return run_cli(argv)
