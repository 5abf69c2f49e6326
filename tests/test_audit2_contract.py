"""Audit 2, class 7 (error contract): arrays that are float64 in another layout, NumPy integers,
masked arrays.

* A big-endian ``>f8`` array (read from a file) is float64: it was refused as a mixed precision
  ("dy has dtype >f8, expected float64") next to native arrays, by every op and by ``gradcheck``.
* ``np.int64`` is an int (as :func:`~refnorm.ops._validation.check_int` says everywhere else):
  ``exemplar_norm_init(kernel_size=)``, ``radius_schedule`` and ``FixedSides`` refused it.
* A ``numpy.ma.MaskedArray`` is refused, naming the argument: some operations honoured its mask and
  others did not (``sparsemax`` of ``[1, --, 3]`` returned ``[0, 2, 0.5]``, off the simplex).

Read-only, non-contiguous, negative-stride, Fortran-ordered and memory-mapped arrays give the
values of the contiguous array (the audit found no fault there; these tests keep it so).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import refnorm
from contract_calls import layer_arrays


def _big_endian(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder(">"))


def _read_only(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b.flags.writeable = False
    return b


def _strided(a: np.ndarray) -> np.ndarray:
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    every_other = tuple(slice(None, None, 2) for _ in a.shape)
    big[every_other] = a
    return big[every_other]


def _reversed_twice(a: np.ndarray) -> np.ndarray:
    return a[::-1].copy()[::-1]


LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "big-endian": _big_endian,
    "read-only": _read_only,
    "non-contiguous": _strided,
    "negative-stride": _reversed_twice,
    "fortran-order": np.asfortranarray,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("argument", ["x", "gamma", "mean_logits"])
def test_switch_norm_gives_the_values_of_the_contiguous_array_for_any_layout(layout: str, argument: str):
    arrays = layer_arrays()
    reference = refnorm.switch_norm_forward(**arrays)
    dy = np.random.default_rng(1).standard_normal(reference.y.shape)
    expected = refnorm.switch_norm_backward(dy, reference.cache)
    arrays[argument] = LAYOUTS[layout](arrays[argument])
    out = refnorm.switch_norm_forward(**arrays)
    np.testing.assert_allclose(out.y, reference.y, rtol=1e-13, atol=1e-15)
    for got, want in zip(refnorm.switch_norm_backward(LAYOUTS[layout](dy), out.cache), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_a_memory_mapped_input_gives_the_values_of_the_array(tmp_path: Path):
    arrays = layer_arrays()
    mapped = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="w+", shape=arrays["x"].shape)
    mapped[...] = arrays["x"]
    np.testing.assert_array_equal(refnorm.switch_norm_forward(**{**arrays, "x": mapped}).y, refnorm.switch_norm_forward(**arrays).y)


def test_big_endian_inputs_are_float64_for_every_argument_at_once():
    arrays = layer_arrays()
    reference = refnorm.switch_norm_forward(**arrays)
    out = refnorm.switch_norm_forward(**{name: _big_endian(a) for name, a in arrays.items()})
    np.testing.assert_array_equal(out.y, reference.y)
    dy = np.ones(reference.y.shape)
    for got, want in zip(refnorm.switch_norm_backward(_big_endian(dy), out.cache), refnorm.switch_norm_backward(dy, reference.cache), strict=True):
        np.testing.assert_array_equal(got, want)


def test_gradcheck_takes_a_big_endian_float64_argument():
    logits = np.array([[0.3, -0.2, 0.9, 0.85], [1.0, 0.1, 0.2, 0.95]])
    assert refnorm.gradcheck(refnorm.sparsemax_linearize, [_big_endian(logits)]).passed


def test_a_mixed_precision_is_still_refused_whatever_the_byte_order():
    arrays = layer_arrays()
    arrays["gamma"] = arrays["gamma"].astype(">f4")
    with pytest.raises(TypeError, match=r"gamma has dtype >f4, expected float64"):
        refnorm.switch_norm_forward(**arrays)


def test_kernel_size_may_be_a_numpy_integer():
    x = layer_arrays()["x"]
    with_numpy = refnorm.exemplar_norm_init(4, x, kernel_size=np.int64(3))
    with_python = refnorm.exemplar_norm_init(4, x, kernel_size=3)
    for got, want in zip(with_numpy, with_python, strict=True):
        np.testing.assert_array_equal(got, want)


def test_radius_schedule_takes_numpy_integers_and_returns_a_float():
    radius = refnorm.radius_schedule(np.int64(5), np.int32(10))
    assert type(radius) is float and radius == 0.5


def test_fixed_sides_may_name_a_normalizer_with_a_numpy_integer():
    arrays = layer_arrays()
    with_numpy = refnorm.sparse_switch_norm_forward(**arrays, radius=0.3, fixed=refnorm.FixedSides(mean=np.int64(1)))
    with_python = refnorm.sparse_switch_norm_forward(**arrays, radius=0.3, fixed=refnorm.FixedSides(mean=1))
    np.testing.assert_array_equal(with_numpy.y, with_python.y)


def _masked(a: np.ndarray) -> np.ma.MaskedArray:
    mask = np.zeros(a.shape, bool)
    mask.flat[0] = True
    return np.ma.masked_array(a, mask=mask)


@pytest.mark.parametrize("op", [refnorm.sparsemax, refnorm.softmax, refnorm.sparsestmax])
def test_a_masked_array_is_refused_naming_the_argument(op: Callable[..., object]):
    logits = np.array([[1.0, 2.0, 3.0], [0.5, 0.1, -0.2]])
    arguments = {"radius": 0.3} if op is refnorm.sparsestmax else {}
    with pytest.raises(TypeError, match=r"logits is a masked array"):
        op(_masked(logits), **arguments)


@pytest.mark.parametrize("argument", ["x", "gamma"])
def test_switch_norm_refuses_a_masked_input(argument: str):
    arrays = layer_arrays()
    arrays[argument] = _masked(arrays[argument])
    with pytest.raises(TypeError, match=rf"{argument} is a masked array"):
        refnorm.switch_norm_forward(**arrays)


def test_a_backward_refuses_a_masked_dy():
    out = refnorm.switch_norm_forward(**layer_arrays())
    with pytest.raises(TypeError, match=r"dy is a masked array"):
        refnorm.switch_norm_backward(_masked(np.ones(out.y.shape)), out.cache)
