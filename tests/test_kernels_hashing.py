"""The shuffle's hash partitioning (``gpupart.kernels.hashing``): definition, paths, partitions.

The row hash is pinned three ways: literal known answers, a pure-Python reference written from
the module docstring's definition, and published xxHash64/splitmix64 values. The CUDA kernels
run in numba's simulator in a fresh interpreter (``kernel_scripts/hashing_cudasim.py``) and must
give the host kernels' hashes bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from gpupart.kernels import hashing
from gpupart.kernels.hashing import (
    NULL_HASH,
    hash_columns,
    partition_counts,
    partition_of,
    partition_order,
)

from gpupart import backend
from gpupart.backend.testing import FakeCudaArray

SCRIPTS = Path(__file__).parent / "kernel_scripts"
M64 = (1 << 64) - 1


def _load_cases():
    spec = importlib.util.spec_from_file_location("hashing_cases", SCRIPTS / "hashing_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = _load_cases()

# -- a pure-Python reference of the definition in the module docstring ---------------------------


def ref_rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & M64


def ref_mix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_xxh64(data: bytes, seed: int = 0) -> int:
    p1, p2, p3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
    p4, p5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5

    def rnd(acc: int, lane: int) -> int:
        return (ref_rotl((acc + lane * p2) & M64, 31) * p1) & M64

    def word(p: int, size: int) -> int:
        return int.from_bytes(data[p : p + size], "little")

    n, p = len(data), 0
    if n >= 32:
        v = [(seed + p1 + p2) & M64, (seed + p2) & M64, seed, (seed - p1) & M64]
        while p + 32 <= n:
            v = [rnd(v[k], word(p + 8 * k, 8)) for k in range(4)]
            p += 32
        h = sum(ref_rotl(x, r) for x, r in zip(v, (1, 7, 12, 18), strict=True)) & M64
        for x in v:
            h = ((h ^ rnd(0, x)) * p1 + p4) & M64
    else:
        h = (seed + p5) & M64
    h = (h + n) & M64
    while p + 8 <= n:
        h = (ref_rotl(h ^ rnd(0, word(p, 8)), 27) * p1 + p4) & M64
        p += 8
    if p + 4 <= n:
        h = (ref_rotl(h ^ ((word(p, 4) * p1) & M64), 23) * p2 + p3) & M64
        p += 4
    while p < n:
        h = (ref_rotl(h ^ ((data[p] * p5) & M64), 11) * p1) & M64
        p += 1
    h = ((h ^ (h >> 33)) * p2) & M64
    h = ((h ^ (h >> 29)) * p3) & M64
    return h ^ (h >> 32)


def ref_value(v) -> int:
    """The value hash of one Python/NumPy scalar, by the docstring's rules."""
    if v is None or (isinstance(v, np.datetime64 | np.timedelta64) and np.isnat(v)):
        return NULL_HASH
    if isinstance(v, str | bytes):
        return ref_xxh64(v.encode() if isinstance(v, str) else v)
    if isinstance(v, np.floating):
        if np.isnan(v):
            return NULL_HASH
        v = v + v.dtype.type(0)  # -0.0 + 0.0 is +0.0
    bits = np.asarray(v).view(f"u{np.asarray(v).dtype.itemsize}")
    return ref_mix64(int(bits))


def ref_rows(columns: list[list], seed: int = 0) -> list[int]:
    out = []
    for row in zip(*columns, strict=True):
        h = seed
        for v in row:
            h = ref_mix64(ref_rotl(h, 27) ^ ref_value(v))
        out.append(h)
    return out


# -- the function itself --------------------------------------------------------------------------


def test_known_answers_pin_the_function() -> None:
    """Literal hashes: a change of the function (which reshuffles every frame) shows here."""
    got = {
        "int64": hash_columns([np.array([0, 1, -1], np.int64)]),
        "float64": hash_columns([np.array([0.0, -0.0, np.nan, 1.5])]),
        "strings": hash_columns([pa.array(["", "abc", None, "abcd" * 8])]),
        "two columns, seed 1": hash_columns(
            [np.array([7, 7], np.int64), pa.array(["x", None])], seed=1
        ),
    }
    expected = {
        "int64": [0xA706DD2F4D197E6F, 0x5E41AB087439611E, 0x5DC20AA7B2A27137],
        "float64": [0xA706DD2F4D197E6F, 0xA706DD2F4D197E6F, 0x63CFC62A2B097592, 0x6A09D17EBA9BF03E],
        "strings": [0xE8780CFCD2ADA444, 0xF46F5A5F367FD6B7, 0x63CFC62A2B097592, 0x3713146B68B1AE56],
        "two columns, seed 1": [0x0F2219361C3B6046, 0x8A8F2C7EB6B32B45],
    }
    for name, hashes in got.items():
        assert hashes.dtype == np.uint64
        assert hashes.tolist() == expected[name], name
    # ... and the reference, written from the docstring, gives the same literals
    assert ref_rows([list(np.array([0, 1, -1], np.int64))]) == expected["int64"]
    assert ref_rows([list(np.array([0.0, -0.0, np.nan, 1.5]))]) == expected["float64"]
    assert ref_rows([["", "abc", None, "abcd" * 8]]) == expected["strings"]
    assert (
        ref_rows([list(np.array([7, 7])), ["x", None]], seed=1) == expected["two columns, seed 1"]
    )


