"""The official SparsestMax, transcribed plainly, one vector at a time (test and benchmark helper).

A line-by-line NumPy transcription of ``sparsemax`` and ``sparsestmax`` in
``switchablenorms/Sparse_SwitchNorm`` ``utils/ssn_utils.py`` (HEAD 875db48), kept deliberately
literal, including what refnorm fixes: the exact float test ``max(w) - min(w) == 1`` for one-hot,
the recursive ``math.sqrt`` radius, the ``distance >= rad`` test at every recursion and no guard
against a zero distance. It shares no code with refnorm, so it is an independent oracle for the
``"official"`` variant.

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
    """``sparsemax(v, z=1)`` of the official code (1-D ``v``)."""
    v_sorted = np.sort(v)[::-1]
    cssv = np.cumsum(v_sorted) - 1.0
    ind = np.arange(1, 1 + len(v), dtype=v.dtype)
    cond = v_sorted - cssv / ind > 0
    rho = ind[cond][-1]
    tau = cssv[cond][-1] / rho
    return np.maximum(v - tau, 0.0)


def official_sparsestmax(v: np.ndarray, rad_in: float = 0.0, u_in: np.ndarray | None = None, stages: list | None = None) -> np.ndarray:
    """``sparsestmax(v, rad_in, u_in)`` of the official code; appends the stages it runs to ``stages``.

    A stage is ``("sparsemax", support)`` or ``("sphere", rad, distance, direction)``.
    """
    w = official_sparsemax(v)
    support = (w > 0).astype(v.dtype)
    if stages is not None:
        stages.append(("sparsemax", support))
    if max(w) - min(w) == 1:
        return w
    u = support / np.sum(support)
    if u_in is None:
        rad = rad_in
    else:
        rad = math.sqrt(rad_in**2 - np.sum((u - u_in) ** 2))
    distance = np.linalg.norm(w - u)
    if distance >= rad:
        return w
    p = rad * (w - u) / distance + u
    if stages is not None:
        stages.append(("sphere", rad, distance, (w - u) / distance))
    if min(p) < 0:
        return official_sparsestmax(p, rad, u, stages)
    return np.clip(p, 0.0, 1.0)


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
