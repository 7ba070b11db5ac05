"""Distributed dataframes: gpupart against pandas, polars, DuckDB (one process) and dask.dataframe.

One command runs them all on this machine, on the same parquet dataset::

    python bench/frames.py [--rows 20000000] [--ranks 2] [--reps 3] [--quick]

* Data: a parquet dataset written once per run (``--files`` files of row groups of 1 M rows):
  ``key`` (int64, ``--keys`` distinct values, uniform), ``hot`` (int64, half the rows on one
  value: the skewed key), ``x``, ``y`` (float64), ``tag`` (string, 100 values); and a small
  dimension table ``dim`` (``key``, ``w``: one row per key) for the join.
* Operations: ``read_parquet`` (the whole dataset), ``groupby(key).agg(sum x, mean y)``,
  ``groupby(hot).agg(sum x)`` (skewed), ``merge(dim, on=key)`` (a hash join of the two; the
  small side is not broadcast, so it measures the shuffle), ``sort_values(x)``.
* gpupart: ``gpupart run -n RANKS --cpu -- python bench/frames.py --worker PARAMS.json``;
  every rank reads its row groups; each operation is timed until every rank has its part of
  the result (a barrier; results stay distributed). pandas, polars and DuckDB: the same
  operations in this process on the whole data (polars/DuckDB use their own threads).
  dask.dataframe: a ``LocalCluster`` of RANKS single-threaded worker processes; each
  operation is ``.persist()``-ed and waited for, so results also stay distributed.

Each operation runs once untimed, then ``--reps`` times; the median is reported with min/max
and the speed-up of gpupart over each peer (peer time / gpupart time). The goal: >= 1.5x
dask.dataframe on every operation. Writes ``DIR/frames[-quick].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers

OPS = ("read_parquet", "groupby key", "groupby hot (skewed)", "merge dim", "sort_values x")
PEERS = ("pandas", "polars", "duckdb", "dask")
GOALS = {("dask", op): 1.5 for op in OPS}


def write_dataset(root: Path, rows: int, keys: int, files: int, seed: int) -> None:
    """Write ``root/data`` (``files`` parquet files) and ``root/dim.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    data = root / "data"
    data.mkdir(parents=True)
    tags = np.array([f"tag-{i:03d}" for i in range(100)], dtype=object)
    per_file = -(-rows // files)
    for f in range(files):
        n = min(per_file, rows - f * per_file)
        hot = rng.integers(0, keys, n)
        hot[rng.random(n) < 0.5] = 7
        table = pa.table(
            {
                "key": rng.integers(0, keys, n),
                "hot": hot,
                "x": rng.standard_normal(n),
                "y": rng.random(n),
                "tag": pa.array(tags[rng.integers(0, len(tags), n)], pa.string()),
            }
        )
        pq.write_table(table, data / f"part.{f:04d}.parquet", row_group_size=1_000_000)
    dim = pa.table({"key": np.arange(keys, dtype=np.int64), "w": rng.random(keys)})
    pq.write_table(dim, root / "dim.parquet")


def _time(fn: Callable[[], Any], reps: int, sync: Callable[[], Any]) -> list[float]:
    fn()
    out = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def worker(params_path: str) -> None:
    """One gpupart rank: time every operation; rank 0 writes the result."""
    import gpupart

    params = json.loads(Path(params_path).read_text())
    rt = gpupart.init()
    root = Path(params["root"])
    df = gpupart.read_parquet(str(root / "data"))
    dim = gpupart.read_parquet(str(root / "dim.parquet"))
    ops: dict[str, Callable[[], Any]] = {
        "read_parquet": lambda: gpupart.read_parquet(str(root / "data")),
        "groupby key": lambda: df.groupby("key").agg(x=("x", "sum"), y=("y", "mean")),
        "groupby hot (skewed)": lambda: df.groupby("hot").agg(x=("x", "sum")),
        "merge dim": lambda: df.merge(dim, on="key", broadcast=False),
        "sort_values x": lambda: df.sort_values("x"),
    }
    result: dict[str, Any] = {"ranks": rt.size, "rows": int(sum(df.partition_sizes)), "times": {}}
    for name, fn in ops.items():
        times = _time(fn, params["reps"], rt.barrier)
        result["times"][name] = [max(t) for t in zip(*rt.allgather(times), strict=True)]
    if rt.rank == 0:
        Path(params["result"]).write_text(json.dumps(result))
    rt.close()


def run_gpupart(params: dict, env: dict[str, str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpupart-bench-") as tmp:
        result_path, params_path = Path(tmp) / "result.json", Path(tmp) / "params.json"
        params_path.write_text(json.dumps(dict(params, result=str(result_path))))
        cmd = [sys.executable, "-m", "gpupart", "run", "-n", str(params["ranks"]), "--cpu"]
        cmd += ["--", sys.executable, str(Path(__file__)), "--worker", str(params_path)]
        status, out = _peers.run(cmd, env, timeout)
        if status == 0 and result_path.exists():
            return json.loads(result_path.read_text())
        return {"error": f"gpupart run exited with status {status}", "output": _peers.tail(out, 40)}


def run_pandas(root: Path, reps: int) -> dict:
    import pandas as pd

    df = pd.read_parquet(root / "data")
    dim = pd.read_parquet(root / "dim.parquet")
    ops = {
        "read_parquet": lambda: pd.read_parquet(root / "data"),
        "groupby key": lambda: df.groupby("key", as_index=False, sort=False).agg(
            x=("x", "sum"), y=("y", "mean")
        ),
        "groupby hot (skewed)": lambda: df.groupby("hot", as_index=False, sort=False).agg(
            x=("x", "sum")
        ),
        "merge dim": lambda: df.merge(dim, on="key"),
        "sort_values x": lambda: df.sort_values("x", kind="stable"),
    }
    return {name: _time(fn, reps, lambda: None) for name, fn in ops.items()}


def run_polars(root: Path, reps: int) -> dict:
    try:
        import polars as pl
    except ImportError:
        return {"skipped": "polars not installed (pip install -e .[bench])"}
    files = str(root / "data" / "*.parquet")
    df = pl.read_parquet(files)
    dim = pl.read_parquet(root / "dim.parquet")
    ops = {
        "read_parquet": lambda: pl.read_parquet(files),
        "groupby key": lambda: df.group_by("key").agg(pl.col("x").sum(), pl.col("y").mean()),
        "groupby hot (skewed)": lambda: df.group_by("hot").agg(pl.col("x").sum()),
        "merge dim": lambda: df.join(dim, on="key"),
        "sort_values x": lambda: df.sort("x", maintain_order=True),
    }
    return {name: _time(fn, reps, lambda: None) for name, fn in ops.items()}


def run_duckdb(root: Path, reps: int) -> dict:
    try:
        import duckdb
    except ImportError:
        return {"skipped": "duckdb not installed (pip install -e .[bench])"}
    con = duckdb.connect()
    files = str(root / "data" / "*.parquet")
    con.execute(f"CREATE TABLE df AS SELECT * FROM read_parquet('{files}')")
    con.execute(f"CREATE TABLE dim AS SELECT * FROM read_parquet('{root / 'dim.parquet'}')")
    into = "CREATE OR REPLACE TABLE r AS "  # results materialised in DuckDB's own format
    queries = {
        "read_parquet": f"{into} SELECT * FROM read_parquet('{files}')",
        "groupby key": f"{into} SELECT key, sum(x), avg(y) FROM df GROUP BY key",
        "groupby hot (skewed)": f"{into} SELECT hot, sum(x) FROM df GROUP BY hot",
        "merge dim": f"{into} SELECT * FROM df JOIN dim USING (key)",
        "sort_values x": f"{into} SELECT * FROM df ORDER BY x",
    }
    out = {
        name: _time(lambda q=q: con.execute(q), reps, lambda: None) for name, q in queries.items()
    }
    con.close()
    return out


def run_dask(root: Path, ranks: int, reps: int) -> dict:
    try:
        import dask.dataframe as dd
        from distributed import Client, LocalCluster, wait
    except ImportError:
        return {"skipped": "dask.dataframe / distributed not installed (pip install -e .[bench])"}
    logging.getLogger("distributed").setLevel(logging.ERROR)  # one line per shuffle otherwise
    with (
        LocalCluster(
            n_workers=ranks, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        df = dd.read_parquet(str(root / "data")).persist()
        dim = dd.read_parquet(str(root / "dim.parquet")).persist()
        wait([df, dim])
        ops = {
            "read_parquet": lambda: dd.read_parquet(str(root / "data")),
            "groupby key": lambda: df.groupby("key", sort=False).agg(
                x=("x", "sum"), y=("y", "mean"), split_out=ranks
            ),
            "groupby hot (skewed)": lambda: df.groupby("hot", sort=False).agg(
                x=("x", "sum"), split_out=ranks
            ),
            "merge dim": lambda: df.merge(dim, on="key", shuffle_method="tasks"),
            "sort_values x": lambda: df.sort_values("x"),
        }
        return {
            name: _time(lambda fn=fn: wait(fn().persist()), reps, lambda: None)
            for name, fn in ops.items()
        }


def summarize(report: dict) -> list[dict]:
    rows = []
    ours = report["gpupart"].get("times", {})
    for op in OPS:
        row: dict[str, Any] = {"op": op}
        if op in ours:
            row["gpupart"] = _peers.stats(ours[op])
        for peer in PEERS:
            times = report.get(peer, {})
            if isinstance(times, dict) and op in times:
                row[peer] = _peers.stats(times[op])
                if "gpupart" in row:
                    row[f"vs_{peer}"] = row[peer]["median"] / row["gpupart"]["median"]
                    if (peer, op) in GOALS:
                        row[f"goal_{peer}"] = row[f"vs_{peer}"] >= GOALS[(peer, op)]
        rows.append(row)
    return rows


def print_report(report: dict) -> None:
    params = report["params"]
    print(
        f"\nDistributed frames, {params['rows']:,} rows, {params['ranks']} ranks"
        " (seconds, median (min-max); speed-up = peer / gpupart)\n"
    )
    head = ["op", "gpupart", *PEERS, *(f"vs {p}" for p in PEERS)]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|")
    for row in report["summary"]:
        cells = [row["op"]]
        for key in ("gpupart", *PEERS):
            s = row.get(key)
            cells.append(f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})" if s else "-")
        for peer in PEERS:
            if f"vs_{peer}" not in row:
                cells.append("-")
                continue
            mark = ""
            if f"goal_{peer}" in row:
                goal = GOALS[(peer, row["op"])]
                mark = f" (>= {goal}: {'PASS' if row[f'goal_{peer}'] else 'FAIL'})"
            cells.append(f"{row[f'vs_{peer}']:.2f}x{mark}")
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows of the dataset")
    parser.add_argument("--keys", type=int, default=1_000_000, help="distinct keys")
    parser.add_argument("--files", type=int, default=8, help="parquet files")
    parser.add_argument("--ranks", type=int, default=2, help="gpupart ranks and dask workers")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions")
    parser.add_argument("--quick", action="store_true", help="10x smaller data, 2 repetitions")
    parser.add_argument("--peers", default=",".join(PEERS), help="peers to run")
    parser.add_argument("--out", default="bench/out", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    scale = 10 if args.quick else 1
    params = {
        "rows": args.rows // scale,
        "keys": max(args.keys // scale, 10),
        "files": args.files,
        "ranks": args.ranks,
        "reps": 2 if args.quick else args.reps,
        "seed": 20261201,
    }
    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers: expected some of {', '.join(PEERS)}, found {', '.join(unknown)}")
    report: dict[str, Any] = {
        "params": params,
        "machine": _peers.machine_info(),
        "versions": _peers.versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(prefix="gpupart-frames-") as tmp:
        root = Path(tmp)
        print("[bench] writing the dataset ...", file=sys.stderr, flush=True)
        write_dataset(root, params["rows"], params["keys"], params["files"], params["seed"])
        print("[bench] gpupart ...", file=sys.stderr, flush=True)
        report["gpupart"] = run_gpupart(
            dict(params, root=str(root)), _peers.peer_env(None, {}), timeout=3600
        )
        if "error" in report["gpupart"]:
            print(report["gpupart"]["output"], file=sys.stderr)
        runners = {
            "pandas": lambda: run_pandas(root, params["reps"]),
            "polars": lambda: run_polars(root, params["reps"]),
            "duckdb": lambda: run_duckdb(root, params["reps"]),
            "dask": lambda: run_dask(root, params["ranks"], params["reps"]),
        }
        for peer in peers:
            print(f"[bench] {peer} ...", file=sys.stderr, flush=True)
            report[peer] = runners[peer]()
    report["summary"] = summarize(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"frames{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
