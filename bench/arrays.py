"""Distributed-array operations: gpupart against NumPy (one process) and dask.array (2 workers).

One command runs all three on this machine, on the same data::

    python bench/arrays.py [--n 100000000] [--rows 2500000] [--cols 32] [--reps 5] [--quick]
    python bench/arrays.py --device cuda     # tiles on GPUs; the single-device peer is CuPy

* Data: ``x`` and ``y`` of ``--n`` float64 values and ``X`` of ``--rows x --cols`` float64
  values from ``gpupart.random.default_rng`` (the same numbers at any rank count; NumPy and
  dask get the very same values: generated in one process, then chunked for dask in one
  block per worker).
* Operations: ``exp(x).sum()``, ``(2*x + y).sum()``, ``std(x)``, ``X.T @ X``.
* gpupart: ``gpupart run -n RANKS --cpu -- python bench/arrays.py --worker PARAMS.json``,
  the namespace functions (``xp = gpupart.array_api``), one block per rank along the first
  axis; NumPy: the same expressions on whole arrays in this process (BLAS threads as it
  comes); dask.array: a ``LocalCluster`` of RANKS single-threaded worker processes,
  ``.compute()`` of the same expressions on arrays persisted in the workers.

Each operation runs once untimed, then ``--reps`` times; the median is reported with
min/max, the speed-up of gpupart over each peer (peer time / gpupart time), and the goals:
>= 1.5x dask.array on every operation, >= 1.0x NumPy on the elementwise and reduction ones,
>= 0.8x NumPy on ``X.T @ X``. Writes ``DIR/arrays[-quick].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers

OPS = ("exp(x).sum()", "(2*x + y).sum()", "std(x)", "X.T @ X")
GOALS = {  # (peer, op) -> the speed-up gpupart must reach
    **{("dask", op): 1.5 for op in OPS},
    **{("numpy", op): 1.0 for op in OPS[:3]},
    ("numpy", "X.T @ X"): 0.8,
}


def _data(params: dict) -> tuple[Any, Any, Any]:
    import gpupart

    rng = gpupart.random.default_rng(params["seed"])
    x = rng.random(params["n"])
    y = gpupart.random.default_rng(params["seed"] + 1).random(params["n"])
    X = gpupart.random.default_rng(params["seed"] + 2).random((params["rows"], params["cols"]))
    return x, y, X


def _ops(xp: Any, x: Any, y: Any, X: Any, done: Any = None) -> dict[str, Any]:
    """The timed operations; ``done`` turns a result into host data (waits for a GPU)."""
    done = done or (lambda r: r)
    return {
        "exp(x).sum()": lambda: done(xp.sum(xp.exp(x))),
        "(2*x + y).sum()": lambda: done(xp.sum(2 * x + y)),
        "std(x)": lambda: done(xp.std(x)),
        "X.T @ X": lambda: done(xp.matmul(xp.matrix_transpose(X), X)),
    }


def _time(fn: Any, reps: int, sync: Any) -> list[float]:
    return _peers.time_calls(fn, reps, sync)[0]


def worker(params_path: str) -> None:
    """One gpupart rank: make the data, time every operation, rank 0 writes the result."""
    import gpupart

    params = json.loads(Path(params_path).read_text())
    rt = gpupart.init()
    xp = gpupart.array_api
    x, y, X = _data(params)
    result: dict[str, Any] = {"ranks": rt.size, "times": {}}
    for name, fn in _ops(xp, x, y, X, np.asarray).items():  # results are replicated
        times = _time(fn, params["reps"], rt.barrier)
        slowest = [max(t) for t in zip(*rt.allgather(times), strict=True)]
        result["times"][name] = slowest
    if rt.rank == 0:
        Path(params["result"]).write_text(json.dumps(result))
    rt.close()


def run_gpupart(params: dict, env: dict[str, str], timeout: float) -> dict:
    return _peers.run_worker_job(__file__, params, env, timeout, cpu=params["device"] == "cpu")


def run_numpy_and_dask(params: dict, peers: list[str]) -> dict:
    """NumPy in this process, dask.array on a local cluster: the same data for both."""
    import gpupart

    gpupart.init(device="cpu")  # a world of one: the same numbers as the ranks'
    x, y, X = (a.to_numpy() for a in _data(params))
    out: dict[str, Any] = {}
    if "numpy" in peers and params["device"] == "cuda":  # the single-device peer: CuPy
        import cupy

        cx, cy, cX = (cupy.asarray(a) for a in (x, y, X))
        out["numpy"] = {
            name: _time(fn, params["reps"], lambda: None)
            for name, fn in _ops(cupy, cx, cy, cX, cupy.asnumpy).items()
        }
    elif "numpy" in peers:
        out["numpy"] = {
            name: _time(fn, params["reps"], lambda: None)
            for name, fn in _ops(_NumpyNamespace, x, y, X).items()
        }
    if "dask" in peers:
        out["dask"] = _run_dask(params, x, y, X)
    return out


class _NumpyNamespace:
    """The four operations' functions in NumPy."""

    sum, exp, std, matmul = np.sum, np.exp, np.std, np.matmul
    matrix_transpose = staticmethod(lambda a: a.T)


