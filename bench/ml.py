"""Estimators: gpupart.ml against scikit-learn (one process) and dask-ml (worker processes).

One command runs all three on this machine, on the same data::

    python bench/ml.py [--rows 2000000] [--cols 64] [--ranks 2] [--reps 3] [--quick]

* Data: ``X`` of ``--rows x --cols`` float64 values from ``gpupart.random.default_rng`` (the
  same numbers at any rank count; scikit-learn and dask-ml get the very same values), ``y =
  X @ w + noise`` for the regressions and ``y > median`` for the classifier.
* Estimators: ``LinearRegression``, ``Ridge(alpha=1)``, ``LogisticRegression`` (lbfgs,
  ``max_iter=100``, ``tol=0``: every library runs 100 iterations), ``KMeans(k=8)`` from the same
  initial centres (X's first 8 rows) for 20 iterations (``tol=0``), ``PCA(8)``,
  ``StandardScaler``. Each ``fit`` is timed (``fit_transform`` is not).
* gpupart: ``gpupart run -n RANKS --cpu -- python bench/ml.py --worker PARAMS.json``, X cut by
  rows, one block per rank; scikit-learn: the same estimators in this process (BLAS threads
  as they come); dask-ml: a ``LocalCluster`` of RANKS single-threaded worker processes, X
  chunked in one block of rows per worker and persisted.

Each fit runs once untimed, then ``--reps`` times; the median is reported with min/max, the
speed-up of gpupart over each peer (peer time / gpupart time), the largest relative
difference of the fitted attributes from scikit-learn's, and each rank's share of X plus its
peak RSS above the RSS before each estimator's fits (the kernel's peak is reset before each),
against that share. Goals (issue "estimators"):
LinearRegression and Ridge >= 3x scikit-learn and >= 10x dask-ml; PCA >= 3x scikit-learn;
KMeans and LogisticRegression >= 1.0x scikit-learn and >= 2x dask-ml; StandardScaler >= 1.0x
scikit-learn; attributes within 1e-8 relative; peak memory per rank <= 1.5x its share of the
data. Writes ``DIR/ml[-quick].json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers

ESTIMATORS = (
    "LinearRegression",
    "Ridge",
    "LogisticRegression",
    "KMeans",
    "PCA",
    "StandardScaler",
)
GOALS = {
    ("sklearn", "LinearRegression"): 3.0,
    ("sklearn", "Ridge"): 3.0,
    ("sklearn", "PCA"): 3.0,
    ("sklearn", "KMeans"): 1.0,
    ("sklearn", "LogisticRegression"): 1.0,
    ("sklearn", "StandardScaler"): 1.0,
    ("dask-ml", "LinearRegression"): 10.0,
    ("dask-ml", "Ridge"): 10.0,
    ("dask-ml", "KMeans"): 2.0,
    ("dask-ml", "LogisticRegression"): 2.0,
}
#: the fitted attributes compared with scikit-learn's
ATTRIBUTES = {
    "LinearRegression": ("coef_", "intercept_"),
    "Ridge": ("coef_", "intercept_"),
    "LogisticRegression": ("coef_", "intercept_"),
    "KMeans": ("cluster_centers_", "inertia_"),
    "PCA": ("explained_variance_", "mean_"),
    "StandardScaler": ("mean_", "scale_"),
}


def _data(params: dict) -> tuple[Any, Any, Any]:
    """X, the regression target and the class labels, as gpupart arrays."""
    import gpupart

    X = gpupart.random.default_rng(params["seed"]).standard_normal((params["rows"], params["cols"]))
    w = np.linspace(-1.0, 1.0, params["cols"])
    noise = gpupart.random.default_rng(params["seed"] + 1).standard_normal(params["rows"])
    y = X @ w + 0.1 * noise
    labels = gpupart.array_api.astype(y > 0, gpupart.array_api.int64)
    return X, y, labels


def _estimators(module: Any, params: dict, centres: np.ndarray) -> dict[str, Callable[[], Any]]:
    """Fresh, identically configured estimators of ``module`` (scikit-learn's API)."""
    return {
        "LinearRegression": lambda: module.LinearRegression(),
        "Ridge": lambda: module.Ridge(alpha=1.0),
        "LogisticRegression": lambda: module.LogisticRegression(max_iter=100, tol=0.0),
        "KMeans": lambda: module.KMeans(n_clusters=8, init=centres, n_init=1, max_iter=20, tol=0.0),
        "PCA": lambda: module.PCA(n_components=8),
        "StandardScaler": lambda: module.StandardScaler(),
    }


def _target(name: str, y: Any, labels: Any) -> Any:
    if name in ("LinearRegression", "Ridge"):
        return y
    return labels if name == "LogisticRegression" else None


def _attributes(est: Any, name: str) -> dict[str, list]:
    return {
        a: np.atleast_1d(np.asarray(getattr(est, a), dtype=float)).tolist()
        for a in ATTRIBUTES[name]
    }


def _time_fit(
    make: Callable[[], Any], X: Any, y: Any, reps: int, sync: Callable[[], Any]
) -> tuple[list[float], Any]:
    return _peers.time_calls(lambda: make().fit(X, y), reps, sync)


def worker(params_path: str) -> None:
    """One gpupart rank: fit every estimator; rank 0 writes the result."""
    import resource

    import gpupart
    from gpupart import ml

    params = json.loads(Path(params_path).read_text())
    rt = gpupart.init()
    for name in ESTIMATORS:  # imports (scikit-learn, SciPy) count in the baseline, not the fits
        getattr(ml, name)

    baseline = _current_rss()
    X, y, labels = _data(params)
    centres = X[:8].to_numpy()
    warnings.filterwarnings("ignore")  # ConvergenceWarning with tol=0 is the point
    result: dict[str, Any] = {"ranks": rt.size, "times": {}, "attributes": {}, "errors": {}}
    result["peak_rss_fit"] = {}
    for name, make in _estimators(ml, params, centres).items():
        if name not in params["estimators"]:
            continue
        _reset_peak_rss()
        before = _current_rss()  # X, y and the labels resident
        try:
            times, est = _time_fit(make, X, _target(name, y, labels), params["reps"], rt.barrier)
        except Exception as exc:  # reported in the table, the other estimators still run
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
            continue
        result["times"][name] = [max(t) for t in zip(*rt.allgather(times), strict=True)]
        result["attributes"][name] = _attributes(est, name)
        result["peak_rss_fit"][name] = rt.allgather((_peak_rss(), before))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    result["peak_rss_per_rank"] = rt.allgather(int(peak))
    result["baseline_rss_per_rank"] = rt.allgather(int(baseline))
    result["share_per_rank"] = rt.allgather(int(sum(t.nbytes for t in X.local_tiles.values())))
    if rt.rank == 0:
        Path(params["result"]).write_text(json.dumps(result))
    rt.close()


def _reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets ``VmHWM``)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss() -> int:
    """Peak resident memory since the last :func:`_reset_peak_rss`, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _current_rss() -> int:
    """This process's resident memory now (Linux ``/proc``), in bytes."""
    import os

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def run_gpupart(params: dict, env: dict[str, str], timeout: float) -> dict:
    return _peers.run_worker_job(__file__, params, env, timeout)


