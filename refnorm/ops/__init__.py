"""refnorm's math: the normalization ops, their forward passes and hand-derived derivatives.

Nothing here imports from :mod:`refnorm.oracle` (the gradient checker, the catalog, golden files
and the conformance kit); the ops return :class:`~refnorm.ops.linearized.Linearized` values that
the tooling consumes.
"""
