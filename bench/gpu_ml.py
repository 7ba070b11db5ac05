"""Estimator fits on one GPU: gpupart.ml on CuPy tiles against the same maths in CuPy directly.

    python bench/gpu_ml.py                            # 1 rank on the GPU, 1,000,000 x 64
    python bench/gpu_ml.py --device cpu --quick       # NumPy tiles against NumPy: a dry run

* Data: ``X`` of ``--rows x --cols`` float64 standard normals from
  ``gpupart.random.default_rng`` and ``y = X @ w + 0.1 * noise`` (as ``bench/ml.py``); the
  direct peer gets the very same values on the same device.
* gpupart: ``gpupart run -n RANKS -- python bench/gpu_ml.py --worker PARAMS.json`` (ranks
  share the first visible GPU), ``gpupart.ml.LinearRegression().fit(X, y)`` and
  ``gpupart.ml.PCA(8).fit(X)``.
* CuPy directly (NumPy with ``--device cpu``): the normal equations of the centred data
  (``solve(Xc.T @ Xc, Xc.T @ yc)``) and the top eigenvectors of the covariance
  (``eigh(Xc.T @ Xc / (n - 1))``): what a hand-written single-GPU fit would do.

Each fit runs once untimed, then ``--reps`` times (device synchronised); reported: median
(min-max) seconds, the speed-up of gpupart over the direct fit (direct time / gpupart time)
and the largest relative difference between the two results (``coef_`` and
``intercept_``; ``explained_variance_``). Writes ``DIR/gpu-ml-<device>[-quick].json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers

FITS = ("LinearRegression", "PCA")
COMPONENTS = 8


def _xp(device: str) -> tuple[Any, Any]:
    if device == "cuda":
        import cupy

        return cupy, cupy.cuda.runtime.deviceSynchronize
    return np, lambda: None


def _data(params: dict) -> tuple[Any, Any]:
    """X and y as gpupart arrays (tiles on the runtime's device)."""
    import gpupart

    shape = (params["rows"], params["cols"])
    X = gpupart.random.default_rng(params["seed"]).standard_normal(shape)
    w = np.linspace(-1.0, 1.0, params["cols"])
    noise = gpupart.random.default_rng(params["seed"] + 1).standard_normal(params["rows"])
    return X, X @ w + 0.1 * noise


def _host(value: Any) -> list[float]:
    value = value.get() if hasattr(value, "get") else value
    return np.atleast_1d(np.asarray(value, dtype=float)).tolist()


def worker(params_path: str) -> None:
    """One gpupart rank: fit each estimator; rank 0 writes times and fitted values."""
    import gpupart
    from gpupart import ml

    params = json.loads(Path(params_path).read_text())
    _, sync = _xp(params["device"])
    rt = gpupart.init(device=params["device"])
    X, y = _data(params)

    def barrier() -> None:
        sync()
        rt.barrier()

    fits = {
        "LinearRegression": lambda: ml.LinearRegression().fit(X, y),
        "PCA": lambda: ml.PCA(n_components=COMPONENTS).fit(X),
    }
    result: dict[str, Any] = {"ranks": rt.size, "device": str(rt.device), "times": {}}
    result["values"] = {}
    for name, fit in fits.items():
        times, est = _peers.time_calls(fit, params["reps"], barrier)
        result["times"][name] = [max(t) for t in zip(*rt.allgather(times), strict=True)]
        if name == "PCA":
            result["values"][name] = _host(est.explained_variance_)
        else:
            result["values"][name] = _host(est.coef_) + _host(est.intercept_)
    if rt.rank == 0:
        Path(params["result"]).write_text(json.dumps(result))
    rt.close()


def run_direct(params: dict) -> dict:
    """The same fits written directly in CuPy (NumPy on CPU), on the same numbers."""
    import gpupart

    gpupart.init(device="cpu")  # a world of one: the same numbers as the ranks'
    X_host, y_host = (a.to_numpy() for a in _data(params))
    xp, sync = _xp(params["device"])
    X, y = xp.asarray(X_host), xp.asarray(y_host)
    del X_host, y_host
    sync()

    def linear() -> Any:
        mean, ymean = X.mean(axis=0), y.mean()
        Xc = X - mean
        coef = xp.linalg.solve(Xc.T @ Xc, Xc.T @ (y - ymean))
        return xp.concatenate([coef, xp.atleast_1d(ymean - mean @ coef)])

    def pca() -> Any:
        Xc = X - X.mean(axis=0)
        variances = xp.linalg.eigh(Xc.T @ Xc / (X.shape[0] - 1))[0]
        return variances[::-1][:COMPONENTS]

    out: dict[str, Any] = {"times": {}, "values": {}}
    for name, fit in (("LinearRegression", linear), ("PCA", pca)):
        times, value = _peers.time_calls(fit, params["reps"], sync)
        out["times"][name] = times
        out["values"][name] = _host(value)
    return out


def summarize(report: dict) -> list[dict]:
    rows = []
    ours, direct = report["gpupart"], report.get("direct", {})
    for name in FITS:
        row: dict[str, Any] = {"fit": name}
        if name in ours.get("times", {}):
            row["gpupart"] = _peers.stats(ours["times"][name])
        if name in direct.get("times", {}):
            row["direct"] = _peers.stats(direct["times"][name])
        if "gpupart" in row and "direct" in row:
            row["speedup"] = row["direct"]["median"] / row["gpupart"]["median"]
            a = np.asarray(ours["values"][name])
            b = np.asarray(direct["values"][name])
            row["max_rel_diff"] = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
        rows.append(row)
    return rows


def print_report(report: dict) -> None:
    params = report["params"]
    peer = "CuPy" if params["device"] == "cuda" else "NumPy"
    print(
        f"\nEstimator fits, {params['rows']:,} x {params['cols']}, gpupart at {params['ranks']}"
        f" rank(s) vs {peer} directly (seconds, median (min-max))\n"
    )
    print(f"| fit | gpupart | {peer} | speed-up | max rel. diff |")
    print("|---|--:|--:|--:|--:|")
    for row in report["summary"]:
        cells = [row["fit"]]
        for key in ("gpupart", "direct"):
            s = row.get(key)
            cells.append(f"{s['median']:.4f} ({s['min']:.4f}-{s['max']:.4f})" if s else "-")
        cells.append(f"{row['speedup']:.2f}x" if "speedup" in row else "-")
        cells.append(f"{row['max_rel_diff']:.1e}" if "max_rel_diff" in row else "-")
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of X")
    parser.add_argument("--cols", type=int, default=64, help="columns of X")
    parser.add_argument("--ranks", type=int, default=1, help="gpupart ranks (sharing one GPU)")
    parser.add_argument("--reps", type=int, default=5, help="timed fits")
    parser.add_argument("--quick", action="store_true", help="100x fewer rows, 2 repetitions")
    parser.add_argument("--timeout", type=float, default=600, help="limit for the job, seconds")
    parser.add_argument("--out", default="bench/out", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    params = {
        "rows": args.rows // (100 if args.quick else 1),
        "cols": args.cols,
        "ranks": args.ranks,
        "reps": 2 if args.quick else args.reps,
        "seed": 20261214,
        "device": args.device,
    }
    extra: dict[str, str] = {}
    if args.device == "cuda":
        first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        extra["CUDA_VISIBLE_DEVICES"] = first
    env = _peers.peer_env(None, extra)
    report: dict[str, Any] = {
        "params": params,
        "machine": _peers.machine_info(),
        "versions": _peers.versions(("cupy-cuda12x", "cupy-cuda13x", "scikit-learn")),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print("[bench] gpupart ...", file=sys.stderr, flush=True)
    report["gpupart"] = _peers.run_worker_job(
        __file__, params, env, args.timeout, cpu=args.device == "cpu"
    )
    if "error" in report["gpupart"]:
        print(report["gpupart"]["output"], file=sys.stderr)
    print(f"[bench] {args.device} directly ...", file=sys.stderr, flush=True)
    report["direct"] = run_direct(params)
    report["summary"] = summarize(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu-ml-{args.device}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    print(f"\nwrote {path}", file=sys.stderr)
    return 1 if "error" in report["gpupart"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
