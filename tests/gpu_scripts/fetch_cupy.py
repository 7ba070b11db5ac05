"""GPU rank script: CuPy tiles produced on their own streams, fetched and exchanged across ranks."""

from __future__ import annotations

import cupy as cp
import numpy as np
import pyarrow as pa

import gpupart


def expected(owner: int, index: int, shape: tuple[int, ...], dtype: str, order: str) -> np.ndarray:
    size = int(np.prod(shape))
    values = (np.arange(size) % 251 + owner * 7 + index).astype(dtype)
    return values.reshape(shape, order=order)


SPECS = [
    ((8,), "float64", "C"),
    ((1000, 3), "float32", "F"),
    ((3 << 20,), "uint8", "C"),
    ((0,), "int64", "C"),
    ((512, 512), "complex64", "C"),
]

with gpupart.init(device="cuda") as rt:
    assert rt.backend.is_gpu and rt.device is not None, rt
    assert rt.location.device.startswith("kDLCUDA"), rt.location
    stream = rt.backend.create_stream()
    handles = []
    keep = []
    with stream.as_current():
        for i, (shape, dtype, order) in enumerate(SPECS):
            tile = cp.asarray(expected(rt.rank, i, shape, dtype, order), order=order)
            tile *= 1  # pending work on the stream: the owner must wait for its event
            keep.append(tile)
            handles.append(rt.put(tile, stream=stream))
    assert handles[0].location.memory == "device"
    everyone = rt.allgather(handles)
    for owner, owned in enumerate(everyone):
        got = rt.get(owned)
        for i, (arr, (shape, dtype, order)) in enumerate(zip(got, SPECS, strict=True)):
            assert isinstance(arr, cp.ndarray), type(arr)
            np.testing.assert_array_equal(cp.asnumpy(arr), expected(owner, i, shape, dtype, order))
    # out= device buffers and a host buffer for a device tile
    peer = everyone[(rt.rank + 1) % rt.size]
    out_dev = cp.empty((3 << 20,), dtype=np.uint8)
    out_host = np.empty((1000, 3), dtype=np.float32, order="F")
    got_dev, got_host = rt.get([peer[2], peer[1]], out=[out_dev, out_host])
    assert got_dev is out_dev and got_host is out_host
    np.testing.assert_array_equal(
        cp.asnumpy(out_dev), expected(peer[2].owner, 2, (3 << 20,), "uint8", "C")
    )
    np.testing.assert_array_equal(out_host, expected(peer[1].owner, 1, (1000, 3), "float32", "F"))

    # exchange: CuPy pieces (uneven, one empty), then dicts of a CuPy column and strings
    def length(src: int, dst: int) -> int:
        return 0 if (src, dst) == (0, 1) else src * 10 + dst + 1

    pieces = [cp.arange(length(rt.rank, d), dtype=cp.int64) * (d + 1) for d in range(rt.size)]
    got = rt.exchange(pieces)
    for src, arr in enumerate(got):
        assert isinstance(arr, cp.ndarray), type(arr)
        want = np.arange(length(src, rt.rank)) * (rt.rank + 1)
        np.testing.assert_array_equal(cp.asnumpy(arr), want)
    tables = [
        {
            "x": cp.full(d + 2, rt.rank, dtype=cp.float32),
            "s": pa.array([f"{rt.rank}-{d}-{k}" for k in range(d + 2)]),
        }
        for d in range(rt.size)
    ]
    for src, table in enumerate(rt.exchange(tables)):
        assert isinstance(table["x"], cp.ndarray), type(table["x"])
        assert cp.asnumpy(table["x"]).tolist() == [float(src)] * (rt.rank + 2)
        assert table["s"].to_pylist() == [f"{src}-{rt.rank}-{k}" for k in range(rt.rank + 2)]
    total = rt.allreduce(cp.ones(4, dtype=cp.float64))
    assert isinstance(total, cp.ndarray) and float(total[0]) == rt.size
    print(f"GPU OK rank {rt.rank}")
