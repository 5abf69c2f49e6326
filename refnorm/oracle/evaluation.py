"""Run an op of the catalog at given inputs on an array backend: named host arrays, and gradient checks of catalog cases.

The one bridge between an :class:`~refnorm.oracle.catalog.OpInfo` and the arrays a golden file or a
comparison holds: golden generation, golden verification and the conformance kit all call
:func:`evaluate`, which runs the op's forward once (:attr:`OpInfo.forward <refnorm.oracle.catalog.base.OpInfo.forward>`)
and pulls the upstream gradient back through that same forward, and pushes a tangent forward
through it (and, for ops with a second order, differentiates the pullback along that tangent). An
evaluation has eight groups of named arrays:

``input``
    the op's arguments and state (running statistics, ...), as given;
``output``
    the arrays of the forward's output, named by :meth:`refnorm.oracle.catalog.base.OpInfo.output_names` (``y`` for SN);
``intermediate``
    the forward's intermediates and new state (:attr:`Forward.intermediates <refnorm.oracle.catalog.base.Forward.intermediates>`);
``upstream``
    the cotangent of each output (the "upstream gradient" ``dL/dy``);
``grad``
    the pullback of ``upstream``, one gradient per differentiable argument, named after it;
``tangent``
    a tangent per differentiable argument, named after it (the direction of forward mode);
``jvp``
    the pushforward of ``tangent``: the tangent of each output, named after the output (``jvp.y``);
``hvp``
    the second order, for ops that have one (SN, SSN, the plain normalizers, sparsemax,
    SparsestMax): the derivative of the pullback of ``upstream`` along ``tangent``, one array per
    differentiable argument (the Hessian of ``<upstream, y>`` times the tangent), named after it.

The upstream gradient and the tangents of a case are drawn on the host, in float64, by
:func:`draw_upstream` and :func:`draw_tangents`.
:func:`gradcheck_case` runs :func:`refnorm.gradcheck` on a catalog case, as ``refnorm check`` and
the test suite do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from .._xp import API_VERSION, to_numpy_all
from ..ops._validation import DeferredChecks, deferred_checks
from .catalog import OPS, Case, OpInfo
from .gradient_check import GradcheckResult, gradcheck

GROUPS = ("input", "output", "intermediate", "upstream", "grad", "tangent", "jvp", "hvp")
"""The groups of an :class:`Evaluation`, in the order golden files list them (version-1 golden sets
hold the first five)."""

BACKENDS = ("numpy", "array-api-strict", "cupy", "torch", "dask", "jax")
"""Array libraries :func:`evaluate` can run an op on (inputs always start on the host).

``dask`` splits every input into chunks (:func:`~refnorm.oracle.evaluation.dask_chunks`) and computes all results of an
evaluation in one ``dask.compute``; ``jax`` runs eagerly with float64 enabled."""


class Evaluation(NamedTuple):
    """An op evaluated at a point: host NumPy arrays by group and name (module docstring)."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    intermediates: dict[str, np.ndarray]
    upstream: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    tangents: dict[str, np.ndarray]
    jvp: dict[str, np.ndarray]
    """The tangent of each output, by output name (empty for an op without a pushforward)."""
    hvp: dict[str, np.ndarray]
    """The second order, by argument name (empty for an op without one)."""

    def groups(self) -> dict[str, dict[str, np.ndarray]]:
        """``{"input": ..., "output": ..., "intermediate": ..., "upstream": ..., "grad": ..., "tangent": ..., "jvp": ..., "hvp": ...}``."""
        return dict(zip(GROUPS, self, strict=True))

    def forward_arrays(self) -> dict[str, np.ndarray]:
        """Outputs and intermediates, keyed ``"output.y"``, ``"intermediate.xhat"``, ..."""
        return {**_keyed("output", self.outputs), **_keyed("intermediate", self.intermediates)}

    def backward_arrays(self) -> dict[str, np.ndarray]:
        """Gradients, keyed ``"grad.x"``, ``"grad.gamma"``, ..."""
        return _keyed("grad", self.gradients)

    def jvp_arrays(self) -> dict[str, np.ndarray]:
        """The outputs' tangents, keyed ``"jvp.y"``."""
        return _keyed("jvp", self.jvp)

    def hvp_arrays(self) -> dict[str, np.ndarray]:
        """The second order, keyed ``"hvp.x"``, ``"hvp.gamma"``, ..."""
        return _keyed("hvp", self.hvp)


