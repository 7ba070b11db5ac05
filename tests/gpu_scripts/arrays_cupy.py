"""GPU rank script: DistArray with CuPy tiles, every family of operations against NumPy."""

from __future__ import annotations

import cupy as cp
import numpy as np

import gpupart
from gpupart import protocol


def same(label: str, got: gpupart.DistArray, want: np.ndarray) -> None:
    for tile in got.local_tiles.values():
        assert isinstance(tile, cp.ndarray), f"{label}: a {type(tile).__name__} tile"
    host = got.to_numpy()
    assert host.shape == want.shape, f"{label}: shape {host.shape} != {want.shape}"
    np.testing.assert_allclose(host, want, rtol=1e-12, atol=1e-12, err_msg=label)


with gpupart.init(device="cuda") as rt:
    xp = gpupart.array_api
    assert rt.backend.is_gpu, rt
    a = np.arange(84.0).reshape(12, 7) / 7
    x = gpupart.asarray(a, grid=(3, 2))  # uneven, cut on both axes
    y = gpupart.asarray(a[:, ::-1].copy(), tiles=(5, 7))  # another layout
    same("asarray", x, a)
    same("elementwise", xp.exp(x) * 2 + 1, np.exp(a) * 2 + 1)
    same("different layouts", x + y, a + a[:, ::-1])
    same("sum axis 0", xp.sum(x, axis=0), a.sum(axis=0))
    same("mean", xp.mean(x), np.asarray(a.mean()))
    same("std axis 1", xp.std(x, axis=1), a.std(axis=1))
    same("argmax", xp.argmax(x, axis=0), a.argmax(axis=0))
    rows = gpupart.asarray(a)  # rows across ranks
    same("X.T @ X", rows.T @ rows, a.T @ a)
    same("cumulative_sum", xp.cumulative_sum(rows, axis=0), np.cumsum(a, axis=0))
    same("reshape in place", xp.reshape(rows, (12, 7, 1)), a.reshape(12, 7, 1))
    same("reshape moving", xp.reshape(x, (7, 12)), a.reshape(7, 12))
    same("slicing", x[2:11:3, ::-2], a[2:11:3, ::-2])
    same("mask", rows[rows[:, 0] > 3.0], a[a[:, 0] > 3.0])
    same("repartition", x.repartition(grid=(1, rt.size)), a)
    z = gpupart.zeros((12, 7))
    z += x
    z[0] = -1.0
    want = a.copy()
    want[0] = -1.0
    same("in place", z, want)
    rng = gpupart.random.default_rng(3).standard_normal((1000, 4))
    same("random", rng, gpupart.random.default_rng(3).standard_normal((1000, 4)).to_numpy())
    piece = cp.full((rt.rank + 1, 3), float(rt.rank))
    local = gpupart.from_local(piece)
    assert next(iter(local.local_tiles.values())) is piece, "from_local keeps the piece"
    # a stream of our own: x's tiles are produced there, the sum waits on its event
    stream = rt.backend.create_stream()
    with stream.as_current():
        w = gpupart.ones((1 << 22,))
        for _ in range(20):
            w += 1.0
    assert w.stream.handle == stream.handle
    assert float(xp.sum(w + gpupart.zeros((1 << 22,)))) == 21.0 * (1 << 22)
    # __partitioned__ out and back in
    parts = x.__partitioned__
    view = protocol.validate(parts, strict=True)
    for pos in parts["locals"]:
        loc = parts["partitions"][pos]["location"][0]
        assert loc.memory == "device" and loc.device.startswith("kDLCUDA"), loc
    assert view.shape == (12, 7)
    same("from_partitioned", gpupart.from_partitioned(parts), a)
    total = xp.sum(x)
    assert np.isclose(float(total), a.sum())
    one = gpupart.asarray(a, grid=(1, 1))
    if rt.size == 1:
        assert one.__cuda_array_interface__["shape"] == (12, 7)
        np.testing.assert_array_equal(cp.asnumpy(cp.from_dlpack(one)), a)
    rt.barrier()
    print(f"ARRAYS GPU OK rank {rt.rank}", flush=True)
