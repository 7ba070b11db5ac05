"""Interop, XGBoost: training from gpupart's tiles against ``xgboost.dask`` on the same data.

A comparison of ``bench/interop.py`` (``--only xgboost``), also runnable alone::

    python bench/interop_xgboost.py [--rows 1000000] [--features 32] [--rounds 20]
                                    [--ranks 2] [--reps 3] [--quick]

The data: ``--rows`` x ``--features`` float64 in ``CHUNKS`` row chunks, chunk ``i`` made by
:func:`make_chunk` from seed ``i`` (a regression target of a few features with noise), so
both sides hold the same numbers. Both train ``tree_method='hist'`` (``max_bin`` 256, depth
6) for ``--rounds`` rounds with RANKS single-threaded workers, one after the other on this
machine:

* *gpupart*: a job of RANKS ranks (``gpupart run --cpu``); each rank makes its chunks and
  joins them with ``from_local``; timed: ``gpupart.interop.xgboost.train`` (tracker,
  each rank's ``QuantileDMatrix`` from its tile, training).
* *xgboost.dask*: a ``LocalCluster`` of RANKS single-threaded worker processes holding the
  same chunks persisted (``dask.array``); timed: ``DaskQuantileDMatrix`` and
  ``xgboost.dask.train``.

Each side runs once untimed and ``--reps`` times timed (median, min-max); the speed-up is
the dask time over gpupart's. The CPU seconds the workers (and, for Dask, the client) spend
per training are reported too: on a machine others load, they move less than the times.
Both models' RMSE on a held-out chunk is reported (they see the same rows in another worker
order: the merged sketches and so the models may differ slightly).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers

CHUNKS = 16
PARAMS = {
    "tree_method": "hist",
    "max_bin": 256,
    "max_depth": 6,
    "eta": 0.2,
    "nthread": 1,
    "objective": "reg:squarederror",
}


def make_chunk(i: int, rows: int, features: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``i`` of the data: ``rows`` rows, seeded by ``i`` (the same on both sides)."""
    rng = np.random.default_rng([20261201, i])
    X = rng.standard_normal((rows, features))
    y = 2 * X[:, 0] - X[:, 1] ** 2 + np.sin(3 * X[:, 2]) + X[:, 3] * X[:, 4]
    return X, y + 0.1 * rng.standard_normal(rows)


def chunk_rows(rows: int) -> list[int]:
    """Rows of each of the ``CHUNKS`` chunks (as even as possible)."""
    cuts = np.linspace(0, rows, CHUNKS + 1).astype(int)
    return [int(b - a) for a, b in itertools.pairwise(cuts)]


