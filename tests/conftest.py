"""Shared fixtures: the array backends every op runs on, and the hypothesis profile.

Backends (select with ``REFNORM_BACKENDS=numpy,strict,strict-device1,cupy,dask,jax``; all by default):

``numpy``
    NumPy 2 through array-api-compat.
``strict``
    array-api-strict at API version 2024.12 with boolean indexing and data-dependent shapes
    switched off: passing here proves the code uses only the standard.
``strict-device1``
    the same on a non-default device, which catches arrays created on the wrong device.
``cupy``
    CuPy on the first GPU; skipped, with the reason, when CuPy or a GPU is missing.
``dask``
    Dask arrays (``refnorm[dask]``), lazy: every array cut into chunks along the batch and the
    spatial axes (:func:`refnorm.oracle.evaluation.dask_chunks`); value checks are skipped
    (``values_available`` is False), so a test of a value check asks ``backend.checks_values``.
``jax``
    JAX arrays on the CPU with float64 enabled (``refnorm[jax]``), eager (``jax.jit`` is
    ``tests/test_jax.py``'s subject).

Inputs are drawn on the host in float64 and moved to the backend with ``backend.asarray``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import hypothesis
import numpy as np
import pytest

from refnorm._xp import API_VERSION, to_numpy

pytest_plugins = ["pytester"]  # the conformance kit is tested by running pytest on a generated test file

hypothesis.settings.register_profile("refnorm", deadline=None, max_examples=60, derandomize=True, print_blob=True)
hypothesis.settings.register_profile("thorough", deadline=None, max_examples=500)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "refnorm"))


@dataclass(frozen=True)
class Backend:
    """An array library under test, with the device arrays are placed on."""

    name: str
    xp: Any
    device: Any = None
    checks_values: bool = True
    """Whether value checks (NaN, infinity, ...) raise at the call: False for a lazy library (Dask)."""

    def asarray(self, host: Any, dtype: Any = None) -> Any:
        """A host (NumPy) array or nested data as an array of this backend, on its device."""
        host = np.asarray(host)
        dtype = dtype if dtype is not None else getattr(self.xp, str(host.dtype))
        if self.name == "dask":
            import dask.array

            from refnorm.oracle.evaluation import dask_chunks

            return dask.array.from_array(host.astype(dtype), chunks=dask_chunks(host.shape))
        return self.xp.asarray(host, dtype=dtype, device=self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        return to_numpy(array)

    def skip_if_lazy(self, why: str) -> None:
        """Skip on a lazy backend (Dask) a test that needs ``why`` (e.g. hundreds of evaluations, each a
        graph build and a compute); ``tests/test_dask.py`` proves Dask equal to NumPy on every catalog case."""
        if not self.checks_values:
            pytest.skip(f"{self.name} is lazy: {why}; tests/test_dask.py shows its forward and backward equal NumPy's on every catalog case")


def _strict(device_name: str | None) -> Backend:
    array_api_strict = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    array_api_strict.set_array_api_strict_flags(api_version=API_VERSION, boolean_indexing=False, data_dependent_shapes=False)
    device = array_api_strict.Device(device_name) if device_name else None
    return Backend("strict" if device_name is None else f"strict-{device_name}", array_api_strict, device)


def _cupy() -> Backend:
    try:
        import cupy
    except ImportError:
        pytest.skip("CuPy is not installed (pip install 'refnorm[gpu]' on a machine with a CUDA GPU)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001 - any CUDA failure means: no usable GPU
        pytest.skip(f"CuPy cannot reach a GPU ({type(error).__name__}: {error})")
    if count == 0:
        pytest.skip("CuPy is installed but no CUDA device is present")
    import array_api_compat.cupy as cupy_compat

    return Backend("cupy", cupy_compat, None)


def _numpy() -> Backend:
    import array_api_compat.numpy as numpy_compat

    return Backend("numpy", numpy_compat, None)


def _dask() -> Backend:
    pytest.importorskip("dask.array", reason="Dask is not installed (pip install 'refnorm[dask]')")
    import array_api_compat.dask.array as dask_compat

    return Backend("dask", dask_compat, None, checks_values=False)


def _jax() -> Backend:
    jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'refnorm[jax]')")
    jax.config.update("jax_enable_x64", True)  # float64 as on every other backend (JAX defaults to float32)
    import jax.numpy as jnp

    return Backend("jax", jnp, None)


_FACTORIES = {
    "numpy": _numpy,
    "strict": lambda: _strict(None),
    "strict-device1": lambda: _strict("device1"),
    "cupy": _cupy,
    "dask": _dask,
    "jax": _jax,
}
BACKEND_NAMES = [name.strip() for name in os.environ.get("REFNORM_BACKENDS", ",".join(_FACTORIES)).split(",") if name.strip()]
_unknown = set(BACKEND_NAMES) - set(_FACTORIES)
if _unknown:
    raise ValueError(f"REFNORM_BACKENDS names unknown backends {sorted(_unknown)}; expected some of {sorted(_FACTORIES)}")


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every selected backend in turn (see the module docstring)."""
    return _FACTORIES[request.param]()


@pytest.fixture
def numpy_backend() -> Backend:
    """NumPy only: for tests whose subject is the math, not the backend."""
    return _numpy()


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded generator per test."""
    return np.random.default_rng(20261123)