def run_peers(params: dict, peers: list[str]) -> dict:
    """scikit-learn in this process, dask-ml on a local cluster: the same data for both."""
    import gpupart

    gpupart.init(device="cpu")  # a world of one: the same numbers as the ranks'
    X, y, labels = (a.to_numpy() for a in _data(params))
    centres = X[:8].copy()
    warnings.filterwarnings("ignore")
    out: dict[str, Any] = {}
    if "sklearn" in peers:
        import sklearn.cluster
        import sklearn.decomposition
        import sklearn.linear_model
        import sklearn.preprocessing

        class Sklearn:
            LinearRegression = sklearn.linear_model.LinearRegression
            Ridge = sklearn.linear_model.Ridge
            LogisticRegression = sklearn.linear_model.LogisticRegression
            KMeans = sklearn.cluster.KMeans
            PCA = sklearn.decomposition.PCA
            StandardScaler = sklearn.preprocessing.StandardScaler

        times, attrs = {}, {}
        for name, make in _estimators(Sklearn, params, centres).items():
            if name in params["estimators"]:
                t, est = _time_fit(make, X, _target(name, y, labels), params["reps"], lambda: None)
                times[name], attrs[name] = t, _attributes(est, name)
        out["sklearn"] = {"times": times, "attributes": attrs}
    if "dask-ml" in peers:
        out["dask-ml"] = _run_dask_ml(params, X, y, labels, centres)
    return out