def cpu_seconds() -> float:
    """User and system CPU seconds of this process so far (all its threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rmse(booster: Any, features: int, rows: int) -> float:
    """RMSE on a held-out chunk (seed ``CHUNKS``)."""
    X, y = make_chunk(CHUNKS, min(rows, 100_000), features)
    return float(np.sqrt(np.mean((booster.inplace_predict(X) - y) ** 2)))


# -- gpupart ----------------------------------------------------------------------------------


def xgboost_worker(params: dict) -> dict:
    """One rank of the gpupart side: make its chunks, time ``interop.xgboost.train``."""
    import resource

    import gpupart
    from gpupart.interop import xgboost as gx

    rt = gpupart.init()
    sizes = chunk_rows(params["rows"])
    mine = [i for i in range(CHUNKS) if (i * rt.size) // CHUNKS == rt.rank]
    parts = [make_chunk(i, sizes[i], params["features"]) for i in mine]
    X = gpupart.from_local(np.concatenate([p[0] for p in parts]))
    y = gpupart.from_local(np.concatenate([p[1] for p in parts]))
    del parts

    cpu: list[float] = []

    def fit() -> Any:
        before = cpu_seconds()
        booster = gx.train(params["xgb"], X, y, num_boost_round=params["rounds"])
        cpu.append(cpu_seconds() - before)
        return booster

    times, booster = _peers.time_calls(fit, params["reps"], rt.barrier)
    result = {
        "times": [max(t) for t in zip(*rt.allgather(times), strict=True)],
        "cpu_seconds": [sum(c) for c in zip(*rt.allgather(cpu[1:]), strict=True)],
        "rmse": rmse(booster, params["features"], params["rows"]),
        "peak_rss_per_rank": rt.allgather(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ),
    }
    rt.close()
    return result


# -- xgboost.dask -----------------------------------------------------------------------------


def dask_side(params: dict) -> dict:
    """Time ``xgboost.dask`` on a LocalCluster holding the same chunks."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait
    from xgboost import dask as dxgb

    sizes = chunk_rows(params["rows"])
    m = params["features"]
    xs, ys = [], []
    for i, n in enumerate(sizes):
        part = dask.delayed(make_chunk)(i, n, m)
        xs.append(da.from_delayed(part[0], (n, m), np.float64))
        ys.append(da.from_delayed(part[1], (n,), np.float64))
    with (
        LocalCluster(
            n_workers=params["ranks"],
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        X, y = client.persist([da.concatenate(xs), da.concatenate(ys)])
        wait([X, y], timeout=600)

        def fit() -> Any:
            dtrain = dxgb.DaskQuantileDMatrix(client, X, y, max_bin=PARAMS["max_bin"])
            return dxgb.train(client, params["xgb"], dtrain, num_boost_round=params["rounds"])

        fit()
        times, cpu = [], []
        for _ in range(params["reps"]):
            before = sum(client.run(cpu_seconds).values()) + cpu_seconds()
            t0 = time.perf_counter()
            out = fit()
            times.append(time.perf_counter() - t0)
            cpu.append(sum(client.run(cpu_seconds).values()) + cpu_seconds() - before)
        booster = out["booster"]
    return {"times": times, "cpu_seconds": cpu, "rmse": rmse(booster, m, params["rows"])}


# -- the comparison ---------------------------------------------------------------------------


def xgb_params(args: argparse.Namespace) -> dict:
    """The comparison's parameters from ``bench/interop.py``'s or this script's arguments."""
    rows = getattr(args, "xgb_rows", None) or 1_000_000
    rounds = getattr(args, "xgb_rounds", None) or 20
    if args.quick:
        rows //= 16
    return {
        "rows": rows,
        "features": getattr(args, "xgb_features", None) or 32,
        "rounds": rounds,
        "ranks": args.ranks,
        "reps": args.reps,
        "xgb": PARAMS,
    }


def compare_xgboost(args: argparse.Namespace, env: dict[str, str]) -> dict:
    """The xgboost comparison: rows for ``bench/interop.py``'s report, and details."""
    params = xgb_params(args)
    dask_result = dask_side(params)
    ours = _peers.run_worker_job(
        __file__, dict(params, comparison="xgboost"), env, timeout=3600, cpu=True
    )
    details = {
        "params": dict(params, bytes=params["rows"] * params["features"] * 8),
        "gpupart": ours,
        "dask": dask_result,
    }
    if "error" in ours:
        return {"rows": [], "details": details}
    row = {
        "comparison": "xgboost",
        "op": f"train {params['rounds']} rounds, {params['rows']}x{params['features']}",
        "gpupart": _peers.stats(ours["times"]),
        "peer_name": "xgboost.dask (DaskQuantileDMatrix + train)",
        "peer": _peers.stats(dask_result["times"]),
        "rmse": {"gpupart": ours["rmse"], "dask": dask_result["rmse"]},
        "cpu_seconds": {
            "gpupart": _peers.stats(ours["cpu_seconds"]),
            "dask": _peers.stats(dask_result["cpu_seconds"]),
        },
    }
    return {"rows": [row], "details": details}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", dest="xgb_rows", type=int, default=1_000_000)
    parser.add_argument("--features", dest="xgb_features", type=int, default=32)
    parser.add_argument("--rounds", dest="xgb_rounds", type=int, default=20)
    parser.add_argument("--ranks", type=int, default=2, help="gpupart ranks and dask workers")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions")
    parser.add_argument("--quick", action="store_true", help="1/16 of the rows")
    parser.add_argument("--out", default="bench/out", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.worker:
        params = json.loads(Path(args.worker).read_text())
        result = xgboost_worker(params)
        if int(os.environ.get("GPUPART_RANK", "0")) == 0:
            Path(params["result"]).write_text(json.dumps(result))
        return 0
    env = _peers.peer_env(None, {})
    quiet = _peers.wait_until_quiet(120.0, 0.25)
    meter = _peers.CpuMeter()
    result = compare_xgboost(args, env)
    result["cpu"] = {**quiet, **meter.stop()}
    report = {
        "machine": _peers.machine_info(),
        "versions": _peers.versions(("distributed", "xgboost")),
        "result": result,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"interop-xgboost{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    for row in result["rows"]:
        ours, peer = row["gpupart"], row["peer"]
        print(
            f"{row['op']}: gpupart {ours['median']:.3f} s ({ours['min']:.3f}-{ours['max']:.3f}),"
            f" {row['peer_name']} {peer['median']:.3f} s ({peer['min']:.3f}-{peer['max']:.3f}),"
            f" speed-up {peer['median'] / ours['median']:.2f}x; RMSE {row['rmse']}"
        )
        cpu = row["cpu_seconds"]
        print(
            f"CPU seconds of the workers (dask: and the client) per training: gpupart"
            f" {cpu['gpupart']['median']:.2f}, dask {cpu['dask']['median']:.2f}"
        )
    if not result["rows"]:
        print(json.dumps(result["details"], indent=1, default=str)[-3000:])
    print(f"wrote {path} (CPUs: {result['cpu']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