def test_building_blocks_match_published_values() -> None:
    """xxHash64 and splitmix64 are the published functions (their reference test values)."""
    from gpupart.kernels import _hashing_host

    ops = _hashing_host._ops
    published_xxh64 = {
        b"": 0xEF46DB3751D8E999,
        b"a": 0xD24EC4F1A98C6E5B,
        b"abc": 0x44BC2CF5AD770999,
    }
    for data, value in published_xxh64.items():
        assert int(ops.xxh64(np.frombuffer(data, np.uint8), 0, len(data), np.uint64(0))) == value
        assert ref_xxh64(data) == value
    assert int(ops.mix64(np.uint64(0))) == 0xE220A8397B1DCDAF == ref_mix64(0)  # splitmix64(0)
    rng = np.random.default_rng(3)
    for length in [*range(70), 100, 1000]:  # every branch of xxHash64, seeds included
        data = rng.integers(0, 256, length, dtype=np.uint8)
        for seed in (0, 12345, M64):
            got = int(ops.xxh64(data, 0, length, np.uint64(seed)))
            assert got == ref_xxh64(data.tobytes(), seed), (length, seed)


def test_host_kernels_match_the_reference() -> None:
    rng = np.random.default_rng(11)
    ints = rng.integers(-(2**63), 2**63 - 1, 50, dtype=np.int64)
    small = rng.integers(-100, 100, 50).astype(np.int16)
    floats = np.concatenate([rng.standard_normal(44), [np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-310]])
    words = [None if i % 9 == 0 else "é" * (i % 40) + str(i) for i in range(50)]
    for seed in (0, 1, M64):
        columns = [ints, small, floats.astype(np.float32), floats, pa.array(words)]
        expected = ref_rows([list(ints), list(small), list(floats.astype(np.float32)),
                             list(floats), words], seed)  # fmt: skip
        assert hash_columns(columns, seed=seed).tolist() == expected


def test_nulls_nans_and_zeros() -> None:
    nans = np.array([np.nan, -np.nan, 0.0], np.float64)
    nans[2:] = np.array([0x7FF0000000000001], np.uint64).view(np.float64)  # a signalling NaN
    h = hash_columns([nans]).tolist()
    assert h[0] == h[1] == h[2] == hash_columns([(np.zeros(1), np.array([False]))])[0]
    for dtype in (np.float16, np.float32, np.float64):
        zero, negzero, nan = hash_columns([np.array([0.0, -0.0, np.nan], dtype)]).tolist()
        assert zero == negzero
        assert nan == h[0]
    nat = hash_columns([np.array(["NaT", "2024-01-01"], "M8[us]")]).tolist()
    assert nat[0] == h[0] != nat[1]
    empty, null = hash_columns([pa.array(["", None])]).tolist()
    assert null == h[0] != empty
    # bits at their dtype: non-negative integers agree across widths, negative ones do not
    assert hash_columns([np.array([5], np.int32)]) == hash_columns([np.array([5], np.int64)])
    assert hash_columns([np.array([-1], np.int32)]) != hash_columns([np.array([-1], np.int64)])
    assert hash_columns([np.array([1.5], np.float32)]) != hash_columns([np.array([1.5])])
    # a null hashes as NULL_HASH whatever its column: rows of nulls agree across dtypes
    validity = np.array([False])
    assert hash_columns([(np.array([3], np.int8), validity)]) == hash_columns([pa.array([None])])