def _run_dask_ml(
    params: dict, X: np.ndarray, y: np.ndarray, labels: np.ndarray, centres: Any
) -> dict:
    try:
        import dask.array as da
        import dask_ml.cluster
        import dask_ml.decomposition
        import dask_ml.linear_model
        import dask_ml.preprocessing
        from distributed import Client, LocalCluster
    except ImportError:
        return {"skipped": "dask-ml / distributed not installed (pip install -e .[bench])"}
    logging.getLogger("distributed").setLevel(logging.ERROR)
    n = params["ranks"]
    makers = {  # dask-ml's counterparts (Ridge: its LinearRegression with an l2 penalty)
        "LinearRegression": lambda: dask_ml.linear_model.LinearRegression(),
        "Ridge": lambda: dask_ml.linear_model.LinearRegression(penalty="l2", C=1.0),
        "LogisticRegression": lambda: dask_ml.linear_model.LogisticRegression(
            max_iter=100, tol=0.0
        ),
        "KMeans": lambda: dask_ml.cluster.KMeans(n_clusters=8, init=centres, max_iter=20, tol=0.0),
        "PCA": lambda: dask_ml.decomposition.PCA(n_components=8, svd_solver="tsqr"),
        "StandardScaler": lambda: dask_ml.preprocessing.StandardScaler(),
    }
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        rows = -(-len(X) // n)
        dX = da.from_array(X, chunks=(rows, X.shape[1])).persist()
        dy = da.from_array(y, chunks=rows).persist()
        dl = da.from_array(labels, chunks=rows).persist()
        times, errors = {}, {}
        for name, make in makers.items():
            if name not in params["estimators"]:
                continue
            target = {"LinearRegression": dy, "Ridge": dy, "LogisticRegression": dl}.get(name)
            try:
                times[name], _ = _time_fit(make, dX, target, params["reps"], lambda: None)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        return {"times": times, "errors": errors}


def _relative_difference(ours: dict, theirs: dict) -> float:
    worst = 0.0
    for attr, values in ours.items():
        a, b = np.asarray(values), np.asarray(theirs.get(attr, []))
        if a.shape != b.shape:
            return float("inf")
        scale = max(float(np.max(np.abs(b))), 1e-300) if b.size else 1.0
        worst = max(worst, float(np.max(np.abs(a - b))) / scale if a.size else 0.0)
    return worst


def summarize(report: dict) -> list[dict]:
    rows = []
    ours = report["gpupart"]
    for name in report["params"]["estimators"]:
        row: dict[str, Any] = {"estimator": name}
        if name in ours.get("times", {}):
            row["gpupart"] = _peers.stats(ours["times"][name])
        elif name in ours.get("errors", {}):
            row["error"] = ours["errors"][name]
        for peer in ("sklearn", "dask-ml"):
            times = report.get(peer, {}).get("times", {})
            if name in times:
                row[peer] = _peers.stats(times[name])
                if "gpupart" in row:
                    row[f"vs_{peer}"] = row[peer]["median"] / row["gpupart"]["median"]
                    if (peer, name) in GOALS:
                        row[f"goal_{peer}"] = row[f"vs_{peer}"] >= GOALS[(peer, name)]
        theirs = report.get("sklearn", {}).get("attributes", {}).get(name)
        if theirs and name in ours.get("attributes", {}):
            row["max_rel_diff"] = _relative_difference(ours["attributes"][name], theirs)
        rows.append(row)
    return rows


def print_report(report: dict) -> None:
    p = report["params"]
    print(
        f"\nEstimators, X of {p['rows']:,} x {p['cols']} float64, {p['ranks']} ranks"
        " (fit, seconds, median (min-max); speed-up = peer / gpupart)\n"
    )
    head = [
        "estimator",
        "gpupart",
        "scikit-learn",
        "dask-ml",
        "vs scikit-learn",
        "vs dask-ml",
        "max rel. diff",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|")
    for row in report["summary"]:
        cells = [row["estimator"]]
        for key in ("gpupart", "sklearn", "dask-ml"):
            s = row.get(key)
            if s:
                cells.append(f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})")
            else:
                cells.append(row.get("error", "-")[:40] if key == "gpupart" else "-")
        for peer in ("sklearn", "dask-ml"):
            if f"vs_{peer}" in row:
                mark = ""
                if f"goal_{peer}" in row:
                    goal = GOALS[(peer, row["estimator"])]
                    mark = f" (>= {goal}: {'PASS' if row[f'goal_{peer}'] else 'FAIL'})"
                cells.append(f"{row[f'vs_{peer}']:.2f}x{mark}")
            else:
                cells.append("-")
        diff = row.get("max_rel_diff")
        cells.append("-" if diff is None else f"{diff:.1e}")
        print("| " + " | ".join(cells) + " |")
    ours = report["gpupart"]
    if "peak_rss_per_rank" in ours:
        print()
        per_rank = zip(
            ours["peak_rss_per_rank"],
            ours["baseline_rss_per_rank"],
            ours["share_per_rank"],
            strict=True,
        )
        for r, (peak, base, share) in enumerate(per_rank):
            print(
                f"rank {r}: peak RSS {peak / 1e9:.2f} GB over the run, {base / 1e9:.2f} GB before"
                f" the data; its share of X {share / 1e9:.2f} GB"
            )
        print(
            "\nMemory per rank during each estimator's fits: (its share of X + the peak above"
            " the RSS before the fits) / its share (<= 1.5):"
        )
        for name, peaks in ours.get("peak_rss_fit", {}).items():
            ratios = [
                (s + p - b) / max(s, 1)
                for (p, b), s in zip(peaks, ours["share_per_rank"], strict=True)
            ]
            mark = "PASS" if max(ratios) <= 1.5 else "FAIL"
            print(f"  {name}: " + ", ".join(f"{x:.2f}x" for x in ratios) + f" ({mark})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of X")
    parser.add_argument("--cols", type=int, default=64, help="columns of X")
    parser.add_argument("--ranks", type=int, default=2, help="gpupart ranks and dask workers")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions")
    parser.add_argument("--quick", action="store_true", help="10x fewer rows, 2 repetitions")
    parser.add_argument("--peers", default="sklearn,dask-ml", help="peers to run")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS), help="estimators to fit")
    parser.add_argument("--out", default="bench/out", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    chosen = [e for e in args.estimators.split(",") if e]
    unknown = sorted(set(chosen) - set(ESTIMATORS))
    if unknown:
        parser.error(
            f"--estimators: expected some of {', '.join(ESTIMATORS)}, found {', '.join(unknown)}"
        )
    params = {
        "rows": args.rows // (10 if args.quick else 1),
        "cols": args.cols,
        "ranks": args.ranks,
        "reps": 2 if args.quick else args.reps,
        "seed": 20261201,
        "estimators": chosen,
    }
    report: dict[str, Any] = {
        "params": params,
        "machine": _peers.machine_info(),
        "versions": _peers.versions(("scikit-learn", "dask-ml", "scipy")),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print("[bench] gpupart ...", file=sys.stderr, flush=True)
    report["gpupart"] = run_gpupart(params, _peers.peer_env(None, {}), timeout=3600)
    if "error" in report["gpupart"]:
        print(report["gpupart"]["output"], file=sys.stderr)
    print("[bench] scikit-learn, dask-ml ...", file=sys.stderr, flush=True)
    report.update(run_peers(params, [p for p in args.peers.split(",") if p]))
    report["summary"] = summarize(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ml{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
