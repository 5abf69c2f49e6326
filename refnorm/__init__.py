"""refnorm: the reference implementation of Switchable, Sparse Switchable and Exemplar Normalization.

Forward passes and hand-derived backward passes written once against the Python array API (NumPy,
CuPy, array-api-strict, PyTorch tensors, JAX arrays, Dask arrays), hand-derived forward-mode derivatives (JVPs) of every op
and second order (HVPs) of SN, SSN and the plain normalizers, each checked with finite differences
and against each other.
"""

from importlib.metadata import PackageNotFoundError, version

from .ops.conventions import CONVENTIONS, Preset, preset
from .ops.exemplarnorm import (
    ExemplarNormCache,
    ExemplarNormGrads,
    ExemplarNormOutput,
    ExemplarNormParams,
    exemplar_norm_backward,
    exemplar_norm_forward,
    exemplar_norm_init,
    exemplar_norm_jvp,
    exemplar_norm_linearize,
)
from .ops._validation import DeferredChecks, deferred_checks
from .ops.linearized import Linearized
from .oracle.gradient_check import GradcheckResult, assert_gradcheck, gradcheck
from .ops.plainnorm import (
    PlainNormGrads,
    PlainNormOutput,
    plain_norm_backward,
    plain_norm_forward,
    plain_norm_hvp,
    plain_norm_jvp,
    plain_norm_linearize,
)
from .ops.running import (
    BatchAverage,
    RunningStats,
    accumulate,
    ema_update,
    empty_batch_average,
    finalize,
    initial_running_stats,
)
from .ops.simplex import SOFTMAX, FixedRatios, RatioFunction, Softmax, softmax, softmax_hvp, softmax_jvp, softmax_vjp
from .ops.sparse_switchnorm import (
    FixedSides,
    SparseSwitchNormOutput,
    radius_schedule,
    sparse_switch_norm_backward,
    sparse_switch_norm_forward,
    sparse_switch_norm_hvp,
    sparse_switch_norm_jvp,
    sparse_switch_norm_linearize,
)
from .ops.sparsestmax import (
    SparsestMax,
    SparsestMaxStages,
    sparsemax,
    sparsemax_hvp,
    sparsemax_jvp,
    sparsemax_linearize,
    sparsemax_vjp,
    sparsestmax,
    sparsestmax_forward,
    sparsestmax_hvp,
    sparsestmax_jvp,
    sparsestmax_linearize,
    sparsestmax_vjp,
)
from .ops.statistics import NORMALIZERS, InstanceMoments, Layout, ScopeMoments, instance_moments, scope_moments
from .ops.switchnorm import (
    SwitchNormCache,
    SwitchNormGrads,
    SwitchNormOutput,
    switch_norm_backward,
    switch_norm_forward,
    switch_norm_hvp,
    switch_norm_jvp,
    switch_norm_linearize,
)
from .ops.switchnorm_sharded import switch_norm_sharded_backward, switch_norm_sharded_forward

try:
    __version__ = version("refnorm")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "BatchAverage",
    "CONVENTIONS",
    "DeferredChecks",
    "ExemplarNormCache",
    "ExemplarNormGrads",
    "ExemplarNormOutput",
    "ExemplarNormParams",
    "FixedRatios",
    "FixedSides",
    "GradcheckResult",
    "InstanceMoments",
    "Layout",
    "Linearized",
    "NORMALIZERS",
    "PlainNormGrads",
    "PlainNormOutput",
    "Preset",
    "RatioFunction",
    "RunningStats",
    "SOFTMAX",
    "ScopeMoments",
    "Softmax",
    "SparseSwitchNormOutput",
    "SparsestMax",
    "SparsestMaxStages",
    "SwitchNormCache",
    "SwitchNormGrads",
    "SwitchNormOutput",
    "__version__",
    "accumulate",
    "assert_gradcheck",
    "deferred_checks",
    "ema_update",
    "empty_batch_average",
    "exemplar_norm_backward",
    "exemplar_norm_forward",
    "exemplar_norm_init",
    "exemplar_norm_jvp",
    "exemplar_norm_linearize",
    "finalize",
    "gradcheck",
    "initial_running_stats",
    "instance_moments",
    "plain_norm_backward",
    "plain_norm_forward",
    "plain_norm_hvp",
    "plain_norm_jvp",
    "plain_norm_linearize",
    "preset",
    "radius_schedule",
    "scope_moments",
    "softmax",
    "softmax_hvp",
    "softmax_jvp",
    "softmax_vjp",
    "sparse_switch_norm_backward",
    "sparse_switch_norm_forward",
    "sparse_switch_norm_hvp",
    "sparse_switch_norm_jvp",
    "sparse_switch_norm_linearize",
    "sparsemax",
    "sparsemax_hvp",
    "sparsemax_jvp",
    "sparsemax_linearize",
    "sparsemax_vjp",
    "sparsestmax",
    "sparsestmax_forward",
    "sparsestmax_hvp",
    "sparsestmax_jvp",
    "sparsestmax_linearize",
    "sparsestmax_vjp",
    "switch_norm_backward",
    "switch_norm_forward",
    "switch_norm_hvp",
    "switch_norm_jvp",
    "switch_norm_linearize",
    "switch_norm_sharded_backward",
    "switch_norm_sharded_forward",
]
