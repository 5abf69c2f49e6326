"""Independent oracles for sparsemax and SparsestMax, sharing no code with refnorm (test helpers).

* :func:`bisection_sparsemax`: sparsemax as the root of ``sum(max(z - tau, 0)) = 1``, found by
  bisection (a second algorithm, no sort).
* :func:`brute_force_sparsestmax`: the minimiser of ``||p - z||`` over simplex points with
  ``||p - 1/K|| >= r``, by enumerating every face of the simplex (exact for small ``K``).
* :func:`slsqp_sparsestmax`: the same problem handed to ``scipy.optimize.minimize(method="SLSQP")``
  from several starting points (a numerical optimiser that knows nothing about faces).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.optimize


def bisection_sparsemax(z: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Sparsemax over the last axis by bisection on the threshold ``tau`` (float64, any batch shape)."""
    z = np.asarray(z, dtype=np.float64)
    low = np.max(z, axis=-1, keepdims=True) - 1.0  # sum(max(z - low, 0)) >= 1
    high = np.max(z, axis=-1, keepdims=True)  # sum(max(z - high, 0)) = 0
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        too_low = np.sum(np.maximum(z - middle, 0.0), axis=-1, keepdims=True) > 1.0
        low, high = np.where(too_low, middle, low), np.where(too_low, high, middle)
    return np.maximum(z - 0.5 * (low + high), 0.0)


def objective(p: np.ndarray, z: np.ndarray) -> float:
    return float(np.sum((p - z) ** 2))


def brute_force_sparsestmax(z: np.ndarray, radius: float) -> np.ndarray:
    """``argmin ||p - z||^2`` over ``{p in simplex, ||p - u0|| >= radius}``, one vector, by face enumeration.

    The minimiser lies in the relative interior of one face ``F``. Either the ball constraint is
    inactive there (then it is the projection onto the simplex, sparsemax), or the point lies on
    the sphere ``||p - u0|| = r`` inside ``aff(F)``: a sphere about the face centre ``u_F`` of
    radius ``h = sqrt(r^2 - ||u_F - u0||^2)``, on which the only local minimiser of the distance
    to ``z`` is the point nearest to ``z``'s projection ``q`` onto ``aff(F)``,
    ``u_F + h (q - u_F)/||q - u_F||``; when ``|F| = 2`` that sphere is two points, both candidates.
    Every feasible candidate is scored and the best returned.
    """
    z = np.asarray(z, dtype=np.float64)
    K = z.shape[0]
    u0 = np.full(K, 1.0 / K)
    candidates = []
    projection = bisection_sparsemax(z)
    if np.linalg.norm(projection - u0) >= radius:
        candidates.append(projection)
    for size in range(1, K + 1):
        for face in itertools.combinations(range(K), size):
            face = list(face)
            centre = np.zeros(K)
            centre[face] = 1.0 / size
            h2 = radius**2 - np.sum((centre - u0) ** 2)
            if size == 1:
                if h2 <= 1e-15:  # a vertex is feasible when r <= sqrt((K-1)/K)
                    candidates.append(centre)
                continue
            if h2 < 0:
                continue
            tangent = np.zeros(K)
            tangent[face] = z[face] - np.mean(z[face])
            norm = np.linalg.norm(tangent)
            if size == 2:
                edge = np.zeros(K)
                edge[face] = (1.0, -1.0)
                points = [centre + math.sqrt(h2) * sign * edge / math.sqrt(2.0) for sign in (1.0, -1.0)]
            elif norm > 0:
                points = [centre + math.sqrt(h2) * tangent / norm]
            else:
                points = []
            candidates.extend(p for p in points if np.min(p) >= -1e-13)
    scores = [objective(p, z) for p in candidates]
    return candidates[int(np.argmin(scores))]


def slsqp_sparsestmax(z: np.ndarray, radius: float, starts: int, rng: np.random.Generator) -> np.ndarray | None:
    """The best feasible point SLSQP finds from the vertices and ``starts`` random simplex points (None if none)."""
    z = np.asarray(z, dtype=np.float64)
    K = z.shape[0]
    u0 = np.full(K, 1.0 / K)
    constraints = [
        {"type": "eq", "fun": lambda p: np.sum(p) - 1.0, "jac": lambda p: np.ones(K)},
        {"type": "ineq", "fun": lambda p: np.sum((p - u0) ** 2) - radius**2, "jac": lambda p: 2.0 * (p - u0)},
    ]
    initial = [np.eye(K)[k] for k in range(K)] + list(rng.dirichlet(np.ones(K), size=starts))
    best, best_value = None, math.inf
    for x0 in initial:
        result = scipy.optimize.minimize(
            lambda p: np.sum((p - z) ** 2), x0, jac=lambda p: 2.0 * (p - z), method="SLSQP",
            bounds=[(0.0, 1.0)] * K, constraints=constraints, options={"ftol": 1e-14, "maxiter": 500},
        )  # fmt: skip
        p = result.x
        feasible = abs(np.sum(p) - 1.0) < 1e-9 and np.min(p) > -1e-9 and np.linalg.norm(p - u0) >= radius - 1e-9
        if feasible and objective(p, z) < best_value:
            best, best_value = p, objective(p, z)
    return best
