"""The main job: write a parquet dataset, read it across ranks, fit a distributed model.

Run it on one machine with ``gpupart run -n 3 -- python -m gpupart.demo`` (any number of
ranks works, one process as well). Each rank reads a byte-balanced share of the dataset's
row groups straight into its device (NumPy here, CuPy on a GPU), registers its block of
the feature matrix as its block of a :class:`gpupart.DistArray` (no copy), and the job
exports the whole matrix through ``__partitioned__`` (validated strictly). A linear
regression is then fitted where the data lives: ``X.T @ X`` and ``X.T @ y`` each all-reduce
one small matrix. Finally every
rank fetches its neighbour's tile to show consumer-scheduled transfer throughput.

Until ``gpupart.read_parquet`` lands the reading step calls pyarrow directly (row groups
split across ranks, balanced by bytes, exactly as read_parquet will).
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
from gpupart import protocol

FEATURES = 8


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
        table = pa.table({**{f"x{j}": x[:, j] for j in range(FEATURES)}, "y": y})
        target = path / f"part-{f:03d}.parquet"
        pq.write_table(table, target, row_group_size=-(-n // row_groups))
        total += target.stat().st_size
    return total


def assign_row_groups(path: Path, size: int) -> list[list[tuple[str, int, int]]]:
    """Split every file's row groups across ``size`` ranks, balanced by compressed bytes."""
    import pyarrow.parquet as pq

    groups = []
    for file in sorted(path.glob("*.parquet")):
        meta = pq.ParquetFile(file).metadata
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            groups.append((str(file), g, rg.total_byte_size, rg.num_rows))
    shares: list[list[tuple[str, int, int]]] = [[] for _ in range(size)]
    loads = [0] * size
    for file, g, nbytes, nrows in sorted(groups, key=lambda item: -item[2]):
        rank = loads.index(min(loads))
        shares[rank].append((file, g, nrows))
        loads[rank] += nbytes
    for share in shares:
        share.sort()
    return shares


def read_share(share: list[tuple[str, int, int]], rt: gpupart.Runtime) -> tuple[Any, Any, int]:
    """Read this rank's row groups into (X, y) on the rank's device; returns bytes read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for file, group, _rows in share:
        tables.append(pq.ParquetFile(file).read_row_group(group))
    columns = [f"x{j}" for j in range(FEATURES)]
    if not tables:
        xp = rt.backend.xp
        return xp.empty((0, FEATURES)), xp.empty((0,)), 0
    table = pa.concat_tables(tables)
    x = np.column_stack([table.column(c).to_numpy() for c in columns])
    y = table.column("y").to_numpy()
    xp = rt.backend.xp
    return xp.asarray(x), xp.asarray(y), table.nbytes


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

        # 1. read: byte-balanced row groups per rank, straight onto the rank's device
        shares = assign_row_groups(data_dir, rt.size)
        rt.barrier()
        t0 = time.perf_counter()
        x, y, nbytes = read_share(shares[rt.rank], rt)
        rt.barrier()
        read_s = time.perf_counter() - t0
        read_bytes = int(rt.allreduce(np.array([nbytes]))[0])

        # 2. the feature matrix as a DistArray: each rank's block stays where it was read
        #    (no copy); the job exports it through __partitioned__ (validated strictly)
        xp = rt.backend.xp
        xb = xp.concatenate([x, xp.ones((x.shape[0], 1), dtype=x.dtype)], axis=1)
        features, target = gpupart.from_local(xb, axis=0), gpupart.from_local(y, axis=0)
        view = protocol.validate(features.__partitioned__, strict=True)
        handles = [features.handles()[(r, 0)] for r in range(rt.size)]

        # 3. fit a linear regression where the data lives: X.T @ X and X.T @ y are each
        #    one all-reduce of a small matrix; every rank holds the (replicated) results
        t0 = time.perf_counter()
        gram, moment = features.T @ features, features.T @ target
        coef = np.linalg.solve(np.asarray(gram), np.asarray(moment))
        fit_s = time.perf_counter() - t0
        coef_err = float(np.max(np.abs(coef - true_weights())))

        # 4. consumer-scheduled fetch: every rank pulls its neighbour's tile (median of 3,
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
        checksums = rt.allgather(float(_host(xb.sum())))
        ok = bool(np.isclose(float(_host(fetched.sum())), checksums[neighbour.owner]))
        fetch_gbps = rt.allgather(neighbour.nbytes / fetch_s / 1e9 if fetch_s > 0 else 0.0)
        all_ok = all(rt.allgather(ok))
        del features, target  # releases the exported tiles
        total_s = time.perf_counter() - t_start
        if rt.rank == 0:
            _summary(
                rt,
                view,
                written,
                write_s,
                read_bytes,
                read_s,
                coef,
                coef_err,
                fit_s,
                fetch_gbps,
                all_ok,
                total_s,
            )
        rt.barrier()
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0 if all_ok and coef_err < 1e-2 else 1


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _summary(
    rt: gpupart.Runtime,
    view: protocol.PartitionedView,
    written: int,
    write_s: float,
    read_bytes: int,
    read_s: float,
    coef: np.ndarray,
    coef_err: float,
    fit_s: float,
    fetch_gbps: list[float],
    ok: bool,
    total_s: float,
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gpupart demo — {rt.size} rank(s), device {rt.backend.name}")
    table.add_column("step")
    table.add_column("result", justify="right")
    table.add_row("dataset written", f"{written / 1e6:.1f} MB parquet in {write_s:.2f} s")
    table.add_row(
        "read (all ranks)",
        f"{read_bytes / 1e6:.1f} MB in {read_s:.3f} s"
        f" = {read_bytes / max(read_s, 1e-9) / 1e9:.2f} GB/s",
    )
    table.add_row(
        "feature matrix", f"{view.shape} in a {view.tiling} grid (strict __partitioned__)"
    )
    table.add_row("linear fit", f"max |coef - truth| = {coef_err:.2e} in {fit_s * 1e3:.1f} ms")
    table.add_row("coefficients", np.array2string(coef, precision=3))
    table.add_row(
        "neighbour fetch (median of 3)",
        ", ".join(f"r{r}: {g:.2f} GB/s" for r, g in enumerate(fetch_gbps))
        if rt.size > 1
        else "(one rank)",
    )
    table.add_row("tiles verified", "yes" if ok else "NO")
    table.add_row("total", f"{total_s:.2f} s (pid {os.getpid()})")
    Console(width=110).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
