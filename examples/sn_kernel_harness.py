"""A Switchable Normalization "kernel" and its test harness, written the way a C++ or CUDA project
writes them, judged by ``refnorm golden compare``.

Nothing here imports refnorm: the harness reads the golden set's ``manifest.json`` with ``json``
and each case's ``.npz`` with ``numpy.load`` (a C++ harness would use nlohmann/json and cnpy), runs
the kernel on ``input.*`` and ``upstream.*``, and writes what the kernel computed under the golden
names into ``RESULTS/<op>/<case name>.npz``:

* ``output.y`` and ``grad.x``, ``grad.gamma``, ``grad.beta``, ``grad.mean_logits``,
  ``grad.var_logits`` (what ``refnorm golden compare`` requires);
* ``intermediate.mean_<k>``, ``intermediate.var_<k>`` per normalizer and the mixed
  ``intermediate.mean``, ``intermediate.var`` (optional: they locate a disagreement at its stage)
  and, with running statistics, ``intermediate.new_running_mean`` / ``new_running_var``.

The kernel is plain loops over ``n``, ``c`` and the ``M`` positions of a channel (any rank: the
spatial axes are flattened, ``(N, C)`` input has ``M = 1``), in the results' dtype
(``--dtype float32`` computes in float32 throughout, like a ``float`` kernel). It implements
IN, LN and BN in any subset and order, the paper and official variance conventions, training and
evaluation, and the running-statistics update; not GN, so its cases get no results file and the
comparison excludes them (``--exclude '*gn*'``).

``--plant-bug`` plants the mistake a port makes when it reuses a framework's unbiased variance:
BN's variance divided by ``N*M - 1`` instead of ``N*M`` (forward and backward consistently, so a
gradient check of the kernel alone still passes). The comparison finds it in the cases with BN in
training, at ``intermediate.var_bn``, off by exactly ``N*M / (N*M - 1)`` (every other statistic
agrees), then ``intermediate.var``, ``output.y`` and the gradients. (For ``(N, C)`` input in the
official convention the planted factor is ``N / (N - 1)``, which is what SwitchNorm1d does anyway.)

Run::

    python examples/sn_kernel_harness.py GOLDEN_DIR RESULTS [--dtype float32] [--plant-bug]
    refnorm golden compare RESULTS --against GOLDEN_DIR --op switch_norm --exclude '*gn*'

(``refnorm info`` prints where the shipped golden set is; ``examples/test_sn_kernel_harness.py``
runs both and checks the verdicts.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

SCOPES = ("in", "ln", "bn")


def pooled_instances(scope: str, n: int, c: int, N: int, C: int) -> list[tuple[int, int]]:
    """The instances ``(n', c')`` whose moments the statistic of ``scope`` at ``(n, c)`` pools."""
    if scope == "in":
        return [(n, c)]
    if scope == "ln":
        return [(n, k) for k in range(C)]
    return [(k, c) for k in range(N)]  # bn


def switch_norm_kernel(x, gamma, beta, mean_logits, var_logits, running_mean, running_var, dy, *, spatial, normalizers, convention,
                       training, eps, momentum, plant_bug=False):  # fmt: skip
    """Forward and backward of SN on ``x`` of shape ``(N, C, M)``, in ``x``'s dtype, with loops.

    ``spatial``: whether the layer input had spatial axes (``(N, C)`` input is passed as ``M = 1``
    and is not spatial). Returns ``(y, grads, intermediates)``.
    """
    T = x.dtype.type
    N, C, M = x.shape
    K = len(normalizers)
    d = 1 if convention == "official" and spatial else 0  # the official IN variance divides by M - 1

    # Per-instance moments, two passes.
    mean_in = np.zeros((N, C), x.dtype)
    var_in = np.zeros((N, C), x.dtype)
    for n in range(N):
        for c in range(C):
            s = T(0)
            for i in range(M):
                s += x[n, c, i]
            mean_in[n, c] = s / T(M)
            q = T(0)
            for i in range(M):
                q += (x[n, c, i] - mean_in[n, c]) ** 2
            var_in[n, c] = q / T(M - d) if M - d > 0 else T(0)

    # Each scope: the pooled mean, and the law of total variance over the pooled instances.
    # factor[k]: the official (N, C) input takes LN and BN unbiased over their scope; the planted
    # bug takes BN unbiased over its N*M values.
    stats_mean = np.zeros((K, N, C), x.dtype)
    stats_var = np.zeros((K, N, C), x.dtype)
    factor = [T(1)] * K
    for k, scope in enumerate(normalizers):
        count = {"in": 1, "ln": C, "bn": N}[scope]
        if convention == "official" and not spatial and scope != "in":
            factor[k] = T(count / (count - 1))
        if plant_bug and scope == "bn" and N * M > 1:
            factor[k] = T(N * M / (N * M - 1))
        for n in range(N):
            for c in range(C):
                pool = pooled_instances(scope, n, c, N, C)
                m = T(0)
                for p in pool:
                    m += mean_in[p]
                m = m / T(len(pool))
                v = T(0)
                for p in pool:
                    v += var_in[p] + (mean_in[p] - m) ** 2
                stats_mean[k, n, c] = m
                stats_var[k, n, c] = factor[k] * v / T(len(pool))
    intermediates = {}
    bn = normalizers.index("bn") if "bn" in normalizers else None
    if bn is not None and running_mean is not None:
        if training:
            intermediates["new_running_mean"] = np.array([momentum * running_mean[c] + (1 - momentum) * stats_mean[bn, 0, c] for c in range(C)], x.dtype)
            intermediates["new_running_var"] = np.array([momentum * running_var[c] + (1 - momentum) * stats_var[bn, 0, c] for c in range(C)], x.dtype)
        else:
            for n in range(N):
                for c in range(C):
                    stats_mean[bn, n, c], stats_var[bn, n, c] = running_mean[c], running_var[c]
            intermediates["new_running_mean"], intermediates["new_running_var"] = running_mean.copy(), running_var.copy()

    def softmax(z):
        top = max(z)
        e = [np.exp(v - top) for v in z]
        total = sum(e, T(0))
        return [v / total for v in e]

    w, w_var = softmax(mean_logits), softmax(var_logits)
    mean = np.zeros((N, C), x.dtype)
    var = np.zeros((N, C), x.dtype)
    for n in range(N):
        for c in range(C):
            for k in range(K):
                mean[n, c] += w[k] * stats_mean[k, n, c]
                var[n, c] += w_var[k] * stats_var[k, n, c]
    inv_std = np.zeros((N, C), x.dtype)
    xhat = np.zeros_like(x)
    y = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            inv_std[n, c] = T(1) / np.sqrt(var[n, c] + T(eps))
            for i in range(M):
                xhat[n, c, i] = (x[n, c, i] - mean[n, c]) * inv_std[n, c]
                y[n, c, i] = gamma[c] * xhat[n, c, i] + beta[c]
    intermediates.update(mean=mean, var=var)
    for k, scope in enumerate(normalizers):  # refnorm's shapes: (N, C) for IN, (N, 1) for LN, (1, C) for BN
        rows, columns = (1 if scope == "bn" else N), (1 if scope == "ln" else C)
        intermediates[f"mean_{scope}"] = stats_mean[k, :rows, :columns].copy()
        intermediates[f"var_{scope}"] = stats_var[k, :rows, :columns].copy()

    # Backward. A = dL/dmean, B = dL/dvar per (n, c); then every scope statistic passes them on.
    A = np.zeros((N, C), x.dtype)
    B = np.zeros((N, C), x.dtype)
    dx = np.zeros_like(x)
    dgamma = np.zeros(C, x.dtype)
    dbeta = np.zeros(C, x.dtype)
    for n in range(N):
        for c in range(C):
            sa, sb = T(0), T(0)
            for i in range(M):
                g = gamma[c] * dy[n, c, i]
                sa += g
                sb += g * xhat[n, c, i]
                dx[n, c, i] = g * inv_std[n, c]
                dgamma[c] += dy[n, c, i] * xhat[n, c, i]
                dbeta[c] += dy[n, c, i]
            A[n, c] = -inv_std[n, c] * sa
            B[n, c] = T(-0.5) * inv_std[n, c] ** 2 * sb
    dw = [T(0)] * K
    dw_var = [T(0)] * K
    for k, scope in enumerate(normalizers):
        for n in range(N):
            for c in range(C):
                dw[k] += A[n, c] * stats_mean[k, n, c]
                dw_var[k] += B[n, c] * stats_var[k, n, c]
        if scope == "bn" and not training:
            continue  # running statistics are constants
        for n in range(N):
            for c in range(C):
                pool = pooled_instances(scope, n, c, N, C)
                a = w[k] * A[n, c] / T(len(pool) * M)
                b = w_var[k] * B[n, c] * factor[k] / T(len(pool))
                for p in pool:
                    for i in range(M):
                        dvar = T(2) * (x[p][i] - mean_in[p]) / T(M - d) if M - d > 0 else T(0)
                        dvar += T(2) * (mean_in[p] - stats_mean[k, n, c]) / T(M)
                        dx[p][i] += a + b * dvar
    grads = {
        "x": dx,
        "gamma": dgamma,
        "beta": dbeta,
        "mean_logits": np.array([w[k] * (dw[k] - sum((w[j] * dw[j] for j in range(K)), T(0))) for k in range(K)], x.dtype),
        "var_logits": np.array([w_var[k] * (dw_var[k] - sum((w_var[j] * dw_var[j] for j in range(K)), T(0))) for k in range(K)], x.dtype),
    }
    return y, grads, intermediates


def run_case(golden: Path, entry: dict, dtype: np.dtype, plant_bug: bool) -> dict[str, np.ndarray]:
    """Read a case's inputs, run the kernel, return the results arrays by golden name."""
    with np.load(golden / entry["file"], allow_pickle=False) as npz:
        arrays = {key: npz[key].astype(dtype) for key in npz.files if key.startswith(("input.", "upstream."))}
    params = entry["params"]
    x = arrays["input.x"]
    N, C = x.shape[:2]
    M = math.prod(x.shape[2:])
    y, grads, intermediates = switch_norm_kernel(
        x.reshape(N, C, M), arrays["input.gamma"], arrays["input.beta"], arrays["input.mean_logits"], arrays["input.var_logits"],
        arrays.get("input.running_mean"), arrays.get("input.running_var"), arrays["upstream.y"].reshape(N, C, M), spatial=x.ndim > 2,
        normalizers=tuple(params["normalizers"]), convention=params.get("convention", "paper"), training=params.get("training", True),
        eps=params.get("eps", 1e-5), momentum=params.get("momentum", 0.9), plant_bug=plant_bug,
    )  # fmt: skip
    grads["x"] = grads["x"].reshape(x.shape)
    return {"output.y": y.reshape(x.shape), **{f"grad.{k}": v for k, v in grads.items()}, **{f"intermediate.{k}": v for k, v in intermediates.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("golden", type=Path, help="a golden set (refnorm info prints where the shipped one is)")
    parser.add_argument("results", type=Path, help="directory to write <op>/<case name>.npz results into (must not exist)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--plant-bug", action="store_true", help="BN variance divided by N*M - 1")
    args = parser.parse_args(argv)
    manifest = json.loads((args.golden / "manifest.json").read_text(encoding="utf-8"))
    args.results.mkdir(parents=True, exist_ok=False)
    written = skipped = 0
    for entry in manifest["cases"]:
        if entry["op"] != "switch_norm" or entry["kind"] == "error":
            continue
        if "gn" in entry["params"]["normalizers"]:
            skipped += 1
            continue
        results = run_case(args.golden, entry, np.dtype(args.dtype), args.plant_bug)
        path = args.results / f"{entry['id']}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **results)
        written += 1
    print(f"wrote {written} results files to {args.results} ({args.dtype}{', planted bug' if args.plant_bug else ''}); {skipped} GN cases skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
