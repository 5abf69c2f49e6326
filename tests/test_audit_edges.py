"""Audit, class 6 (silent wrong numbers at the edges): SN's logit derivatives on constant input far
from 0.

On constant input every scope's mean is the same number ``M`` and ``y = beta`` exactly, whatever
the logits: the derivatives along the mean logits are exactly 0. Formed from ``sum_k w_k mu^k``
(and its tangent ``sum_k w'_k mu^k``) they cancel only to the rounding of ``|M|``: at ``M = 1e150``
the JVP along the mean logits was ~1.4e136 and, for one element, the backward's ``dmean_logits``
~1.6e136. refnorm takes each mean about the instance mean ``mu^in`` (exact: the ratio functions'
VJP, JVP and HVP are blind to a gradient equal for every normalizer, the ratios summing to 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from refnorm import SwitchNormGrads, switch_norm_backward, switch_norm_forward, switch_norm_jvp

LOGITS = np.array([0.3, -0.2, 0.5])


def _forward(shape: tuple[int, ...], M: float):
    C = shape[1]
    return switch_norm_forward(np.full(shape, M), np.ones(C), np.zeros(C), LOGITS, LOGITS)


@pytest.mark.parametrize("M", [3.0, 1e8])
def test_the_jvp_along_the_mean_logits_is_zero_on_constant_input(M):
    """The control at ordinary magnitudes (exactly 0 at 1e8; rounding at 3)."""
    out = _forward((2, 3, 2, 2), M)
    tangents = SwitchNormGrads(np.zeros((2, 3, 2, 2)), np.zeros(3), np.zeros(3), np.array([1.0, 0.0, -1.0]), np.zeros(3))
    assert np.max(np.abs(switch_norm_jvp(tangents, out.cache))) <= 1e-12


def test_the_jvp_along_the_mean_logits_is_zero_on_constant_input_at_1e150():
    out = _forward((2, 3, 2, 2), 1e150)
    tangents = SwitchNormGrads(np.zeros((2, 3, 2, 2)), np.zeros(3), np.zeros(3), np.array([1.0, 0.0, -1.0]), np.zeros(3))
    assert np.max(np.abs(switch_norm_jvp(tangents, out.cache))) <= 1e-12


def test_the_mean_logit_gradient_of_one_element_at_1e150_is_zero():
    out = _forward((1, 1, 1, 1), 1e150)
    assert np.array_equal(out.y, np.zeros((1, 1, 1, 1)))  # y = beta exactly, whatever the logits
    assert np.max(np.abs(switch_norm_backward(np.ones((1, 1, 1, 1)), out.cache).dmean_logits)) <= 1e-12
