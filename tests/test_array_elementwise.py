"""Elementwise functions of ``gpupart.array_api`` (``containers/elementwise.py``).

The rank script ``array_scripts/elementwise_cases.py`` compares every function with NumPy
on every dtype, with uneven and empty tiles, 0-d to 3-d, scalars and NumPy arrays on either
side, broadcasting, operands of different tilings and owners, and NumPy's protocols; it runs
as one job at 1, 2 and 3 ranks. The in-process tests below (a world of one) cover argument
errors, signatures and the NumPy routing.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PY, clean_env, records, run_ranks

import gpupart

SCRIPT = Path(__file__).parent / "array_scripts" / "elementwise_cases.py"
_LAUNCH_PREFIXES = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_")

#: The standard's elementwise functions (2024.12), plus where and astype.
STANDARD = """
abs acos acosh add asin asinh atan atan2 atanh bitwise_and bitwise_left_shift bitwise_invert
bitwise_or bitwise_right_shift bitwise_xor ceil clip conj copysign cos cosh divide equal exp
expm1 floor floor_divide greater greater_equal hypot imag isfinite isinf isnan less less_equal
log log1p log2 log10 logaddexp logical_and logical_not logical_or logical_xor maximum minimum
multiply negative nextafter not_equal positive pow real reciprocal remainder round sign signbit
sin sinh square sqrt subtract tan tanh trunc where astype
""".split()  # noqa: SIM905

#: Groups of cases every rank must report (prefixes of the case names), and at least how many.
GROUPS = {
    "unary ": 13 * 38,
    "binary ": 13 * 28 * 2,
    "scalar ": 5 * 28 * 13,
    "mixed ": 8 * 7,
    "broadcast ": 12 * 2 * 4,
    "layout ": 6 * 2 * 5,
    "numpy operand ": 6 * 4,
    "clip ": 4 * 6,
    "astype ": 13 * 13,
    "error ": 13,
}


# -- the job at 1, 2, 3 ranks -----------------------------------------------------------------


@pytest.mark.multiprocess
@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_function_against_numpy(n):
    rc, out, err = run_ranks(n, [PY, str(SCRIPT)], timeout=300.0)
    failed = [c for c in records(out, "case") if not c["ok"]]
    assert not failed, "\n".join(
        f"[{c.get('line_rank')}] {c['name']}: {c['error']}" for c in failed
    )
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-5000:]}\n--- stderr\n{err[-5000:]}"
    assert "Traceback" not in err, err
    done = sorted(records(out, "done"), key=lambda d: d["rank"])
    assert [d["rank"] for d in done] == list(range(n)), out[-3000:]
    assert all(d["size"] == n and d["failed"] == 0 for d in done)
    assert len({d["ok"] for d in done}) == 1, done  # every rank ran every case
    for rank in range(n):
        names = [c["name"] for c in records(out, "case") if c.get("line_rank", 0) == rank]
        assert len(names) == done[rank]["ok"] == len(set(names))
        for prefix, least in GROUPS.items():
            count = sum(name.startswith(prefix) for name in names)
            assert count >= least, f"rank {rank}: {count} '{prefix}' cases, expected {least}+"


# -- in one process -----------------------------------------------------------------------------


@pytest.fixture
def rt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in list(os.environ):
        if name.startswith(_LAUNCH_PREFIXES):
            monkeypatch.delenv(name)
    before = set(threading.enumerate())
    runtime = gpupart.init(device="cpu")
    yield runtime
    runtime.close()
    assert set(threading.enumerate()) == before, "the runtime left threads behind"


@pytest.fixture
def ew() -> Any:
    from gpupart.containers import elementwise

    return elementwise


def test_the_standard_functions_are_there_with_their_signatures(ew):
    assert sorted(ew.__all__) == sorted(STANDARD)
    for name in STANDARD:
        fn = getattr(ew, name)
        assert fn.__name__ == name and fn.__doc__, name
        params = list(inspect.signature(fn).parameters.values())
        assert params[0].kind is inspect.Parameter.POSITIONAL_ONLY, name
    assert list(inspect.signature(ew.clip).parameters) == ["x", "min", "max"]
    assert list(inspect.signature(ew.astype).parameters) == ["x", "dtype", "copy", "device"]
    assert len(inspect.signature(ew.where).parameters) == 3


def test_the_namespace_and_the_operators_reach_them(rt, ew):
    ns = gpupart.array_api
    for name in STANDARD:
        assert getattr(ns, name).__wrapped__ is getattr(ew, name)  # run on the operand's stream
    a = np.arange(12.0).reshape(3, 4)
    x = gpupart.asarray(a, grid=(2, 2))
    np.testing.assert_array_equal((-(x - 1) * 2 // 3).to_numpy(), -(a - 1) * 2 // 3)
    np.testing.assert_array_equal((abs(-x) ** 2 % 5).to_numpy(), abs(-a) ** 2 % 5)
    np.testing.assert_array_equal((1 / (x + 1)).to_numpy(), 1 / (a + 1))
    np.testing.assert_array_equal((~(x > 3) | (x == 0)).to_numpy(), ~(a > 3) | (a == 0))
    i = gpupart.asarray(np.arange(6, dtype=np.int32))
    np.testing.assert_array_equal(
        ((i << 2) >> 1 ^ 3 & 7).to_numpy(), (np.arange(6) << 2) >> 1 ^ 3 & 7
    )


@pytest.mark.parametrize(
    ("call", "exc", "needles"),
    [
        (lambda ew, x: ew.add(x, "1"), TypeError, ["add", "x2", "str"]),
        (lambda ew, x: ew.subtract([1], x), TypeError, ["subtract", "x1", "list"]),
        (lambda ew, x: ew.exp(2.0), TypeError, ["exp", "x", "float"]),
        (lambda ew, x: ew.exp(np.ones(3)), TypeError, ["exp", "x", "ndarray"]),
        (lambda ew, x: ew.add(np.ones(3), 1), TypeError, ["add", "at least one gpupart.DistArray"]),
        (lambda ew, x: ew.add(x, np.ones(5)), ValueError, ["add", "x1 of shape (3, 4)", "(5,)"]),
        (lambda ew, x: ew.where(x > 1, x, np.ones(2)), ValueError, ["where", "x2 of shape (2,)"]),
        (lambda ew, x: ew.bitwise_or(x, 1), TypeError, ["bitwise_or", "float64"]),
        (lambda ew, x: ew.maximum(x, 1j), TypeError, ["maximum", "x2", "complex"]),
        (lambda ew, x: ew.add(x > 1, x > 2), TypeError, ["add", "logical_or"]),
        (lambda ew, x: ew.add(ew.astype(x, np.uint8), -1), OverflowError, ["add", "-1", "uint8"]),
        (lambda ew, x: ew.sqrt(ew.astype(x, np.int8)), TypeError, ["sqrt", "float16", "astype"]),
        (lambda ew, x: ew.clip(x > 1), TypeError, ["clip", "bool"]),
        (lambda ew, x: ew.astype(x, None), TypeError, ["astype", "dtype"]),
        (lambda ew, x: ew.astype(x, "float16"), TypeError, ["astype", "float16"]),
        (lambda ew, x: ew.astype(x, np.int8, copy=1), TypeError, ["copy"]),
        (lambda ew, x: ew.astype(x, np.int8, device="cuda:7"), ValueError, ["device"]),
        (lambda ew, x: ew.astype(x + 1j, np.float64), TypeError, ["imaginary", "real(x)"]),
    ],
)
def test_argument_errors_name_the_argument(rt, ew, call, exc, needles):
    x = gpupart.asarray(np.arange(12.0).reshape(3, 4), grid=(2, 2))
    with pytest.raises(exc) as info:
        call(ew, x)
    for needle in needles:
        assert needle in str(info.value)


def test_numpy_protocols_route_or_refuse(rt, ew):
    a = np.arange(12.0).reshape(3, 4) - 5
    x = gpupart.asarray(a, grid=(2, 2))
    y = gpupart.asarray(a, tiles=(1, 4))
    assert isinstance(np.add(x, y), gpupart.DistArray)
    np.testing.assert_allclose(np.exp(x).to_numpy(), np.exp(a))
    np.testing.assert_array_equal(np.power(x, 2, out=None).to_numpy(), a**2)
    np.testing.assert_array_equal((np.ones(4) + x).to_numpy(), 1 + a)
    np.testing.assert_array_equal(np.clip(x, a_min=-1, a_max=2).to_numpy(), np.clip(a, -1, 2))
    np.testing.assert_array_equal(np.clip(x, None, 2).to_numpy(), np.clip(a, None, 2))
    np.testing.assert_array_equal(np.where(x > 0, x, 0.5).to_numpy(), np.where(a > 0, a, 0.5))
    np.testing.assert_array_equal(np.round(x, 0).to_numpy(), np.round(a))
    np.testing.assert_array_equal(np.astype(x, np.int16).to_numpy(), a.astype(np.int16))
    assert np.shape(x) == (3, 4) and np.ndim(x) == 2 and np.size(x) == 12 and np.size(x, 1) == 4
    with pytest.raises(TypeError, match="decimals=2"):
        np.round(x, 2)
    with pytest.raises(TypeError, match="where"):
        np.add(x, 1, where=a > 0)
    with pytest.raises(TypeError):
        np.add.reduce(x)  # a ufunc method: NotImplemented, NumPy's TypeError
    with pytest.raises(TypeError):
        np.fmod(x, 2)  # a ufunc the namespace lacks
    with pytest.raises(TypeError, match=r"numpy\.fft\.fft .*to_numpy\(\)"):
        np.fft.fft(x)
    with pytest.raises(TypeError, match=r"numpy\.isclose .*to_numpy\(\)"):
        np.isclose(x, y)


def test_layout_rules_in_one_process(rt, ew):
    a = np.arange(20.0).reshape(4, 5)
    x = gpupart.asarray(a, grid=(2, 2))
    row = gpupart.asarray(a[:1], grid=(1, 2))
    r = ew.add(row, x)  # the left operand is broadcast: the result is laid out like x
    assert r.tiling == x.tiling and np.array_equal(r.owners, x.owners)
    np.testing.assert_array_equal(r.to_numpy(), a[:1] + a)
    col = gpupart.asarray(a[:, :1], grid=(2, 1))
    s = ew.multiply(col, a[:1])  # (4, 1) x (1, 5): col stretched along its size-1 axis
    assert s.shape == (4, 5) and s.tiling.grid == (2, 1)
    np.testing.assert_array_equal(s.to_numpy(), a[:, :1] * a[:1])
    z = ew.exp(gpupart.asarray(np.float32(0.5)))
    assert z.shape == () and z.dtype == np.float32
    np.testing.assert_allclose(z.to_numpy(), np.exp(np.float32(0.5)))


def test_numpy_protocols_in_a_fresh_process():
    # nothing imports the namespace: DistArray's own __array_ufunc__ finds the functions
    code = (
        "import json, sys; import numpy as np; import gpupart\n"
        "x = gpupart.asarray(np.arange(3.0))\n"
        "assert 'gpupart.containers.elementwise' not in sys.modules\n"
        "e, w = np.exp(x).to_numpy(), np.where(x > 0, x, -1).to_numpy()\n"
        "print(json.dumps([e.tolist(), w.tolist()]))\n"
    )
    proc = subprocess.run(
        [PY, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    exp, where = json.loads(proc.stdout)
    np.testing.assert_allclose(exp, np.exp(np.arange(3.0)))
    assert where == [-1.0, 1.0, 2.0]
