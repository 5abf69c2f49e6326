"""How many times SN's and EN's forward and backward sweep over full-size arrays (``x``, ``dy``, ``xhat``, ...).

    python -m benchmarks passes [--shape 8x64x56x56] [--convention official] [--ops SN EN]

Every NumPy operation goes through a *ufunc* (elementwise arithmetic, comparisons, and the
reductions behind ``sum``, ``mean`` and ``vecdot``). The input is wrapped in an ``ndarray``
subclass whose ``__array_ufunc__`` logs each ufunc call, and the results are wrapped again, so
every operation on data derived from the input is seen. A call is a *pass* when one of its
operands has the size of ``x``; the log counts, per pass, the full-size arrays it reads and the
ones it writes. (Operations on ``(N, C)`` statistics and ``(K,)`` ratios are not passes: they
cost nothing next to these.)

These counts are a property of the code, not of the machine: they are what ``docs/benchmarks.md``
records before and after each optimisation. Time follows them, because for ResNet-50 layer
sizes every pass is limited by memory bandwidth.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import refnorm


@dataclass
class PassLog:
    """Full-size ufunc calls: ``(name, arrays read, arrays written)`` in order."""

    full_size: int
    calls: list[tuple[str, int, int]] = field(default_factory=list)

    def record(self, name: str, inputs: tuple[Any, ...], outputs: tuple[Any, ...]) -> None:
        read = {_address(a) for a in inputs if isinstance(a, np.ndarray) and a.size >= self.full_size}
        reads = len(read)  # an array used twice (vecdot(c, c)) is read once
        writes = sum(1 for a in outputs if isinstance(a, np.ndarray) and a.size >= self.full_size)
        if reads or writes:
            self.calls.append((name, reads, writes))

    @property
    def passes(self) -> int:
        return len(self.calls)

    @property
    def reads(self) -> int:
        return sum(r for _, r, _ in self.calls)

    @property
    def writes(self) -> int:
        return sum(w for _, _, w in self.calls)

    def summary(self) -> str:
        kinds = Counter(name for name, _, _ in self.calls)
        listed = ", ".join(f"{name} x{count}" if count > 1 else name for name, count in kinds.items())
        return f"{self.passes:>3} passes, {self.reads:>3} full-size reads, {self.writes:>3} writes   ({listed})"


def _address(a: np.ndarray) -> tuple[int, tuple[int, ...]]:
    return (a.__array_interface__["data"][0], a.strides)


class Counted(np.ndarray):
    """An ``ndarray`` that logs every ufunc call it takes part in to :attr:`log`."""

    log: PassLog | None = None

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, out: Any = None, **kwargs: Any) -> Any:
        plain = tuple(a.view(np.ndarray) if isinstance(a, Counted) else a for a in inputs)
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, Counted) else o for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        results = result if isinstance(result, tuple) else (result,)
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        if Counted.log is not None:
            Counted.log.record(name, plain, results)
        wrapped = tuple(r.view(Counted) if isinstance(r, np.ndarray) else r for r in results)
        return wrapped if isinstance(result, tuple) else wrapped[0]


def count(function: Any, full_size: int) -> PassLog:
    """Run ``function()`` with logging on; return the log."""
    Counted.log = PassLog(full_size)
    try:
        function()
        return Counted.log
    finally:
        Counted.log = None


def layer_passes(op: str, shape: tuple[int, ...], convention: str, dtype: str = "float64") -> tuple[PassLog, PassLog]:
    """The logs of one forward of ``op`` (``"SN"`` or ``"EN"``; training, running statistics,
    ``check_finite=True``) and of its backward."""
    from refnorm.ops import exemplarnorm as en

    rng = np.random.default_rng(0)
    C = shape[1]
    x = rng.standard_normal(shape).astype(dtype).view(Counted)
    dy = rng.standard_normal(shape).astype(dtype).view(Counted)
    gamma, beta, logits = np.ones(C, dtype), np.zeros(C, dtype), np.ones(3, dtype)
    running = refnorm.initial_running_stats(C, gamma)
    outputs = {}
    if op == "SN":

        def forward() -> None:
            outputs["cache"] = refnorm.switch_norm_forward(x, gamma, beta, logits, logits, running=running, convention=convention).cache

        backward = refnorm.switch_norm_backward
    else:
        params = en.exemplar_norm_init(C, gamma)

        def forward() -> None:
            outputs["cache"] = en.exemplar_norm_forward(x, *params, running=running, convention=convention).cache

        backward = en.exemplar_norm_backward
    forward_log = count(forward, x.size)
    backward_log = count(lambda: backward(dy, outputs["cache"]), x.size)
    return forward_log, backward_log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks passes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="8x64x56x56", help="input shape (default 8x64x56x56)")
    parser.add_argument("--convention", choices=("paper", "official"), default="official")
    parser.add_argument("--ops", nargs="+", choices=("SN", "EN"), default=["SN", "EN"])
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split("x"))
    print(f"{shape}, convention {args.convention!r}, training: full-size array operations")
    for op in args.ops:
        forward_log, backward_log = layer_passes(op, shape, args.convention)
        print(f"  {op} forward   {forward_log.summary()}")
        print(f"  {op} backward  {backward_log.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
