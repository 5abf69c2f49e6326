"""The op registry and the catalog of named cases every check runs over (:mod:`refnorm.oracle.catalog.base` defines them).

One module per op family declares its ops and cases: :mod:`~refnorm.oracle.catalog.switchnorm` (SN and
the plain normalizers), :mod:`~refnorm.oracle.catalog.exemplarnorm` (EN and the stages of its ratio
generator), :mod:`~refnorm.oracle.catalog.sparsestmax` (sparsemax and SparsestMax) and
:mod:`~refnorm.oracle.catalog.sparse_switchnorm`; :mod:`~refnorm.oracle.catalog.seeds` fixes every
case's seed by its id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from . import exemplarnorm, sparse_switchnorm, sparsestmax, switchnorm
from .base import KINDS, OPS, Case, CaseMaker, Forward, OpInfo

__all__ = ["KINDS", "OPS", "Case", "CaseMaker", "Forward", "OpInfo", "cases"]

OPS.update({
    op.name: op
    for op in (
        switchnorm.SWITCH_NORM,
        switchnorm.PLAIN_NORM,
        sparsestmax.SPARSEMAX,
        sparsestmax.SPARSESTMAX,
        sparse_switchnorm.SPARSE_SWITCH_NORM,
        exemplarnorm.EXEMPLAR_NORM,
        exemplarnorm.EN_EMBEDDING,
        exemplarnorm.EN_CHANNEL_CONV,
        exemplarnorm.EN_CHANNEL_MEAN,
        exemplarnorm.EN_STANDARDIZE,
        exemplarnorm.EN_SOFTMAX,
    )
})

CASE_SOURCES: tuple[Callable[[], Iterator[Case]], ...] = (
    *switchnorm.CASE_SOURCES,
    *exemplarnorm.CASE_SOURCES,
    *sparsestmax.CASE_SOURCES,
    *sparse_switchnorm.CASE_SOURCES,
)
"""Every case source, in catalog order (the order golden manifests list cases in)."""


def cases(kind: str | None = None, op: str | None = None) -> list[Case]:
    """The catalog's cases, optionally only one ``kind`` (``"sample"``, ...) and/or one ``op``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if op is not None and op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {tuple(OPS)}")
    selected = [c for source in CASE_SOURCES for c in source() if (kind is None or c.kind == kind) and (op is None or c.op == op)]
    ids = [c.id for c in selected]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise RuntimeError(f"the catalog has duplicate case ids {duplicates}")  # a bug in refnorm, not in the caller
    return selected
