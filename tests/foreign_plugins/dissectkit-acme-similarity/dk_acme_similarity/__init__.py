"""A third party's similarity: the mean product of standardised activations and concept scores."""

from __future__ import annotations

from dissectkit.plugin import Register, Similarity, hookimpl


class AcmeDot(Similarity):
    """``S[k, c]``: mean over images of the standardised activation of neuron ``k`` times the standardised
    probability of concept ``c`` (``P``: images x concepts; ``A``: the activations, images x neurons)."""

    def __call__(self, P, A):
        def standardised(x):
            x = x.float()
            return (x - x.mean(0)) / x.std(0).clamp_min(1e-8)

        return standardised(A.materialise()).T @ standardised(P) / P.shape[0]


@hookimpl
def dissectkit_register_similarities(register: Register) -> None:
    register("acme-dot", lambda params, ctx: AcmeDot(),
             description="Mean product of standardised activations and concept scores (third party).")
