"""First-party components, each module a pluggy plugin registered like any third party's."""

BUILTIN_MODULES = (
    "dissectkit.builtin.probes",
    "dissectkit.builtin.concepts",
    "dissectkit.builtin.targets",
    "dissectkit.builtin.dissectors",
    "dissectkit.builtin.similarities",
    "dissectkit.builtin.methods",
    "dissectkit.builtin.reporters",
    "dissectkit.builtin.synthetic",
)