def test_representations_of_one_column_hash_alike() -> None:
    """NumPy, pandas (NumPy-backed, nullable, pyarrow-backed, categorical) and pyarrow agree."""
    floats = [1.5, None, -0.0, 2.0]
    expected = hash_columns([np.array([1.5, np.nan, 0.0, 2.0])])
    for col in (
        pd.Series([1.5, np.nan, -0.0, 2.0]),
        pd.Series(floats, dtype="Float64"),
        pd.Series(floats, dtype="float64[pyarrow]"),
        pa.array(floats),
        pa.chunked_array([pa.array(floats[:1]), pa.array(floats[1:])]),
    ):
        assert hash_columns([col]).tolist() == expected.tolist(), col
    ints = hash_columns([(np.array([4, 0, 6]), np.array([True, False, True]))])
    for col in (pd.Series([4, None, 6], dtype="Int64"), pa.array([4, None, 6])):
        assert hash_columns([col]).tolist() == ints.tolist()
    words = ["b", None, "", "日本"]
    expected = hash_columns([pa.array(words)])
    for col in (
        pd.Series(words, dtype=object),
        pd.Series(words, dtype="string"),
        pd.Series(words, dtype="str"),
        pd.Series(words, dtype="category"),
        pd.Index(words),
        pa.array(words, pa.large_string()),
        pa.array(words, pa.string_view()),
        pa.array(words).dictionary_encode(),
    ):
        assert hash_columns([col]).tolist() == expected.tolist(), col
    assert (
        hash_columns([np.array(["b", "", "日本"])]).tolist()
        == hash_columns([pa.array(["b", "", "日本"])]).tolist()
    )
    stamps = np.array(["2024-01-01T10:00", "NaT"], "M8[ns]")
    expected = hash_columns([stamps])
    for col in (pd.Series(stamps), pa.array(stamps), pd.Series(stamps).dt.tz_localize("UTC")):
        assert hash_columns([col]).tolist() == expected.tolist(), col
    big_endian = np.arange(5, dtype=">i8")
    assert hash_columns([big_endian]).tolist() == hash_columns([np.arange(5)]).tolist()
    strided = np.arange(10)[::2]
    assert hash_columns([strided]).tolist() == hash_columns([strided.copy()]).tolist()


def test_sliced_arrow_arrays_respect_offset_and_nulls() -> None:
    for full in (
        pa.array([None if i % 3 == 0 else "s" * i for i in range(20)]),
        pa.array([None if i % 4 == 1 else i for i in range(20)], pa.int32()),
        pa.array([None if i % 5 == 2 else i % 2 == 0 for i in range(20)]),
        pa.array([None if i % 3 == 0 else float(i) for i in range(20)]),
    ):
        whole = hash_columns([full])
        for start, length in ((0, 20), (3, 11), (7, 0), (19, 1)):
            part = full.slice(start, length)
            assert hash_columns([part]).tolist() == whole[start : start + length].tolist()


def test_multi_column_order_and_seed_matter() -> None:
    a, b = np.array([1, 2, 3]), np.array([3, 2, 1])
    ab, ba = hash_columns([a, b]), hash_columns([b, a])
    assert ab[1] == ba[1]  # the row (2, 2) either way
    assert ab[0] != ba[0]  # (1, 3) is not (3, 1)
    assert (hash_columns([a, b], seed=1) != ab).all()


def test_empty_inputs() -> None:
    for col in (np.empty(0, np.int64), pa.array([], pa.string()), pa.array(["a"]).slice(1, 0)):
        h = hash_columns([col])
        assert h.dtype == np.uint64
        assert h.shape == (0,)
    parts = partition_of(np.empty(0, np.uint64), 3)
    assert parts.dtype == np.int32
    assert parts.shape == (0,)
    order, offsets = partition_order(parts, 3)
    assert order.shape == (0,)
    assert offsets.tolist() == [0, 0, 0, 0]
    assert partition_counts(parts, 3).tolist() == [0, 0, 0]


# -- the CUDA kernels in numba's simulator ----------------------------------------------------


def test_cuda_kernels_agree_with_host_kernels_in_the_simulator() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "hashing_cudasim.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["simulator"] is True
    cases = CASES.cases()
    compared = 0
    for seed in CASES.SEEDS:
        simulated = report["hashes"][str(seed)]
        assert sorted(simulated) == sorted(cases)
        for name, columns in cases.items():
            host = hash_columns(columns, seed=seed).tolist()
            assert simulated[name] == host, f"{name}, seed {seed:#x}"
            compared += len(host)
    assert compared > 300


# -- distribution -----------------------------------------------------------------------------


