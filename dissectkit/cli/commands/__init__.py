"""Sub-commands contributed by first-party areas; each module exposes ``register(app)``."""

COMMAND_MODULES = (
    "dissectkit.cli.commands.data",
    "dissectkit.cli.commands.synth",
    "dissectkit.cli.commands.compare",
    "dissectkit.cli.commands.plugin",
    "dissectkit.cli.commands.evaluate",
    "dissectkit.cli.commands.concepts",
)
