"""The official SparsestMax, transcribed plainly, one vector at a time (test and benchmark helper).

A line-by-line NumPy transcription of ``sparsemax`` and ``sparsestmax`` in
``switchablenorms/Sparse_SwitchNorm`` ``utils/ssn_utils.py`` (HEAD 875db48), kept deliberately
literal, including what refnorm fixes: the exact float test ``max(w) - min(w) == 1`` for one-hot,
the recursive ``math.sqrt`` radius, the ``distance >= rad`` test at every recursion and no guard
against a zero distance. It shares no code with refnorm, so it is an independent oracle.

**The centre is float32.** The released code builds the centre of the support as
``ind = torch.tensor(w > 0).float(); u = ind / torch.sum(ind)``: ``.float()`` is float32 whatever
the input's dtype (and so is every later radius, ``sqrt(rad_in**2 - sum((u - u_in)**2))``,
computed from float32 centres). PyTorch promotes ``w - u`` to float64 for float64 input, so the
sphere step is taken in float64 about a float32 centre. :func:`official_sparsestmax` does exactly
that; it is what the released code computes. Consequences in float64 (tested in
``tests/test_official_ssn.py``): at an exact tie of ``K = 3`` logits the sparsemax output ``1/3``
is not the float32 centre ``float32(1/3)``, so the distance is ~1.7e-8, not 0: ``zeros(3)`` and
``ones(3)`` give ``float32(1/3) - r/sqrt(3)`` three times (sum ``1 - sqrt(3) r``), off the
simplex, not NaN; where the centre is exact in float32 (an edge midpoint, ``K = 2``, ``K = 4``
ties of two) a tie still gives NaN; and away from ties the output differs from the algorithm with
an exact centre by up to ~1e-7.

:func:`official_algorithm_sparsestmax` is the same algorithm with the centre in the input's dtype:
the released algorithm without the float32 rounding, which is what refnorm's ``"official"``
variant implements and what the tests compare it with to rounding.

The backward is what autograd computes through that code: the support masks and the radii are
constants, so the gradient is the chain of the stage Jacobians (spec-notes §3.6). Two forms:
:func:`official_vjp` applies each stage's VJP with vector operations (what autograd costs, used by
the benchmark); :func:`official_jacobian` multiplies explicit ``K x K`` matrices (the plainest
possible form, used by the tests).
"""

from __future__ import annotations

import math

import numpy as np


def official_sparsemax(v: np.ndarray) -> np.ndarray:
    """``sparsemax(v, z=1)`` of the official code (1-D ``v``).

    ``ind`` is float32 there too (``torch.arange(...).float()``); its values 1..K are exact, and
    ``cssv / ind`` and ``cssv[...] / rho`` are promoted to the input's dtype, as in PyTorch.
    """
    v_sorted = np.sort(v)[::-1]
    cssv = np.cumsum(v_sorted) - 1.0
    ind = np.arange(1, 1 + len(v), dtype=np.float32)
    cond = v_sorted - cssv / ind > 0
    rho = ind[cond][-1]
    tau = cssv[cond][-1] / rho
    return np.maximum(v - tau, 0.0)


def _sparsestmax(v: np.ndarray, rad_in: float, u_in: np.ndarray | None, stages: list | None, centre_dtype: np.dtype | None) -> np.ndarray:
    """The official recursion with the support centre in ``centre_dtype`` (``None``: ``v``'s dtype)."""
    w = official_sparsemax(v)
    support = (w > 0).astype(centre_dtype or v.dtype)  # torch.tensor(w > 0).float(): float32
    if stages is not None:
        stages.append(("sparsemax", support.astype(v.dtype)))
    if max(w) - min(w) == 1:
        return w
    u = support / np.sum(support)
    if u_in is None:
        rad = rad_in
    else:
        rad = math.sqrt(rad_in**2 - np.sum((u - u_in) ** 2))  # in the centre's dtype, as PyTorch does
    distance = np.linalg.norm(w - u)  # w - u promoted to v's dtype
    if distance >= rad:
        return w
    p = rad * (w - u) / distance + u
    if stages is not None:
        stages.append(("sphere", rad, distance, (w - u) / distance))
    if min(p) < 0:
        return _sparsestmax(p, rad, u, stages, centre_dtype)
    return np.clip(p, 0.0, 1.0)


def official_sparsestmax(v: np.ndarray, rad_in: float = 0.0, u_in: np.ndarray | None = None, stages: list | None = None) -> np.ndarray:
    """``sparsestmax(v, rad_in, u_in)`` of the official code, literally: the support centre in
    float32 whatever ``v``'s dtype (module docstring). Appends the stages it runs to ``stages``.

    A stage is ``("sparsemax", support)`` or ``("sphere", rad, distance, direction)``.
    """
    return _sparsestmax(v, rad_in, u_in, stages, np.dtype(np.float32))


def official_algorithm_sparsestmax(v: np.ndarray, rad_in: float = 0.0, u_in: np.ndarray | None = None, stages: list | None = None) -> np.ndarray:
    """The official algorithm with the support centre in ``v``'s dtype: refnorm's ``"official"``
    variant, not what the released code computes in float64 (module docstring)."""
    return _sparsestmax(v, rad_in, u_in, stages, None)


def official_vjp(g: np.ndarray, stages: list) -> np.ndarray:
    """The gradient autograd returns: the stage VJPs applied last stage first (vector operations)."""
    for stage in reversed(stages):
        if stage[0] == "sparsemax":
            support = stage[1]
            g = support * (g - np.sum(support * g) / np.sum(support))
        else:
            _, rad, distance, direction = stage
            g = rad / distance * (g - direction * np.dot(direction, g))
    return g


def official_jacobian(stages: list, K: int) -> np.ndarray:
    """The ``K x K`` Jacobian of the recorded stages, as a product of explicit matrices."""
    jacobian = np.eye(K)
    for stage in stages:
        if stage[0] == "sparsemax":
            s = stage[1]
            stage_jacobian = np.diag(s) - np.outer(s, s) / np.sum(s)
        else:
            _, rad, distance, d = stage
            stage_jacobian = rad / distance * (np.eye(K) - np.outer(d, d))
        jacobian = stage_jacobian @ jacobian
    return jacobian
