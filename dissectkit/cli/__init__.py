"""The ``dissectkit`` command line (typer): ``app`` holds the commands, ``commands/`` the sub-commands
of other areas."""
