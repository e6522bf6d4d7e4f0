"""The synthetic mammography world: generator, first-party models, training and benchmark.

Only numpy-level modules (``vocab``, ``generator``, ``text``, ``probe``, ``concepts``) are safe to
import without torch; ``models``, ``components``, ``training`` and ``bench`` load torch.
"""