@pytest.mark.parametrize("keys", ["random", "sequential", "strings"])
def test_partitions_are_even(keys: str) -> None:
    n = 100_000
    if keys == "random":
        column = np.random.default_rng(5).choice(2**62, n, replace=False).astype(np.int64)
    elif keys == "sequential":
        column = np.arange(n, dtype=np.int64)
    else:
        column = pa.array([f"user-{i}" for i in range(n)])
    hashes = hash_columns([column])
    for nparts in (3, 8):
        counts = partition_counts(partition_of(hashes, nparts), nparts)
        assert counts.sum() == n
        assert np.abs(counts / (n / nparts) - 1).max() < 0.03, counts


# -- partitions -------------------------------------------------------------------------------


def test_partition_of_is_hash_modulo_nparts() -> None:
    hashes = np.array([0, 1, 2, M64, 2**63, 12345678901234567], np.uint64)
    for nparts in (1, 2, 3, 7, 2**31 - 1):
        parts = partition_of(hashes, nparts)
        assert parts.dtype == np.int32
        assert parts.tolist() == [int(h) % nparts for h in hashes]


def test_partition_order_is_a_stable_grouping() -> None:
    rng = np.random.default_rng(2)
    for dtype in (np.int32, np.int64):
        for nparts in (1, 3, 5):
            parts = rng.integers(0, nparts, 1000).astype(dtype)
            parts[:10] = nparts - 1  # the last partition is not empty
            order, offsets = partition_order(parts, nparts)
            counts = partition_counts(parts, nparts)
            assert order.dtype == offsets.dtype == counts.dtype == np.int64
            assert counts.tolist() == np.bincount(parts, minlength=nparts).tolist()
            assert offsets.tolist() == [0, *np.cumsum(counts).tolist()]
            assert order.tolist() == np.argsort(parts, kind="stable").tolist()
            for p in range(nparts):
                rows = order[offsets[p] : offsets[p + 1]]
                assert (parts[rows] == p).all()
                assert (np.diff(rows) > 0).all()  # stable: original order kept
            # the device path's code, with NumPy standing in for CuPy, gives the same
            device_order, device_offsets = hashing._order_on(np, parts, nparts)
            assert device_order.tolist() == order.tolist()
            assert device_offsets.tolist() == offsets.tolist()
    order, offsets = partition_order(np.zeros(4, np.int32), 1)
    assert order.tolist() == [0, 1, 2, 3]
    assert offsets.tolist() == [0, 4]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "error", "match"),
    [
        ([np.arange(3), np.arange(4)], ValueError, r"columns\[1\]: expected 3 rows"),
        ([np.arange(3), pa.array(["a"])], ValueError, r"columns\[1\]: expected 3 rows"),
        ([], ValueError, "columns: expected at least one"),
        (np.arange(3), TypeError, "columns: expected a list or tuple"),
        ([pd.Series([1, 2], dtype=object)], TypeError, r"columns\[0\]: .*object column"),
        ([np.array([1, object()], dtype=object)], TypeError, r"columns\[0\]"),
        ([np.arange(3), np.ones(3, np.complex128)], TypeError, r"columns\[1\]: .*complex128"),
        ([np.ones((2, 2))], ValueError, r"columns\[0\]: expected a 1-d array"),
        ([object()], TypeError, r"columns\[0\]: expected .* found object"),
        ([pa.array([1], pa.decimal128(5, 2))], TypeError, r"columns\[0\]: .*decimal"),
        ([(np.arange(2), np.array([1, 0]))], TypeError, r"columns\[0\] validity: .*bool"),
        ([(np.arange(2), np.ones(3, bool))], TypeError, r"columns\[0\] validity: .*of 2"),
        ([(np.arange(2), None, None, None)], TypeError, r"columns\[0\]: .*a tuple of 4"),
        (
            [(np.array([0.0, 2.0, 1.0]), np.zeros(2, np.uint8), None)],
            TypeError,
            r"columns\[0\] offsets: expected a 1-d int32 or int64",
        ),
        (
            [(np.array([0, 2, 1], np.int32), np.zeros(2, np.uint8), None)],
            ValueError,
            r"columns\[0\] offsets: expected non-decreasing",
        ),
        (
            [(np.array([0, 3], np.int64), np.zeros(2, np.uint8), None)],
            ValueError,
            r"columns\[0\] offsets: .*within the 2 data bytes",
        ),
        (
            [(np.array([0, 1], np.int64), np.zeros(2, np.int8), None)],
            TypeError,
            r"columns\[0\] data: expected a 1-d uint8",
        ),
        ([np.arange(3), FakeCudaArray(np.arange(3))], TypeError, r"columns\[1\]: .*on the host"),
    ],
)
def test_bad_columns_are_named(columns, error, match) -> None:
    with pytest.raises(error, match=match):
        hash_columns(columns)


