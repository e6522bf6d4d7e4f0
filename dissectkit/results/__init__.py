"""What a run produces: ``RunResult`` and ``LabelSet``, the top images per neuron and the
cache-backed evidence reporters read."""
