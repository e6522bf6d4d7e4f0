"""Sub-commands contributed by first-party areas; each module exposes ``register(app)``."""

COMMAND_MODULES = (
    "dissectkit.commands.data",
    "dissectkit.commands.synth",
    "dissectkit.commands.compare",
    "dissectkit.commands.plugin",
)
