"""A gpupart rank beside a Dask program (``dask_driver.py`` starts the job).

``DASK_SCHEDULER_ADDRESS=... gpupart run -n N -- python dask_rank.py``: every rank is a Dask
client of the driver's scheduler (``Client()`` reads the address from the environment). It
adopts the array and the frame the driver published (each rank calling ``to_partitioned``
on the dataset, and the driver's own pickled ``__partitioned__`` dict), checks them against
NumPy/pandas and that its tiles are what ``get`` returned (no copy), and hands results back
with ``to_dask`` (published as ``ARRAY_BACK``/``FRAME_BACK`` for the driver to read after the
job has ended).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from distributed import Client, Future
from gpupart.containers import layout
from pandas.testing import assert_frame_equal

import gpupart
from gpupart.interop import dask as gd
from gpupart.protocol import Tiling

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _interop import recording
from _mp import emit, expect, raises
from dask_data import (
    ARRAY,
    ARRAY_BACK,
    CHUNKS,
    FRAME,
    FRAME_BACK,
    PARTITIONS,
    SHAPE,
    SPEC,
    array,
    frame,
)


def array_in(rt, client) -> gpupart.DistArray:
    spec = gd.to_partitioned(client.get_dataset(ARRAY), client)
    view = gpupart.protocol.validate(spec, strict=True)
    expect("locals" not in spec, "a Dask-style dict has no locals")
    expect(view.shape == SHAPE and view.tiling == (3, 2), f"{view.shape} {view.tiling}")
    expect(spec["dtype"] == np.dtype(np.float64).str, f"dtype {spec['dtype']}")
    pids = client.run(os.getpid)
    hosts = {a: w["host"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    holders = client.who_has()
    for pos, entry in view.partitions.items():
        expect(isinstance(entry.data, Future), f"data {pos}: {type(entry.data).__name__}")
        want = sorted((hosts[w], pids[w]) for w in holders[entry.data.key])
        found = sorted((loc.ip, loc.pid) for loc in entry.location)
        expect(found == want, f"location {pos}: {found} vs {want}")
    got = recording(spec)
    x = gpupart.from_partitioned(spec)
    whole = array()
    tiling = Tiling.from_boundaries([np.cumsum([0, *c]).tolist() for c in CHUNKS])
    owners = layout.assign_owners(tiling, rt.size)
    for pos in layout.positions(tiling):
        expect(x.owner_of(pos) == owners[pos], f"owner of {pos}: {x.owner_of(pos)}")
    mine = sorted(x.local_tiles)
    expect(mine == [p for p in layout.positions(tiling) if owners[p] == rt.rank], f"{mine}")
    expect(len(got) == len(mine), f"get returned {len(got)} chunks for {len(mine)} tiles")
    for pos, tile in x.local_tiles.items():
        np.testing.assert_array_equal(tile, whole[tiling.slices(pos)])
        expect(any(np.shares_memory(tile, g) for g in got), f"tile {pos} is a copy")
    np.testing.assert_array_equal(x.to_numpy(), whole)
    return x


def spec_in(rt, client) -> None:
    # the driver's own dict, pickled through the scheduler: its futures bound on arrival
    x = gpupart.from_partitioned(client.get_dataset(SPEC))
    np.testing.assert_array_equal(x.to_numpy(), array())


def frame_in(rt, client) -> gpupart.DistFrame:
    spec = gd.to_partitioned(client.get_dataset(FRAME))  # the default client: this one
    expect(spec["partition_tiling"] == (PARTITIONS, 1), f"{spec['partition_tiling']}")
    expect(spec["columns"] == list(frame().columns), f"{spec['columns']}")
    got = recording(spec)
    df = gpupart.from_partitioned(spec)
    expect(isinstance(df, gpupart.DistFrame), f"a DistFrame, found {type(df).__name__}")
    expected = frame()
    cuts = np.cumsum([0, *df.partition_sizes])
    for i, part in df.local_partitions.items():
        want = expected.iloc[cuts[i] : cuts[i + 1]].reset_index(drop=True)
        assert_frame_equal(part, want)
        column = part["x"].to_numpy()
        expect(any(np.shares_memory(column, g["x"].to_numpy()) for g in got), f"part {i} copied")
    assert_frame_equal(df.to_pandas(), expected)
    return df


def array_out(rt, client, x: gpupart.DistArray) -> None:
    y = x * 2
    back = gd.to_dask(y, client, name=ARRAY_BACK)
    expect(back.chunks == CHUNKS, f"chunks {back.chunks}")
    np.testing.assert_array_equal(back.compute(), array() * 2)
    # without a name: nothing stays published, the collection lives while referenced
    before = set(client.list_datasets())
    temp = gd.to_dask(x, client)
    expect(set(client.list_datasets()) == before, f"{client.list_datasets()} vs {before}")
    rt.barrier()
    np.testing.assert_array_equal(temp.compute(), array())
    np.testing.assert_array_equal((temp.sum(axis=0)).compute(), array().sum(axis=0))


def frame_out(rt, client, df: gpupart.DistFrame) -> None:
    back = gd.to_dask(df, client, name=FRAME_BACK)
    sizes = df.partition_sizes
    expect(back.npartitions == PARTITIONS, f"npartitions {back.npartitions}")
    expect(back.divisions == (0, sizes[0], sizes[0] + sizes[1], sum(sizes) - 1), back.divisions)
    assert_frame_equal(back.compute(), frame())
    assert_frame_equal(back[back["flag"]].compute(), frame()[frame()["flag"]])
    # empty partitions: divisions must increase strictly, so they are left unknown
    few = df[df["i"] < 5]
    sparse = gd.to_dask(few, client)
    expect(few.partition_sizes == (5, 0, 0), f"sizes {few.partition_sizes}")
    expect(sparse.divisions == (None,) * 4, f"divisions {sparse.divisions}")
    assert_frame_equal(sparse.compute(), frame().iloc[:5])


def errors(rt, client) -> None:
    raises(gpupart.PartitionedTypeError, lambda: gd.to_partitioned(np.ones(3), client), "dask")
    raises(gpupart.PartitionedTypeError, lambda: gd.to_dask(np.ones(3), client), "DistArray")
    unbound = Future(("nobody", 0))
    raises(gpupart.InteropError, lambda: gd.DaskGather()([unbound]), "unbound future")
    # a step failing on one rank (the name is taken: rank 0 cannot publish) fails on all
    x = gpupart.from_local(np.arange(3.0) + rt.rank)
    raises(gpupart.CollectiveError, lambda: gd.to_dask(x, client, name=ARRAY_BACK), "rank 0")


def main() -> None:
    client = Client(timeout=60)  # the address from DASK_SCHEDULER_ADDRESS
    with gpupart.init() as rt:
        emit("plan", rank=rt.rank, size=rt.size)
        x = array_in(rt, client)
        emit("case", name="array_in", rank=rt.rank)
        spec_in(rt, client)
        emit("case", name="spec_in", rank=rt.rank)
        df = frame_in(rt, client)
        emit("case", name="frame_in", rank=rt.rank)
        array_out(rt, client, x)
        emit("case", name="array_out", rank=rt.rank)
        frame_out(rt, client, df)
        emit("case", name="frame_out", rank=rt.rank)
        errors(rt, client)
        emit("case", name="errors", rank=rt.rank)
        rt.barrier()
        emit("done", rank=rt.rank, size=rt.size)
    client.close()


if __name__ == "__main__":
    main()
