"""One comparison shared by the backend tests (``test_dask.py``, ``test_jax.py``, ``test_cluster.py``):
an evaluation on another array library equals the NumPy evaluation to float64 rounding.

"To float64 rounding" is the criterion ``refnorm golden verify`` applies to a recomputed case
(:func:`refnorm.oracle.golden._agree`: ``|a - e| <= 1e-9 |e| + 1e-12 * scale``, the scale being
the largest entry of the case's arrays of the same direction), not a conformance tolerance: the
same computation on another library may only round differently.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from refnorm.oracle import golden
from refnorm.oracle.evaluation import Evaluation


def keyed_results(evaluation: Evaluation) -> dict[str, np.ndarray]:
    """Outputs, intermediates and gradients of an evaluation, keyed ``output.y``, ``intermediate.xhat``, ``grad.x``."""
    return {**evaluation.forward_arrays(), **evaluation.backward_arrays()}


def assert_same_to_rounding(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], what: str) -> float:
    """Every array of ``expected`` (NumPy's evaluation) is in ``actual``, with its dtype and shape,
    equal to float64 rounding (integer and boolean arrays exactly); no array is missing or extra.
    Returns the largest error relative to its rounding scale."""
    assert set(actual) == set(expected), f"{what}: arrays differ: {sorted(set(actual) ^ set(expected))}"
    scales = golden._rounding_scales(expected)
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
