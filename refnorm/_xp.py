"""Array-namespace, device and dtype helpers: the one place refnorm talks to array-api-compat.

Every numerical function in refnorm starts with ``xp = namespace(x, ...)`` and then uses only
functions of the Python array API standard (revision :data:`API_VERSION`). That is what lets the
same source run on NumPy, CuPy, array-api-strict, PyTorch tensors, JAX arrays (also under
``jax.jit``) and Dask arrays. The rules the code follows:

* no in-place update of an argument (results are new arrays);
* no boolean indexing and no data-dependent shapes (masks are applied with ``where`` or by
  multiplication);
* every array created from scratch is created on the device of the input (:func:`full_like_on`);
* constants are Python floats, so they never promote float32 work to float64;
* no value of an array is read on the host (``bool``, ``int``, ``float``) except through
  :func:`values_available`: a Dask array's values exist only after ``compute()``, and a JAX array
  traced by ``jax.jit`` (or ``grad``, ``vmap``) has none. Reading one would run the user's whole
  Dask graph behind their back, or fail under ``jax.jit``.
"""

from __future__ import annotations

import sys
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


def is_jax_tracer(x: Any) -> bool:
    """True for a JAX array being traced (inside ``jax.jit``, ``jax.grad``, ``jax.vmap``, ...).

    JAX itself is not imported: a JAX array exists only once JAX is.
    """
    return array_api_compat.is_jax_array(x) and isinstance(x, sys.modules["jax"].core.Tracer)


def values_available(x: Array) -> bool:
    """True when the values of ``x`` can be read now, cheaply: ``bool(x)`` neither computes a graph nor fails.

    False for a Dask array (lazy: reading a value computes the graph that produces it, every
    time) and for a JAX tracer (no values exist while ``jax.jit`` traces; ``bool`` raises
    ``TracerBoolConversionError``). True for NumPy, CuPy, PyTorch, array-api-strict and eager
    JAX arrays. Other libraries are asked through ``array_api_compat.is_lazy_array``.

    Every value check of refnorm (:func:`refnorm.ops._validation.require`) and every decision
    taken from values (SSN's fixed sides) asks this first.
    """
    if array_api_compat.is_jax_array(x):
        return not is_jax_tracer(x)
    if array_api_compat.is_dask_array(x):
        return False
    return not array_api_compat.is_lazy_array(x)


def all_finite(xp: Any, x: Array) -> bool:
    """True when no element of ``x`` is NaN or infinite (one reduction, one host sync).

    Only for arrays whose values are available (:func:`values_available`); ``TypeError`` for a
    lazy or traced array, whose finiteness is a lazy 0-d array (``xp.all(xp.isfinite(x))``),
    not a Python bool.
    """
    if not values_available(x):
        raise TypeError(
            f"all_finite needs an array whose values are available, got a lazy or traced {type(x).__name__}; "
            "use xp.all(xp.isfinite(x)) in the graph instead"
        )
    return bool(xp.all(xp.isfinite(x)))


def to_numpy(x: Array) -> np.ndarray:
    """A host NumPy copy of ``x``: for I/O (golden files, the command line) and for tests.

    Numerical code never calls this; it would silently move device arrays to the host, and
    compute a Dask array (a Dask array's graph is computed here: pass many to ``to_numpy_all``
    to compute them together).
    """
    if array_api_compat.is_dask_array(x):
        return to_numpy_all(x)[0]
    if array_api_compat.is_jax_array(x):
        return np.array(x, copy=True)
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy().copy()
    if isinstance(x, np.ndarray | np.generic):
        return np.array(x, copy=True)
    return np.array(np.from_dlpack(x), copy=True)


def to_numpy_all(*arrays: Array) -> list[np.ndarray]:
    """Host NumPy copies of ``arrays``, Dask arrays among them computed in ONE ``dask.compute``.

    Computing Dask arrays one by one would run their shared graph (the forward that produced
    them all) once per array; one call runs it once, on the current scheduler (a
    ``distributed.Client`` when one is active). Other arrays go through :func:`to_numpy`.
    """
    lazy = [i for i, a in enumerate(arrays) if array_api_compat.is_dask_array(a)]
    hosts: list[Any] = list(arrays)
    if lazy:
        import dask

        for i, value in zip(lazy, dask.compute(*(arrays[i] for i in lazy)), strict=True):
            hosts[i] = np.array(value, copy=True)
    return [a if i in lazy else to_numpy(a) for i, a in enumerate(hosts)]


OPTIONAL_BACKENDS = ("array_api_strict", "cupy", "torch", "jax", "dask", "distributed")
"""Array libraries (and Dask's cluster scheduler) refnorm runs on when installed; ``refnorm info`` lists them."""


def available_backends() -> dict[str, str]:
    """Array libraries refnorm can run on in this environment, with their versions or why not.

    A library is looked up without being imported (``importlib.util.find_spec`` and its
    installed metadata): importing JAX or CuPy takes seconds, and ``refnorm info`` only reports.
    """
    import importlib.metadata
    import importlib.util

    distributions = {"array_api_strict": "array-api-strict", "cupy": None, "torch": "torch", "jax": "jax", "dask": "dask",
                     "distributed": "distributed"}  # fmt: skip
    found: dict[str, str] = {"numpy": np.__version__}
    for name in OPTIONAL_BACKENDS:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as error:
            found[name] = f"not available ({type(error).__name__}: {error})"
            continue
        if spec is None:
            found[name] = "not installed"
            continue
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "unknown version")
            continue
        candidates = [distributions[name]] if distributions[name] else [d for d in importlib.metadata.packages_distributions().get(name, [])]
        for distribution in candidates:
            try:
                found[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            found[name] = "installed (unknown version)"
    return found