def test_bad_arguments_are_named() -> None:
    hashes = hash_columns([np.arange(4)])
    for nparts, error in ((0, ValueError), (-1, ValueError), (2**31, ValueError),
                          (1.5, TypeError), (True, TypeError), ("3", TypeError)):  # fmt: skip
        with pytest.raises(error, match="nparts"):
            partition_of(hashes, nparts)
        with pytest.raises(error, match="nparts"):
            partition_order(np.zeros(2, np.int32), nparts)
    with pytest.raises(TypeError, match="hashes: expected a 1-d uint64"):
        partition_of(hashes.astype(np.int64), 3)
    with pytest.raises(TypeError, match="hashes: expected a NumPy or CuPy array"):
        partition_of([1, 2], 3)
    for seed, error in ((-1, ValueError), (2**64, ValueError), (1.0, TypeError)):
        with pytest.raises(error, match="seed"):
            hash_columns([np.arange(2)], seed=seed)
    with pytest.raises(TypeError, match="parts: expected a 1-d integer array"):
        partition_counts(np.zeros(3), 2)
    for bad in (np.array([0, 3, 1], np.int32), np.array([0, -1], np.int64)):
        with pytest.raises(ValueError, match=r"parts: expected values in \[0, 3\), found parts\["):
            partition_order(bad, 3)
        with pytest.raises(ValueError, match=r"parts: expected values in \[0, 3\), found values"):
            hashing._order_on(np, bad, 3)


def test_stream_argument_forms() -> None:
    class ProtocolStream:
        def __cuda_stream__(self):
            return (0, 0x1234)

    class CupyLikeStream:
        ptr = 0x5678

    assert hashing._stream_handle(ProtocolStream()) == 0x1234
    assert hashing._stream_handle(CupyLikeStream()) == 0x5678
    assert hashing._stream_handle(7) == 7
    if "cupy" not in sys.modules:
        assert hashing._stream_handle(None) == 0
    for bad in ("s", -1, True, 1.0):
        with pytest.raises(TypeError, match="stream: expected"):
            hashing._stream_handle(bad)
    # host inputs ignore the stream: host work is synchronous
    hash_columns([np.arange(2)], stream=object())


def test_import_compiles_nothing_and_loads_no_heavy_module() -> None:
    code = textwrap.dedent(
        """
        import sys
        import gpupart.kernels.hashing
        print(sorted(m for m in ("numba", "pyarrow", "pandas", "cupy") if m in sys.modules))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "[]"


# -- a real GPU -------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_path_agrees_with_host_on_a_gpu() -> None:
    if backend.probe().count == 0:
        pytest.skip("needs a CUDA GPU with CuPy")
    import cupy

    def to_device(layout):
        return tuple(None if a is None or a.size == 0 else cupy.asarray(a) for a in layout)

    stream = cupy.cuda.Stream(non_blocking=True)
    for seed in CASES.SEEDS:
        for name, columns in CASES.cases().items():
            layouts, _, _ = hashing._layouts(columns)
            device_columns = [
                (c.offsets, c.data, c.validity) if isinstance(c, hashing.StringColumn) else
                (c.values, c.validity)
                for c in layouts
            ]  # fmt: skip
            device_columns = [to_device(c) for c in device_columns]
            host = hash_columns(columns, seed=seed)
            for s in (None, stream):
                got = hash_columns(device_columns, seed=seed, stream=s)
                if s is not None:
                    s.synchronize()
                assert isinstance(got, cupy.ndarray)
                assert cupy.asnumpy(got).tolist() == host.tolist(), name
    keys = np.random.default_rng(1).integers(0, 1000, 100_000)
    host_parts = partition_of(hash_columns([keys]), 7)
    device_parts = partition_of(hash_columns([cupy.asarray(keys)], stream=stream), 7, stream=stream)
    order, offsets = partition_order(device_parts, 7, stream=stream)
    host_order, host_offsets = partition_order(host_parts, 7)
    assert cupy.asnumpy(device_parts).tolist() == host_parts.tolist()
    assert cupy.asnumpy(order).tolist() == host_order.tolist()
    assert cupy.asnumpy(offsets).tolist() == host_offsets.tolist()
    assert (
        cupy.asnumpy(partition_counts(device_parts, 7)).tolist() == np.diff(host_offsets).tolist()
    )
