"""Distributed dataframes: gpupart against pandas, polars, DuckDB (one process) and dask.dataframe.

One command runs them all on this machine, on the same parquet dataset::

    python bench/frames.py [--rows 10000000] [--ranks 2] [--reps 3] [--quick]

* Data: ``--files`` parquet files (row groups of 1 M rows) of ``k3``, ``k6`` (int64 keys,
  10^3 and 10^6 distinct values, uniform), ``kz`` (Zipf(1.5) keys folded into 10^6 values:
  the skewed key), ``x``, ``y`` and eight more float64 columns (~1 GB in memory at 10^7
  rows); and ``dim`` (one row per key in 0..10^6: ``k``, ``w``) for the joins.
* Operations: ``read_parquet`` (everything), then on ``k3, k6, kz, x, y`` read once:
  ``groupby(k).agg(sum x, mean y)`` on 10^3, 10^6 and the skewed keys, ``merge(dim)`` on
  ``k6`` and on ``kz`` (hash joins: the small side is not broadcast, so they measure the
  shuffle), ``sort_values(x)``; and ``read_parquet`` of ``--plan-files`` one-row files
  (planning: footers only, goal <= 2 s).
* gpupart: ``gpupart run -n RANKS --cpu -- python bench/frames.py --worker PARAMS.json``;
  each operation is timed until every rank has its part of the result (results stay
  distributed), with the bytes each rank fetched from the others (``Runtime.bytes_fetched``)
  and each rank's peak RSS. pandas (reading: pyarrow ``read_table`` + ``to_pandas``, all
  threads), polars and DuckDB run the same operations in this process on the whole data;
  dask.dataframe on a ``LocalCluster`` of RANKS single-threaded worker processes, each result
  ``.persist()``-ed and waited for.

Each operation runs once untimed, then ``--reps`` times; the median is reported with min/max
and the speed-up of gpupart over each peer (peer time / gpupart time). Goals (issue "frames"):
read >= 1.0x pyarrow and >= 2x dask; groupby/merge/sort >= 1.0x pandas and >= 3x dask; the
skewed groupby/merge within 1.3x of the uniform ones. Writes ``DIR/frames[-quick].json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers

OPS = (
    "read_parquet",
    "groupby 10^3 keys",
    "groupby 10^6 keys",
    "groupby Zipf keys",
    "merge 10^6 keys",
    "merge Zipf keys",
    "sort_values x",
    "plan many files",
)
PEERS = ("pandas", "polars", "duckdb", "dask")
GOALS = {
    ("pandas", "read_parquet"): 1.0,
    ("dask", "read_parquet"): 2.0,
    **{("pandas", op): 1.0 for op in OPS[1:7]},
    **{("dask", op): 3.0 for op in OPS[1:7]},
}
SKEW = {"groupby Zipf keys": "groupby 10^6 keys", "merge Zipf keys": "merge 10^6 keys"}
KEYS = 1_000_000
WORK = ["k3", "k6", "kz", "x", "y"]  # the columns the operations after reading use


def write_dataset(root: Path, rows: int, files: int, plan_files: int, seed: int) -> None:
    """Write ``root/data`` (``files`` files), ``root/dim.parquet`` and ``root/many``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    data = root / "data"
    data.mkdir(parents=True)
    per_file = -(-rows // files)
    for f in range(files):
        n = min(per_file, rows - f * per_file)
        columns = {
            "k3": rng.integers(0, 1000, n),
            "k6": rng.integers(0, KEYS, n),
            "kz": (rng.zipf(1.5, n) - 1) % KEYS,
            "x": rng.standard_normal(n),
            "y": rng.random(n),
            **{f"f{j}": rng.random(n) for j in range(8)},
        }
        pq.write_table(pa.table(columns), data / f"part.{f:04d}.parquet", row_group_size=1 << 20)
    dim = pa.table({"k": np.arange(KEYS, dtype=np.int64), "w": rng.random(KEYS)})
    pq.write_table(dim, root / "dim.parquet")
    many = root / "many"
    many.mkdir()
    for f in range(plan_files):
        pq.write_table(pa.table({"a": [f], "b": [float(f)]}), many / f"part.{f:05d}.parquet")


def _time(fn: Callable[[], Any], reps: int, sync: Callable[[], Any]) -> list[float]:
    return _peers.time_calls(fn, reps, sync)[0]


def worker(params_path: str) -> None:
    """One gpupart rank: time every operation; rank 0 writes the result."""
    import resource

    import gpupart

    params = json.loads(Path(params_path).read_text())
    rt = gpupart.init()
    root = Path(params["root"])
    df = gpupart.read_parquet(root / "data", columns=WORK)
    dim = gpupart.read_parquet(root / "dim.parquet")
    ops: dict[str, Callable[[], Any]] = {
        "read_parquet": lambda: gpupart.read_parquet(root / "data"),
        "groupby 10^3 keys": lambda: df.groupby("k3").agg(x=("x", "sum"), y=("y", "mean")),
        "groupby 10^6 keys": lambda: df.groupby("k6").agg(x=("x", "sum"), y=("y", "mean")),
        "groupby Zipf keys": lambda: df.groupby("kz").agg(x=("x", "sum"), y=("y", "mean")),
        "merge 10^6 keys": lambda: df.merge(dim, left_on="k6", right_on="k", broadcast=False),
        "merge Zipf keys": lambda: df.merge(dim, left_on="kz", right_on="k", broadcast=False),
        "sort_values x": lambda: df.sort_values("x"),
        "plan many files": lambda: gpupart.read_parquet(root / "many"),
    }
    result: dict[str, Any] = {"ranks": rt.size, "times": {}, "fetched": {}}
    for name, fn in ops.items():
        before = rt.bytes_fetched
        times = _time(fn, params["reps"], rt.barrier)
        moved = (rt.bytes_fetched - before) // (params["reps"] + 1)
        result["times"][name] = [max(t) for t in zip(*rt.allgather(times), strict=True)]
        result["fetched"][name] = rt.allgather(int(moved))
    whole = gpupart.read_parquet(root / "data")
    local = sum(int(p.memory_usage(deep=True).sum()) for p in whole.local_partitions.values())
    result["read_bytes_per_rank"] = rt.allgather(local)
    del whole
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    result["peak_rss_per_rank"] = rt.allgather(int(peak))
    if rt.rank == 0:
        Path(params["result"]).write_text(json.dumps(result))
    rt.close()


def run_gpupart(params: dict, env: dict[str, str], timeout: float) -> dict:
    return _peers.run_worker_job(__file__, params, env, timeout)


def run_pandas(root: Path, reps: int) -> dict:
    import pandas as pd
    import pyarrow.parquet as pq

    df = pd.read_parquet(root / "data", columns=WORK)
    dim = pd.read_parquet(root / "dim.parquet")

    def agg(key: str) -> Any:
        return df.groupby(key, as_index=False, sort=False).agg(x=("x", "sum"), y=("y", "mean"))

    ops = {
        "read_parquet": lambda: pq.read_table(root / "data").to_pandas(),
        "groupby 10^3 keys": lambda: agg("k3"),
        "groupby 10^6 keys": lambda: agg("k6"),
        "groupby Zipf keys": lambda: agg("kz"),
        "merge 10^6 keys": lambda: df.merge(dim, left_on="k6", right_on="k"),
        "merge Zipf keys": lambda: df.merge(dim, left_on="kz", right_on="k"),
        "sort_values x": lambda: df.sort_values("x", kind="stable"),
    }
    return {name: _time(fn, reps, lambda: None) for name, fn in ops.items()}


def run_polars(root: Path, reps: int) -> dict:
    try:
        import polars as pl
    except ImportError:
        return {"skipped": "polars not installed (pip install -e .[bench])"}
    files = str(root / "data" / "*.parquet")
    df = pl.read_parquet(files, columns=WORK)
    dim = pl.read_parquet(root / "dim.parquet")

    def agg(key: str) -> Any:
        return df.group_by(key).agg(pl.col("x").sum(), pl.col("y").mean())

    ops = {
        "read_parquet": lambda: pl.read_parquet(files),
        "groupby 10^3 keys": lambda: agg("k3"),
        "groupby 10^6 keys": lambda: agg("k6"),
        "groupby Zipf keys": lambda: agg("kz"),
        "merge 10^6 keys": lambda: df.join(dim, left_on="k6", right_on="k"),
        "merge Zipf keys": lambda: df.join(dim, left_on="kz", right_on="k"),
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
    con.execute(f"CREATE TABLE df AS SELECT {', '.join(WORK)} FROM read_parquet('{files}')")
    con.execute(f"CREATE TABLE dim AS SELECT * FROM read_parquet('{root / 'dim.parquet'}')")
    into = "CREATE OR REPLACE TABLE r AS "  # results materialised in DuckDB's own format
    queries = {
        "read_parquet": f"{into} SELECT * FROM read_parquet('{files}')",
        **{
            f"groupby {label} keys": f"{into} SELECT {k}, sum(x), avg(y) FROM df GROUP BY {k}"
            for label, k in (("10^3", "k3"), ("10^6", "k6"), ("Zipf", "kz"))
        },
        "merge 10^6 keys": f"{into} SELECT * FROM df JOIN dim ON df.k6 = dim.k",
        "merge Zipf keys": f"{into} SELECT * FROM df JOIN dim ON df.kz = dim.k",
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
        df = dd.read_parquet(str(root / "data"), columns=WORK).persist()
        dim = dd.read_parquet(str(root / "dim.parquet")).persist()
        wait([df, dim])

        def agg(key: str) -> Any:
            return df.groupby(key, sort=False).agg(x=("x", "sum"), y=("y", "mean"), split_out=ranks)

        ops = {
            "read_parquet": lambda: dd.read_parquet(str(root / "data")),
            "groupby 10^3 keys": lambda: agg("k3"),
            "groupby 10^6 keys": lambda: agg("k6"),
            "groupby Zipf keys": lambda: agg("kz"),
            "merge 10^6 keys": lambda: df.merge(dim, left_on="k6", right_on="k"),
            "merge Zipf keys": lambda: df.merge(dim, left_on="kz", right_on="k"),
            "sort_values x": lambda: df.sort_values("x"),
        }
        out: dict[str, Any] = {}
        # reading last: releasing a fresh read's results can drop the keys df's persisted
        # partitions share (every later operation then fails with "lost dependencies")
        for name in sorted(ops, key=lambda op: op == "read_parquet"):
            fn = ops[name]
            try:
                out[name] = _time(lambda fn=fn: wait(fn().persist()), reps, lambda: None)
            except Exception as exc:  # e.g. a worker killed for memory: reported, not fatal
                out.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:300]
        return out


def summarize(report: dict) -> list[dict]:
    rows = []
    ours = report["gpupart"].get("times", {})
    fetched = report["gpupart"].get("fetched", {})
    for op in OPS:
        row: dict[str, Any] = {"op": op}
        if op in ours:
            row["gpupart"] = _peers.stats(ours[op])
            row["fetched_mb_per_rank"] = [b / 1e6 for b in fetched.get(op, [])]
        for peer in PEERS:
            times = report.get(peer, {})
            if isinstance(times, dict) and op in times:
                row[peer] = _peers.stats(times[op])
                if "gpupart" in row:
                    row[f"vs_{peer}"] = row[peer]["median"] / row["gpupart"]["median"]
                    if (peer, op) in GOALS:
                        row[f"goal_{peer}"] = row[f"vs_{peer}"] >= GOALS[(peer, op)]
        if op in SKEW and op in ours and SKEW[op] in ours:
            row["vs_uniform"] = row["gpupart"]["median"] / _peers.stats(ours[SKEW[op]])["median"]
            row["goal_skew"] = row["vs_uniform"] <= 1.3
        if op == "plan many files" and "gpupart" in row:
            row["goal_plan"] = row["gpupart"]["median"] <= 2.0
        rows.append(row)
    return rows


def _cell(stats: dict | None) -> str:
    return f"{stats['median']:.3f} ({stats['min']:.3f}-{stats['max']:.3f})" if stats else "-"


def print_report(report: dict) -> None:
    params = report["params"]
    print(
        f"\nDistributed frames, {params['rows']:,} rows, {params['ranks']} ranks"
        " (seconds, median (min-max); speed-up = peer / gpupart)\n"
    )
    head = ["op", "gpupart", *PEERS, *(f"vs {p}" for p in PEERS), "fetched MB/rank"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|")
    for row in report["summary"]:
        cells = [row["op"], _cell(row.get("gpupart"))]
        cells += [_cell(row.get(peer)) for peer in PEERS]
        for peer in PEERS:
            if f"vs_{peer}" not in row:
                cells.append("-")
                continue
            mark = ""
            if f"goal_{peer}" in row:
                goal = GOALS[(peer, row["op"])]
                mark = f" (>= {goal}: {'PASS' if row[f'goal_{peer}'] else 'FAIL'})"
            cells.append(f"{row[f'vs_{peer}']:.2f}x{mark}")
        cells.append(", ".join(f"{m:.0f}" for m in row.get("fetched_mb_per_rank", [])) or "-")
        print("| " + " | ".join(cells) + " |")
    print()
    for row in report["summary"]:
        if "vs_uniform" in row:
            mark = "PASS" if row["goal_skew"] else "FAIL"
            print(f"{row['op']}: {row['vs_uniform']:.2f}x the uniform keys' time (<= 1.3: {mark})")
        if "goal_plan" in row:
            mark = "PASS" if row["goal_plan"] else "FAIL"
            print(
                f"read_parquet of {params['plan_files']:,} one-row files:"
                f" {row['gpupart']['median']:.2f} s (<= 2 s: {mark})"
            )
    for peer in PEERS:
        result = report.get(peer, {})
        for name, error in {**result.get("errors", {}), "": result.get("error")}.items():
            if error:
                print(f"{peer}{' ' + name if name else ''}: {error}")
    ours = report["gpupart"]
    if "read_bytes_per_rank" in ours:
        per_rank = ours["read_bytes_per_rank"]
        spread = max(per_rank) / max(np.mean(per_rank), 1) - 1
        print(
            "read_parquet bytes per rank: "
            + ", ".join(f"{b / 1e6:.0f} MB" for b in per_rank)
            + f" (largest {spread:+.1%} of the mean)"
        )
        print(
            "peak RSS per rank: "
            + ", ".join(f"{b / 1e9:.2f} GB" for b in ours["peak_rss_per_rank"])
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the dataset")
    parser.add_argument("--files", type=int, default=8, help="parquet files")
    parser.add_argument("--plan-files", type=int, default=10_000, help="one-row files to plan")
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
        "files": args.files,
        "plan_files": args.plan_files // scale,
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
        write_dataset(root, params["rows"], params["files"], params["plan_files"], params["seed"])
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
        # dask first: its workers need the memory the in-process peers would leave fragmented
        for peer in sorted(peers, key=lambda p: p != "dask"):
            print(f"[bench] {peer} ...", file=sys.stderr, flush=True)
            try:
                report[peer] = runners[peer]()
            except Exception as exc:  # one peer failing must not lose the others' numbers
                report[peer] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
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
