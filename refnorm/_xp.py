"""Array-namespace, device and dtype helpers: the one place refnorm talks to array-api-compat.

Every numerical function in refnorm starts with ``xp = namespace(x, ...)`` and then uses only
functions of the Python array API standard (revision :data:`API_VERSION`). That is what lets the
same source run on NumPy, CuPy, array-api-strict and PyTorch tensors. The rules the code follows:

* no in-place update of an argument (results are new arrays);
* no boolean indexing and no data-dependent shapes (masks are applied with ``where`` or by
  multiplication);
* every array created from scratch is created on the device of the input (:func:`full_like_on`);
* constants are Python floats, so they never promote float32 work to float64.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

API_VERSION = "2024.12"
"""The array API standard revision refnorm is written against."""

Array = Any
"""Any array-API array (NumPy, CuPy, array-api-strict, PyTorch, ...)."""


def namespace(*arrays: Array) -> Any:
    """Return the array-API namespace shared by ``arrays`` (Python scalars and ``None`` ignored).

    Raises ``TypeError`` when the arrays come from different libraries.

    No ``api_version`` is requested: array-api-compat answers a request for 2024.12 on a CuPy or
    PyTorch array with a ``UserWarning`` on every call (its wrappers implement 2025.12, a superset
    of what refnorm uses), an error under ``-W error`` test suites; and array-api-strict treats
    the request as a global setting, which a library must not change behind its caller's back.
    """
    return array_api_compat.array_namespace(*arrays)


def device(x: Array) -> Any:
    """The device ``x`` lives on (``"cpu"`` for NumPy)."""
    return array_api_compat.device(x)


def is_real_floating(xp: Any, x: Array) -> bool:
    """True when ``x`` has a real floating dtype (float32 or float64)."""
    return xp.isdtype(x.dtype, "real floating")


def full_like_on(x: Array, shape: tuple[int, ...], value: float, xp: Any) -> Array:
    """A new array of ``shape`` filled with ``value``, with the dtype and device of ``x``."""
    return xp.full(shape, value, dtype=x.dtype, device=device(x))


def asarray_on(values: Any, like: Array, xp: Any) -> Array:
    """``values`` (host data or Python numbers) as an array with the dtype and device of ``like``."""
    return xp.asarray(values, dtype=like.dtype, device=device(like))


def all_finite(xp: Any, x: Array) -> bool:
    """True when no element of ``x`` is NaN or infinite (one reduction, one host sync)."""
    return bool(xp.all(xp.isfinite(x)))


def to_numpy(x: Array) -> np.ndarray:
    """A host NumPy copy of ``x``: for I/O (golden files, the command line) and for tests.

    Numerical code never calls this; it would silently move device arrays to the host.
    """
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy().copy()
    if isinstance(x, np.ndarray | np.generic):
        return np.array(x, copy=True)
    return np.array(np.from_dlpack(x), copy=True)


def available_backends() -> dict[str, str]:
    """Array libraries refnorm can run on in this environment, with their versions or why not."""
    import importlib

    found: dict[str, str] = {"numpy": np.__version__}
    for name in ("array_api_strict", "cupy", "torch"):
        try:
            module = importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - report any import failure, do not crash
            found[name] = f"not available ({type(error).__name__}: {error})"
            continue
        found[name] = getattr(module, "__version__", "unknown version")
    return found
