"""The main job: write a parquet dataset, read it across ranks, fit a distributed model.

Run it on one machine with ``gpupart run -n 3 -- python -m gpupart.demo`` (any number of
ranks works, one process as well). ``gpupart.read_parquet`` gives each rank a balanced share
of the dataset's row groups, read straight into its device (pandas here, cuDF on a GPU); a
distributed groupby summarises the rows by segment (one shuffle of partial aggregates); the
feature columns become a :class:`gpupart.DistArray` (each rank's block stays where it was
read) that the job exports through ``__partitioned__`` (validated strictly). A linear
regression (``gpupart.ml.LinearRegression``) is then fitted where the data lives: only the
column means, the centred Gram matrix and ``X.T @ y`` are all-reduced. Finally every rank
fetches its neighbour's tile to show consumer-scheduled transfer throughput.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import gpupart
from gpupart import ml, protocol

FEATURES = 8
SEGMENTS = ("north", "south", "east", "west")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpupart.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the dataset")
    parser.add_argument("--files", type=int, default=4, help="parquet files to write")
    parser.add_argument("--row-groups", type=int, default=8, help="row groups per file")
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset directory (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def true_weights() -> np.ndarray:
    """Return the coefficients the dataset is generated from (bias last)."""
    return np.linspace(-2.0, 2.0, FEATURES + 1)


def write_dataset(path: Path, rows: int, files: int, row_groups: int, seed: int) -> int:
    """Write ``files`` parquet files of synthetic regression data; returns bytes on disk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = true_weights()
    per_file = -(-rows // files)
    total = 0
    for f in range(files):
        n = min(per_file, rows - f * per_file)
        if n <= 0:
            break
        x = rng.standard_normal((n, FEATURES))
        y = x @ w[:-1] + w[-1] + 0.01 * rng.standard_normal(n)
        segment = pa.array(np.array(SEGMENTS)[rng.integers(0, len(SEGMENTS), n)], pa.string())
        columns = {f"x{j}": x[:, j] for j in range(FEATURES)}
        table = pa.table({**columns, "y": y, "segment": segment})
        target = path / f"part-{f:03d}.parquet"
        pq.write_table(table, target, row_group_size=-(-n // row_groups))
        total += target.stat().st_size
    return total


def main(argv: list[str] | None = None) -> int:
    """Run the demo job (see the module docstring)."""
    args = _parse(argv)
    with gpupart.init() as rt:
        t_start = time.perf_counter()
        data_dir = args.data
        own_dir = None
        if rt.rank == 0:
            if data_dir is None:
                own_dir = data_dir = Path(tempfile.mkdtemp(prefix="gpupart-demo-"))
            t0 = time.perf_counter()
            written = write_dataset(data_dir, args.rows, args.files, args.row_groups, args.seed)
            write_s = time.perf_counter() - t0
        data_dir, written, write_s = rt.broadcast(
            (str(data_dir), written, write_s) if rt.rank == 0 else None
        )
        data_dir = Path(data_dir)

        # 1. read: row groups balanced over the ranks, each read straight onto its device
        rt.barrier()
        t0 = time.perf_counter()
        df = gpupart.read_parquet(data_dir)
        rows = sum(df.partition_sizes)  # learnt once, collectively
        read_s = time.perf_counter() - t0
        local_bytes = sum(
            int(p.memory_usage(deep=True).sum()) for p in df.local_partitions.values()
        )
        read_bytes = int(rt.allreduce(np.array([local_bytes]))[0])

        # 2. a distributed groupby: partial aggregates per rank, one shuffle of the partials
        t0 = time.perf_counter()
        by_segment = df.groupby("segment").agg(rows=("y", "size"), mean_y=("y", "mean"))
        segments = by_segment.to_pandas().sort_values("segment")  # a few rows, every rank
        groupby_s = time.perf_counter() - t0

        # 3. the feature matrix as a DistArray: each rank's rows stay where they were read;
        #    the job exports it through __partitioned__ (validated strictly)
        columns = [f"x{j}" for j in range(FEATURES)]
        features = df.to_array(columns)
        target = df["y"]
        view = protocol.validate(features.__partitioned__, strict=True)
        handles = [h for _, h in sorted(features.handles().items())]

        # 4. fit a linear regression where the data lives (gpupart.ml): the column means,
        #    then the centred Gram matrix and X.T @ y, each one all-reduce of small arrays
        t0 = time.perf_counter()
        model = ml.LinearRegression().fit(features, target)
        r2 = model.score(features, target)
        coef = np.append(model.coef_, model.intercept_)
        fit_s = time.perf_counter() - t0
        coef_err = float(np.max(np.abs(coef - true_weights())))

        # 5. consumer-scheduled fetch: every rank pulls its neighbour's tile (median of 3,
        #    into one reused buffer, so first-touch page faults are not what is measured)
        neighbour = handles[(rt.rank + 1) % rt.size]
        landing = rt.backend.empty(neighbour.shape, np.dtype(neighbour.dtype))
        times = []
        for _ in range(3):
            rt.barrier()
            t0 = time.perf_counter()
            fetched = rt.get(neighbour, out=landing if neighbour.owner != rt.rank else None)
            times.append(time.perf_counter() - t0)
        fetch_s = sorted(times)[1]
        local_sum = sum(float(_host(t.sum())) for t in features.local_tiles.values())
        checksums = rt.allgather(local_sum)
        ok = bool(np.isclose(float(_host(fetched.sum())), checksums[neighbour.owner]))
        ok = ok and int(segments["rows"].sum()) == rows
        fetch_gbps = rt.allgather(neighbour.nbytes / fetch_s / 1e9 if fetch_s > 0 else 0.0)
        all_ok = all(rt.allgather(ok))
        del features, target, model  # releases the exported tiles
        if rt.rank == 0:
            results = {
                "written": written,
                "write_s": write_s,
                "rows": rows,
                "read_bytes": read_bytes,
                "read_s": read_s,
                "segments": segments,
                "groupby_s": groupby_s,
                "view": view,
                "coef": coef,
                "coef_err": coef_err,
                "r2": r2,
                "fit_s": fit_s,
                "fetch_gbps": fetch_gbps,
                "ok": all_ok,
                "total_s": time.perf_counter() - t_start,
            }
            _summary(rt, results)
        rt.barrier()
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0 if all_ok and coef_err < 1e-2 else 1


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _summary(rt: gpupart.Runtime, r: dict[str, Any]) -> None:
    """Print what each step did (rank 0)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gpupart demo — {rt.size} rank(s), device {rt.backend.name}")
    table.add_column("step")
    table.add_column("result", justify="right")
    table.add_row("dataset written", f"{r['written'] / 1e6:.1f} MB parquet in {r['write_s']:.2f} s")
    table.add_row(
        "read_parquet (all ranks)",
        f"{r['rows']:,} rows, {r['read_bytes'] / 1e6:.1f} MB in memory in {r['read_s']:.3f} s"
        f" = {r['read_bytes'] / max(r['read_s'], 1e-9) / 1e9:.2f} GB/s",
    )
    counts = ", ".join(
        f"{seg}: {n:,} (mean y {m:+.3f})"
        for seg, n, m in zip(
            r["segments"]["segment"], r["segments"]["rows"], r["segments"]["mean_y"], strict=True
        )
    )
    table.add_row("groupby(segment)", f"{counts} in {r['groupby_s'] * 1e3:.0f} ms")
    view = r["view"]
    table.add_row(
        "feature matrix", f"{view.shape} in a {view.tiling} grid (strict __partitioned__)"
    )
    table.add_row(
        "ml.LinearRegression",
        f"max |coef - truth| = {r['coef_err']:.2e}, R² = {r['r2']:.5f},"
        f" fit and score in {r['fit_s'] * 1e3:.1f} ms",
    )
    table.add_row("coefficients", np.array2string(r["coef"], precision=3))
    table.add_row(
        "neighbour fetch (median of 3)",
        ", ".join(f"r{k}: {g:.2f} GB/s" for k, g in enumerate(r["fetch_gbps"]))
        if rt.size > 1
        else "(one rank)",
    )
    table.add_row("tiles and counts verified", "yes" if r["ok"] else "NO")
    table.add_row("total", f"{r['total_s']:.2f} s (pid {os.getpid()})")
    Console(width=110).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
