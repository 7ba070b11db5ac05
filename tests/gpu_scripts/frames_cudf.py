"""GPU rank script: DistFrame with cuDF partitions, every family of operations against pandas."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cudf
import numpy as np
import pandas as pd

import gpupart


def same(label: str, got: object, want: pd.DataFrame, *, order: list[str] | None = None) -> None:
    for part in got.local_partitions.values():
        assert isinstance(part, cudf.DataFrame), f"{label}: a {type(part).__name__} partition"
    host = got.to_pandas()
    host = host.to_pandas() if hasattr(host, "to_pandas") else host
    if order:
        host = host.sort_values(order, kind="stable").reset_index(drop=True)
        want = want.sort_values(order, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(host, want, check_dtype=False, obj=label)


with gpupart.init(device="cuda") as rt:
    assert rt.backend.is_gpu, rt
    rng = np.random.default_rng(3)
    n = 4001
    ref = pd.DataFrame(
        {
            "k": rng.integers(0, 37, n),
            "s": pd.Series(np.array(["a", "bb", "", "dddd"])[rng.integers(0, 4, n)]),
            "x": rng.standard_normal(n),
            "t": pd.date_range("2024-01-01", periods=n, freq="h"),
        }
    )
    ref.loc[::17, "x"] = np.nan
    root = rt.broadcast(tempfile.mkdtemp() if rt.rank == 0 else None)
    if rt.rank == 0:
        ref.to_parquet(Path(root) / "data.parquet", row_group_size=500)
    rt.barrier()
    df = gpupart.read_parquet(Path(root) / "data.parquet")
    same("read_parquet", df, ref)
    same(
        "filter + assign",
        df[df.x > 0].assign(y=df[df.x > 0].x * 2),
        ref[ref.x > 0].assign(y=ref[ref.x > 0].x * 2).reset_index(drop=True),
    )
    got = df.groupby("k").agg(total=("x", "sum"), n=("x", "size"), m=("x", "mean"))
    want = ref.groupby("k", as_index=False).agg(
        total=("x", "sum"), n=("x", "size"), m=("x", "mean")
    )
    same("groupby", got, want, order=["k"])
    same(
        "groupby strings",
        df.groupby("s").agg(n=("k", "count")),
        ref.groupby("s", as_index=False).agg(n=("k", "count")),
        order=["s"],
    )
    dim = pd.DataFrame({"k": np.arange(40), "w": np.arange(40) * 0.5})
    got = df.merge(gpupart.from_pandas(dim), on="k", broadcast=False)
    same("merge", got, ref.merge(dim, on="k"), order=["k", "t"])
    same(
        "sort_values",
        df.sort_values("x"),
        ref.sort_values("x", kind="stable").reset_index(drop=True),
    )
    X = df[["k", "x"]].fillna(0.0).to_array()
    np.testing.assert_allclose(X.to_numpy(), ref[["k", "x"]].fillna(0.0).to_numpy(dtype=float))
    out = Path(root) / "out"
    df.to_parquet(out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), ref, check_dtype=False)
    print(f"[{rt.rank}] FRAMES GPU OK", file=sys.stdout, flush=True)