def _keyed(group: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{group}.{name}": array for name, array in arrays.items()}


def draw_upstream(seed: int, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The upstream gradient of a case: ``default_rng([seed, 1]).standard_normal(shape)`` per
    output, in output order (a stream of its own, so adding an input draw never changes it)."""
    rng = np.random.default_rng([seed, 1])
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


def draw_tangents(seed: int, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The tangents of a case: ``default_rng([seed, 2]).standard_normal(shape)`` per differentiable
    argument, in argument order (a stream of its own, like the upstream gradient's)."""
    rng = np.random.default_rng([seed, 2])
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


def cast_floating(arrays: Mapping[str, np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    """``arrays`` with every floating array cast to ``dtype`` (integer and boolean ones kept)."""
    return {name: a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a for name, a in arrays.items()}


def dask_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The chunks :func:`evaluate` gives a host array of ``shape`` on Dask: every axis but the
    second cut in two halves (sizes ``ceil(n / 2)`` and the rest), the second kept whole.

    For an input ``(N, C, *spatial)`` that is two chunks along the batch (SyncSN's shards) and two
    along every spatial axis; channels stay in one chunk. A ``(rows, K)`` logit array is split
    along its rows; 1-d arrays (``gamma``, logits, running statistics) along their only axis.
    """
    return tuple(size if axis == 1 else max(1, -(-size // 2)) for axis, size in enumerate(shape))


def _to_backend(name: str, xp: Any, device: Any, host: np.ndarray) -> Any:
    if name == "dask":
        import dask.array

        return dask.array.from_array(host, chunks=dask_chunks(host.shape))
    return xp.asarray(host, device=device)


@contextlib.contextmanager
def array_backend(name: str) -> Iterator[tuple[Any, Any]]:
    """``(xp, device)`` of a backend in :data:`BACKENDS`, for the duration of the ``with`` block.

    ``array-api-strict`` runs at API version 2024.12 with boolean indexing and data-dependent
    shapes switched off (restored afterwards); ``cupy`` needs a CUDA device; ``jax`` runs with
    float64 enabled (``jax_enable_x64``, restored afterwards) on its default (CPU) device.
    """
    if name == "numpy":
        import array_api_compat.numpy as xp

        yield xp, None
    elif name == "array-api-strict":
        import array_api_strict as xp

        with xp.ArrayAPIStrictFlags(api_version=API_VERSION, boolean_indexing=False, data_dependent_shapes=False):
            yield xp, None
    elif name == "cupy":
        try:
            import array_api_compat.cupy as xp
            import cupy
        except ImportError as error:
            raise RuntimeError(f"backend 'cupy' needs CuPy ({error}); install refnorm[gpu] on a machine with a CUDA GPU") from error
        if cupy.cuda.runtime.getDeviceCount() == 0:
            raise RuntimeError("backend 'cupy': CuPy is installed but no CUDA device is present")
        yield xp, None
    elif name == "torch":
        try:
            import array_api_compat.torch as xp
        except ImportError as error:
            raise RuntimeError(f"backend 'torch' needs PyTorch ({error})") from error
        yield xp, "cpu"
    elif name == "dask":
        try:
            import array_api_compat.dask.array as xp
        except ImportError as error:
            raise RuntimeError(f"backend 'dask' needs Dask ({error}); install refnorm[dask]") from error
        yield xp, None
    elif name == "jax":
        try:
            import jax
            import jax.numpy as xp
        except ImportError as error:
            raise RuntimeError(f"backend 'jax' needs JAX ({error}); install refnorm[jax]") from error
        with jax.enable_x64(True):
            yield xp, None
    else:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(map(repr, BACKENDS))}")


def _hosts_after_checks(named: Mapping[str, Any], checks: DeferredChecks) -> dict[str, np.ndarray]:
    """:func:`_hosts` of the results, after the op's value checks that were deferred on a lazy backend.

    Everything is computed at once (on Dask, one ``dask.compute`` of the forward, the backward and
    the checks); then the first check that fails raises the op's own error, as an eager backend
    raises it. Where computing the results fails outright (a NumPy ``RuntimeWarning`` on a NaN,
    under ``-W error``), the checks are computed alone first, so that the op's error is the one
    raised.
    """
    conditions = {f"check.{index}": condition for index, condition in enumerate(checks.conditions)}
    try:
        hosts = _hosts({**named, **conditions})
    except Exception:
        checks.verify()
        raise
    checks.verify([hosts.pop(key) for key in conditions])
    return hosts


def _hosts(named: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Host copies of named arrays (Python numbers too), lazy ones computed together (one ``dask.compute``)."""
    names = [name for name, value in named.items() if not isinstance(value, bool | int | float)]
    computed = dict(zip(names, to_numpy_all(*(named[name] for name in names)), strict=True))
    return {name: np.asarray(computed[name]) if name in computed else np.asarray(value) for name, value in named.items()}


def evaluate(
    op: OpInfo | str,
    params: Mapping[str, Any],
    inputs: Mapping[str, np.ndarray],
    *,
    upstream: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    backend: str = "numpy",
    dtype: Any = None,
    tangents: Mapping[str, np.ndarray] | None = None,
) -> Evaluation:
    """Run ``op`` at host ``inputs`` on ``backend``: outputs, intermediates, the pullback, the pushforward
    and the second order, from one forward.

    Parameters
    ----------
    op
        An :class:`OpInfo` or the name of one in :data:`refnorm.oracle.catalog.base.OPS`.
    params
        The case's parameters.
    inputs
        Host arrays by name, as ``OpInfo.make_inputs`` returns them.
    upstream
        Cotangent per output name; drawn by :func:`draw_upstream` from ``seed`` when ``None``.
    tangents
        Tangent per differentiable argument; drawn by :func:`draw_tangents` from ``seed`` when ``None``.
    backend
        One of :data:`BACKENDS`; every array is copied there, and every result back.
    dtype
        If given (``"float32"``), floating inputs, the upstream gradient and the tangents are cast to it first.
    """
    op = OPS[op] if isinstance(op, str) else op
    inputs = {name: np.array(a, copy=True) for name, a in inputs.items()}
    if dtype is not None:
        inputs = cast_floating(inputs, dtype)
    with array_backend(backend) as (xp, device), deferred_checks() as checks:
        moved = {name: _to_backend(backend, xp, device, a) for name, a in inputs.items()}
        linearized, named = op.forward(moved, params)
        out = linearized.out
        out_arrays = tuple(out) if isinstance(out, tuple | list) else (out,)
        output_names = op.output_names(out)
        if upstream is None:
            upstream = draw_upstream(seed, {name: tuple(a.shape) for name, a in zip(output_names, out_arrays, strict=True)})
        upstream = {name: np.asarray(upstream[name], dtype=_numpy_dtype(a.dtype)) for name, a in zip(output_names, out_arrays, strict=True)}
        cotangents = tuple(_to_backend(backend, xp, device, upstream[name]) for name in output_names)
        cotangent = cotangents if isinstance(out, tuple | list) else cotangents[0]
        pulled = linearized.pullback(cotangent)
        if tangents is None:
            tangents = draw_tangents(seed, {name: np.shape(inputs[name]) for name in op.arguments})
        like = {name: inputs[name] for name in op.arguments}
        tangents = {name: np.asarray(tangents[name], dtype=like[name].dtype) for name in op.arguments}
        moved_tangents = tuple(_to_backend(backend, xp, device, tangents[name]) for name in op.arguments)
        keyed = {
            **{("output", name): a for name, a in zip(output_names, out_arrays, strict=True)},
            **{("intermediate", name): a for name, a in named.items() if a is not None},
            **{("grad", name): g for name, g in zip(op.arguments, pulled, strict=True) if g is not None},
        }
        if linearized.pushforward is not None:
            pushed = linearized.pushforward(*moved_tangents)
            pushed = tuple(pushed) if isinstance(out, tuple | list) else (pushed,)
            keyed.update({("jvp", name): a for name, a in zip(output_names, pushed, strict=True)})
        if linearized.hvp is not None:
            second = linearized.hvp(cotangent, *moved_tangents)
            keyed.update({("hvp", name): h for name, h in zip(op.arguments, second, strict=True) if h is not None})
        hosts = _hosts_after_checks({f"{group}.{name}": value for (group, name), value in keyed.items()}, checks)
    groups = {group: {name: hosts[f"{group}.{name}"] for (g, name) in keyed if g == group} for group in ("output", "intermediate", "grad", "jvp", "hvp")}
    return Evaluation(inputs, groups["output"], groups["intermediate"], upstream, groups["grad"], tangents, groups["jvp"], groups["hvp"])


def _numpy_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype of an array library's floating dtype (``float32``/``float64`` by name)."""
    return np.dtype(str(dtype).rsplit(".", 1)[-1])


def evaluate_case(case: Case, *, backend: str = "numpy") -> Evaluation:
    """:func:`evaluate` at a catalog case's own inputs, upstream gradient and tangents, in float64."""
    if case.kind == "error":
        raise ValueError(f"{case.id} is an error case: it has no values to evaluate, only an exception to raise")
    return evaluate(case.op, case.params, case.inputs(), seed=case.seed, backend=backend)


def gradcheck_case(case: Case, *, directions: int = 3, backend: str = "numpy", **overrides: Any) -> GradcheckResult:
    """:func:`refnorm.gradcheck` of a catalog case's backward at its own inputs.

    The point is the case's differentiable arguments (:meth:`OpInfo.arguments_of
    <refnorm.oracle.catalog.base.OpInfo.arguments_of>`), on ``backend``; every other input (running
    statistics, ...) and the case's params stay fixed. The checker draws its directions from the
    case's seed, and takes the case's own options (:attr:`Case.gradcheck
    <refnorm.oracle.catalog.base.Case.gradcheck>`, e.g. a larger first step for a large offset);
    ``overrides`` (any keyword of :func:`refnorm.gradcheck`: ``seed``, ``step``, ``mode``, ``wrt``,
    ...) take precedence over both. The report names each argument as the op does (``x``,
    ``gamma``, ...).

    Raises
    ------
    ValueError
        For an error case (it has no gradient, only an exception to raise).
    """
    if case.kind == "error":
        raise ValueError(f"{case.id} is an error case: it has no gradient to check, only an exception to raise")
    op = OPS[case.op]
    options = {"directions": directions, "seed": case.seed, **case.gradcheck, **overrides}
    with array_backend(backend) as (xp, device):
        inputs = {name: _to_backend(backend, xp, device, a) for name, a in case.inputs().items()}

        def linearized(*point: Any) -> Any:
            return op.linearize(op.with_arguments(inputs, point), case.params)

        return gradcheck(linearized, op.arguments_of(inputs), names=op.arguments, **options)