def _run_dask(params: dict, x: np.ndarray, y: np.ndarray, X: np.ndarray) -> dict:
    try:
        import dask.array as da
        from distributed import Client, LocalCluster
    except ImportError:
        return {"skipped": "dask.array / distributed not installed (pip install -e .[bench])"}
    n = params["ranks"]
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        dx = da.from_array(x, chunks=-(-len(x) // n)).persist()
        dy = da.from_array(y, chunks=-(-len(y) // n)).persist()
        dX = da.from_array(X, chunks=(-(-len(X) // n), X.shape[1])).persist()

        class Namespace:
            sum, exp, std, matmul = da.sum, da.exp, da.std, da.matmul
            matrix_transpose = staticmethod(lambda a: a.T)

        times = {}
        for name, fn in _ops(Namespace, dx, dy, dX).items():
            times[name] = _time(lambda fn=fn: fn().compute(), params["reps"], lambda: None)
        return times


def summarize(report: dict) -> list[dict]:
    rows = []
    ours = report["gpupart"].get("times", {})
    for op in OPS:
        row: dict[str, Any] = {"op": op}
        if op in ours:
            row["gpupart"] = _peers.stats(ours[op])
        for peer in ("numpy", "dask"):
            times = report.get(peer, {})
            if isinstance(times, dict) and op in times:
                row[peer] = _peers.stats(times[op])
                if "gpupart" in row:
                    speedup = row[peer]["median"] / row["gpupart"]["median"]
                    row[f"vs_{peer}"] = speedup
                    row[f"goal_{peer}"] = speedup >= GOALS[(peer, op)]
        rows.append(row)
    return rows


def print_report(report: dict) -> None:
    print(f"\nDistributed arrays, {report['params']['ranks']} ranks (seconds, median (min-max))\n")
    single = "CuPy (1 GPU)" if report["params"].get("device") == "cuda" else "NumPy"
    head = ["op", "gpupart", single, "dask.array", f"vs {single} (goal)", "vs dask (goal)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|")
    for row in report["summary"]:
        cells = [row["op"]]
        for key in ("gpupart", "numpy", "dask"):
            s = row.get(key)
            cells.append(f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})" if s else "-")
        for peer in ("numpy", "dask"):
            if f"vs_{peer}" in row:
                goal = GOALS[(peer, row["op"])]
                mark = "PASS" if row[f"goal_{peer}"] else "FAIL"
                cells.append(f"{row[f'vs_{peer}']:.2f}x (>= {goal}: {mark})")
            else:
                cells.append("-")
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=100_000_000, help="elements of x and y")
    parser.add_argument("--rows", type=int, default=2_500_000, help="rows of X")
    parser.add_argument("--cols", type=int, default=32, help="columns of X")
    parser.add_argument("--ranks", type=int, default=2, help="gpupart ranks and dask workers")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions")
    parser.add_argument("--quick", action="store_true", help="10x smaller data, 3 repetitions")
    parser.add_argument("--peers", default=None, help="peers to run (default: numpy,dask)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="gpupart's tiles on CPUs or one GPU per rank (cuda: the peer is CuPy on one GPU)",
    )
    parser.add_argument("--out", default="bench/out", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    scale = 10 if args.quick else 1
    params = {
        "n": args.n // scale,
        "rows": args.rows // scale,
        "cols": args.cols,
        "ranks": args.ranks,
        "reps": 3 if args.quick else args.reps,
        "seed": 20261201,
        "device": args.device,
    }
    peers = args.peers or ("numpy" if args.device == "cuda" else "numpy,dask")
    env = _peers.peer_env(None, {})
    report: dict[str, Any] = {
        "params": params,
        "machine": _peers.machine_info(),
        "versions": _peers.versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print("[bench] gpupart ...", file=sys.stderr, flush=True)
    report["gpupart"] = run_gpupart(params, env, timeout=1800)
    if "error" in report["gpupart"]:
        print(report["gpupart"]["output"], file=sys.stderr)
    print("[bench] numpy, dask ...", file=sys.stderr, flush=True)
    report.update(run_numpy_and_dask(params, peers.split(",")))
    report["summary"] = summarize(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"arrays-{args.device}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
