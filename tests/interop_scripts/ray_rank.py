"""A gpupart rank beside a Ray program (``ray_driver.py`` starts the job).

``RAY_ADDRESS=... gpupart run -n N -- python ray_rank.py``: every rank is a Ray driver of
the test's cluster. It takes the driver's refs from a named actor, adopts the 2 x 2 grid of
blocks and the 3 frames (``to_partitioned`` + ``gpupart.from_partitioned``), checks them
against NumPy/pandas and that its tiles are what ``ray.get`` returned (no copy), puts
results back with ``to_ray`` (used by a Ray task, and adopted again), and hands them to the
driver's keeper actor, which borrows the refs and copies the values.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import ray
from gpupart.containers import layout
from pandas.testing import assert_frame_equal

import gpupart
from gpupart.interop import ray as gr
from gpupart.protocol import Tiling

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _interop import recording
from _mp import emit, expect, raises
from ray_data import COL_CUTS, FRAME_ROWS, KEEPER, NAMESPACE, ROW_CUTS, SOURCE, array, frame


def array_in(rt, source) -> gpupart.DistArray:
    spec = gr.to_partitioned(ray.get(source.get.remote("array")))
    got = recording(spec)
    x = gpupart.from_partitioned(spec)
    tiling = Tiling.from_boundaries([list(ROW_CUTS), list(COL_CUTS)])
    owners = layout.assign_owners(tiling, rt.size)
    mine = [p for p in layout.positions(tiling) if owners[p] == rt.rank]
    expect(sorted(x.local_tiles) == mine, f"tiles {sorted(x.local_tiles)}, owns {mine}")
    expect(len(got) == len(x.local_tiles), f"get returned {len(got)} blocks")
    whole = array()
    for pos, tile in x.local_tiles.items():
        np.testing.assert_array_equal(tile, whole[tiling.slices(pos)])
        expect(any(np.shares_memory(tile, g) for g in got), f"tile {pos} is a copy")
        expect(not tile.flags.writeable, f"tile {pos}: a view of the object store, read-only")
    np.testing.assert_array_equal(x.to_numpy(), whole)
    return x


def frame_in(rt, source) -> gpupart.DistFrame:
    refs = ray.get(source.get.remote("frame"))
    spec = gr.to_partitioned(refs, shapes=[(n, 3) for n in FRAME_ROWS])
    got = recording(spec)
    df = gpupart.from_partitioned(spec)
    expect(isinstance(df, gpupart.DistFrame), f"a DistFrame, found {type(df).__name__}")
    expect(df.partition_sizes == FRAME_ROWS, f"sizes {df.partition_sizes}")
    cuts = np.cumsum([0, *FRAME_ROWS])
    for i, part in df.local_partitions.items():
        assert_frame_equal(part, frame().iloc[cuts[i] : cuts[i + 1]].reset_index(drop=True))
        column = part["x"].to_numpy()
        expect(any(np.shares_memory(column, g["x"].to_numpy()) for g in got), f"{i} copied")
    assert_frame_equal(df.to_pandas(), frame())
    return df


@ray.remote(num_cpus=0)
def total(*blocks_: np.ndarray) -> float:
    return float(sum(b.sum() for b in blocks_))


def array_out(rt, keeper, x: gpupart.DistArray) -> None:
    y = x * 2
    out = gr.to_ray(y)
    expect(len(out.refs) == 2 and all(len(r) == 2 for r in out.refs), "a 2 x 2 grid of refs")
    np.testing.assert_array_equal(np.block([ray.get(row) for row in out.refs]), array() * 2)
    flat = [r for row in out.refs for r in row]
    expect(np.isclose(ray.get(total.remote(*flat)), (array() * 2).sum()), "a Ray task's sum")
    again = gpupart.from_partitioned(out.partitioned)  # and back into gpupart
    np.testing.assert_array_equal(again.to_numpy(), array() * 2)
    if rt.rank == 0:  # the keeper borrows the refs, and copies the values
        ray.get([keeper.keep.remote("array", out.refs), keeper.copy.remote("array", out.refs)])
    rt.barrier()


def frame_out(rt, keeper, df: gpupart.DistFrame) -> None:
    out = gr.to_ray(df)
    parts = ray.get(out.refs)
    expect([len(p) for p in parts] == list(FRAME_ROWS), f"{[len(p) for p in parts]}")
    import pandas as pd

    assert_frame_equal(pd.concat(parts, ignore_index=True), frame())
    if rt.rank == 0:
        ray.get(keeper.copy.remote("frame", out.refs))
    rt.barrier()


def errors(rt) -> None:
    raises(gpupart.PartitionedTypeError, lambda: gr.to_ray(np.ones(3)), "DistArray")


def main() -> None:
    ray.init(namespace=NAMESPACE, log_to_driver=False)  # the address from RAY_ADDRESS
    with gpupart.init() as rt:
        emit("plan", rank=rt.rank, size=rt.size)
        source, keeper = ray.get_actor(SOURCE), ray.get_actor(KEEPER)
        x = array_in(rt, source)
        emit("case", name="array_in", rank=rt.rank)
        df = frame_in(rt, source)
        emit("case", name="frame_in", rank=rt.rank)
        array_out(rt, keeper, x)
        emit("case", name="array_out", rank=rt.rank)
        frame_out(rt, keeper, df)
        emit("case", name="frame_out", rank=rt.rank)
        errors(rt)
        emit("case", name="errors", rank=rt.rank)
        rt.barrier()
        emit("done", rank=rt.rank, size=rt.size)
    ray.shutdown()


if __name__ == "__main__":
    main()
