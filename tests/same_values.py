"""One comparison shared by the backend tests (``test_dask.py``, ``test_jax.py``, ``test_cluster.py``):
an evaluation on another array library equals the NumPy evaluation to float64 rounding (and the
ratio functions' derivatives those tests evaluate on each library, :func:`ratio_derivatives`).

"To float64 rounding" is the criterion ``refnorm golden verify`` applies to a recomputed case
(:func:`refnorm.oracle.golden._agree`: ``|a - e| <= 1e-9 |e| + 1e-12 * scale``, the scale being
the largest entry of the case's arrays of the same direction), not a conformance tolerance: the
same computation on another library may only round differently.

A case the catalog declares ill-conditioned (``Case.conditioning``: an input offset of 1e4 cancels
4 digits in ``x - mean``) rounds further apart under another summation order than a
well-conditioned one. Dask sums with NumPy's kernels chunk by chunk and stays inside the plain
bound on every case; XLA (JAX) has kernels and a summation order of its own, and for it
(``widen_ill_conditioned=True``) the absolute part is :data:`ILL_CONDITIONED_FACTOR` times larger
on those cases only. Measured on EN at offset 1e4 (``exemplar_norm/random-output-train-offset1e4``),
``grad.x`` uses 0.84 (Dask), 0.91 (PyTorch) and 1.25 (JAX) of the plain bound.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

import refnorm
from refnorm.oracle import golden
from refnorm.oracle.catalog import Case, cases
from refnorm.oracle.evaluation import Evaluation

SELECTION = os.environ.get("REFNORM_CATALOG_SELECTION", "all")
"""Which catalog cases the backend sweeps run (``REFNORM_CATALOG_SELECTION``, a selection of
:data:`refnorm.oracle.golden.SELECTIONS`): ``all`` by default; ``shipped`` (every sample case and
the reference cases of the package's golden set) in ``.ci/run``'s Dask and JAX stage, whose budget
the whole catalog would exceed (about 9 minutes on Dask and 6 on JAX, single-threaded)."""
if SELECTION not in golden.SELECTIONS:
    raise ValueError(f"REFNORM_CATALOG_SELECTION={SELECTION!r}; expected one of {sorted(golden.SELECTIONS)}")


def sweep(op: str, *kinds: str) -> list[Case]:
    """The cases of ``op`` of the given kinds that a backend sweep runs (:data:`SELECTION`)."""
    return [case for kind in kinds for case in cases(kind=kind, op=op) if SELECTION == "all" or case.shipped]

ILL_CONDITIONED_FACTOR = 10.0
"""How much wider the absolute part of the rounding bound is for a case with a declared ``conditioning``."""


def keyed_results(evaluation: Evaluation) -> dict[str, np.ndarray]:
    """Outputs, intermediates, gradients, JVPs and HVPs of an evaluation, keyed ``output.y``,
    ``intermediate.xhat``, ``grad.x``, ``jvp.y``, ``hvp.x`` (every group a golden file stores but the
    inputs, the upstream gradient and the tangents, which the evaluation was given)."""
    return {**evaluation.forward_arrays(), **evaluation.backward_arrays(), **evaluation.jvp_arrays(), **evaluation.hvp_arrays()}


DIFFERENTIATES = {"jvp": "output", "hvp": "grad"}
"""The group a JVP or HVP is the derivative of (along a standard-normal tangent): its rounding floor."""


def _floored(scales: Mapping[str, float]) -> dict[str, float]:
    """``scales`` with the scale of every ``jvp.*`` (``hvp.*``) array at least the largest scale of the
    outputs (gradients) it differentiates.

    A JVP or HVP that is zero in exact arithmetic throughout (SN's HVP at a ``(1, 1, 1, 1)`` input,
    where ``xhat`` is exactly 0) holds only rounding noise of the products that form it, whose size
    is that of the function it differentiates times the tangent's (order one): judged against the
    noise alone, no other summation order could agree with it. The scales of the forward and the
    backward are unchanged."""
    floors: dict[str, float] = {}
    for key, scale in scales.items():
        group = key.split(".", 1)[0]
        floors[group] = max(floors.get(group, 0.0), scale)
    return {key: max(scale, floors.get(DIFFERENTIATES.get(key.split(".", 1)[0], ""), 0.0)) for key, scale in scales.items()}


def assert_same_to_rounding(
    actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], case: Case, what: str = "", *, widen_ill_conditioned: bool = False
) -> float:
    """Every array of ``expected`` (NumPy's evaluation of ``case``) is in ``actual``, with its dtype
    and shape, equal to float64 rounding (integer and boolean arrays exactly); no array is missing
    or extra. Returns the largest error relative to its rounding scale."""
    what = f"{case.id}{f' ({what})' if what else ''}"
    assert set(actual) == set(expected), f"{what}: arrays differ: {sorted(set(actual) ^ set(expected))}"
    factor = ILL_CONDITIONED_FACTOR if widen_ill_conditioned and case.conditioning else 1.0
    scales = {key: factor * scale for key, scale in _floored(golden._rounding_scales(expected)).items()}
    worst = 0.0
    for key, reference in expected.items():
        value = np.asarray(actual[key])
        assert value.dtype == reference.dtype and value.shape == reference.shape, (
            f"{what} {key}: {value.dtype}{value.shape}, expected {reference.dtype}{reference.shape}"
        )
        if not np.issubdtype(reference.dtype, np.floating):
            assert np.array_equal(value, reference), f"{what} {key}: {value} != {reference}"
            continue
        ok, abs_error, rel_error = golden._agree(value, reference, scales[key])
        assert ok, f"{what} {key}: max abs error {abs_error:.3e} (relative to the case's scale {rel_error:.3e}) beyond float64 rounding"
        worst = max(worst, rel_error)
    return worst


def ratio_derivatives(logits, dratios, dlogits) -> dict[str, tuple]:
    """``softmax_*``, ``sparsemax_*`` and ``sparsestmax_*``: value, VJP, JVP and HVP of each, on any
    array library (the Dask and JAX tests compare them with NumPy's)."""
    softmax, sparsemax = refnorm.softmax(logits), refnorm.sparsemax(logits)
    ratios, stages = refnorm.sparsestmax_forward(logits, 0.5)
    return {
        "softmax": (softmax, refnorm.softmax_vjp(dratios, softmax), refnorm.softmax_jvp(dlogits, softmax), refnorm.softmax_hvp(dratios, softmax, dlogits)),
        "sparsemax": (sparsemax, refnorm.sparsemax_vjp(dratios, sparsemax), refnorm.sparsemax_jvp(dlogits, sparsemax),
                      refnorm.sparsemax_hvp(dratios, sparsemax, dlogits)),
        "sparsestmax": (ratios, refnorm.sparsestmax_vjp(dratios, stages), refnorm.sparsestmax_jvp(dlogits, stages),
                        refnorm.sparsestmax_hvp(dratios, stages, dlogits)),
    }  # fmt: skip
