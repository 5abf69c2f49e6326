"""The op registry and the catalog of named cases every check runs over (:mod:`refnorm.oracle.catalog.base` defines them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .base import KINDS, OPS, Case, OpInfo
from .exemplarnorm import (
    EN_CHANNEL_CONV, EN_CHANNEL_MEAN, EN_EMBEDDING, EN_SOFTMAX, EN_STANDARDIZE, EXEMPLAR_NORM, _channel_conv_references,
    _channel_conv_samples, _channel_mean_samples, _embedding_errors, _embedding_references, _embedding_samples,
    _exemplar_norm_errors, _exemplar_norm_references, _exemplar_norm_samples, _softmax_references, _softmax_samples,
    _standardize_references, _standardize_samples,
)  # fmt: skip
from .sparse_switchnorm import SPARSE_SWITCH_NORM, _sparse_switch_norm_errors, _sparse_switch_norm_references, _sparse_switch_norm_samples
from .sparsestmax import (
    SPARSEMAX, SPARSESTMAX, _sparsemax_errors, _sparsemax_references, _sparsemax_samples, _sparsestmax_errors,
    _sparsestmax_references, _sparsestmax_samples,
)  # fmt: skip
from .switchnorm import (
    PLAIN_NORM, SWITCH_NORM, _plain_norm_errors, _plain_norm_references, _plain_norm_samples, _switch_norm_errors,
    _switch_norm_references, _switch_norm_samples,
)  # fmt: skip

__all__ = ["KINDS", "OPS", "Case", "OpInfo", "cases"]

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

OPS.update({
    op.name: op
    for op in (
        SWITCH_NORM,
        PLAIN_NORM,
        SPARSEMAX,
        SPARSESTMAX,
        SPARSE_SWITCH_NORM,
        EXEMPLAR_NORM,
        EN_EMBEDDING,
        EN_CHANNEL_CONV,
        EN_CHANNEL_MEAN,
        EN_STANDARDIZE,
        EN_SOFTMAX,
    )
})

_CASE_SOURCES: tuple[Callable[[], Iterator[Case]], ...] = (
    _switch_norm_samples,
    _switch_norm_references,
    _switch_norm_errors,
    _plain_norm_samples,
    _plain_norm_references,
    _plain_norm_errors,
    _exemplar_norm_samples,
    _exemplar_norm_references,
    _exemplar_norm_errors,
    _embedding_samples,
    _embedding_references,
    _embedding_errors,
    _channel_conv_samples,
    _channel_conv_references,
    _channel_mean_samples,
    _standardize_samples,
    _standardize_references,
    _softmax_samples,
    _softmax_references,
    _sparsemax_samples,
    _sparsemax_references,
    _sparsemax_errors,
    _sparsestmax_samples,
    _sparsestmax_references,
    _sparsestmax_errors,
    _sparse_switch_norm_samples,
    _sparse_switch_norm_references,
    _sparse_switch_norm_errors,
)


def cases(kind: str | None = None, op: str | None = None) -> list[Case]:
    """The catalog's cases, optionally only one ``kind`` (``"sample"``, ...) and/or one ``op``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if op is not None and op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {tuple(OPS)}")
    selected = [c for source in _CASE_SOURCES for c in source() if (kind is None or c.kind == kind) and (op is None or c.op == op)]
    ids = [c.id for c in selected]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise RuntimeError(f"the catalog has duplicate case ids {duplicates}")  # a bug in refnorm, not in the caller
    return selected

