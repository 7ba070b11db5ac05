"""Reductions and linalg of ``gpupart.array_api`` (``containers/reductions.py``, ``linalg.py``).

The rank script ``array_scripts/reduction_cases.py`` compares every reduction, argmin/argmax,
the cumulative sums and products and the linalg patterns with NumPy on the same data: 0-d
to 3-d, uneven and empty tiles, replicated arrays, every dtype, NaNs, axes None / each /
negative / tuples, keepdims, and the messages each path needs (none for a reduction over
uncut axes or ``X @ w``; one allreduce and no fetch for ``X.T @ X``). It runs as one job at
1, 2 and 3 ranks. The in-process tests below (a world of one) cover signatures, argument
errors, NumPy's protocols and the layouts of results.
"""

from __future__ import annotations

import inspect
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

SCRIPT = Path(__file__).parent / "array_scripts" / "reduction_cases.py"
_LAUNCH_PREFIXES = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_")

#: Sections of the rank script and at least how many cases each must report.
SECTIONS = {
    "reductions_every_layout": 550,
    "reductions_every_dtype": 240,
    "reductions_with_dtype_and_correction": 42,
    "reductions_with_nans": 40,
    "var_is_stable": 1,
    "var_correction_beyond_count": 1,
    "argmin_argmax": 280,
    "argmin_ties_across_tiles": 24,
    "cumulative": 270,
    "differences": 100,
    "scalars": 1,
    "errors": 1,
    "linalg_patterns": 240,
    "linalg_batched_and_replicated": 9,
    "linalg_unsupported": 1,
}


# -- the job at 1, 2, 3 ranks: one job per rank count -----------------------------------------


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda n: f"{n}ranks")
def job(request: pytest.FixtureRequest) -> tuple[int, str, str, int]:
    n = request.param
    rc, out, err = run_ranks(n, [PY, str(SCRIPT)], timeout=400.0)
    return n, out, err, rc


@pytest.mark.multiprocess
@pytest.mark.slow
def test_every_case_matches_numpy(job):
    n, out, err, rc = job
    failed = [c for c in records(out, "case") if not c["ok"]]
    assert not failed, "\n".join(
        f"[{c.get('line_rank')}] {c['name']}: {c['error']}" for c in failed[:20]
    )
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-5000:]}\n--- stderr\n{err[-5000:]}"
    assert "Traceback" not in err, err[-5000:]
    done = sorted(records(out, "done"), key=lambda d: d["rank"])
    assert [d["rank"] for d in done] == list(range(n)), out[-3000:]
    assert all(d["size"] == n and d["failed"] == 0 for d in done)
    assert len({d["ok"] for d in done}) == 1, done  # every rank ran every case


@pytest.mark.multiprocess
@pytest.mark.slow
def test_every_section_ran_its_cases_on_every_rank(job):
    n, out, _, _ = job
    for rank in range(n):
        names = [c["name"] for c in records(out, "case") if c.get("line_rank", 0) == rank]
        assert len(names) == len(set(names)), "case names are unique"
        sections = {s["name"]: s for s in records(out, "section") if s["rank"] == rank}
        assert set(sections) == set(SECTIONS), sorted(sections)
        for name, least in SECTIONS.items():
            assert sections[name]["cases"] >= least, (rank, name, sections[name])


@pytest.mark.multiprocess
@pytest.mark.slow
def test_the_paths_use_the_messages_they_promise(job):
    """Reductions over cut axes fetch partials (no gather to one rank); linalg allreduces."""
    _, out, _, _ = job
    for s in records(out, "section"):
        if s["name"] == "reductions_every_layout":
            assert s["fetch_regions"] > 0 and s["allreduce"] > 0
        if s["name"] == "linalg_patterns":
            assert s["allreduce"] > 0
    x_t_x = [c for c in records(out, "case") if c["name"].startswith("X.T @ X ")]
    assert x_t_x, "X.T @ X (x.T from permute_dims) ran"


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
def mods() -> Any:
    from gpupart.containers import linalg, reductions

    return reductions, linalg


REDUCTIONS = {  # name -> keyword-only parameters (2024.12)
    "sum": ["axis", "dtype", "keepdims"],
    "prod": ["axis", "dtype", "keepdims"],
    "min": ["axis", "keepdims"],
    "max": ["axis", "keepdims"],
    "mean": ["axis", "keepdims"],
    "var": ["axis", "correction", "keepdims"],
    "std": ["axis", "correction", "keepdims"],
    "any": ["axis", "keepdims"],
    "all": ["axis", "keepdims"],
    "argmin": ["axis", "keepdims"],
    "argmax": ["axis", "keepdims"],
    "count_nonzero": ["axis", "keepdims"],
    "cumulative_sum": ["axis", "dtype", "include_initial"],
    "cumulative_prod": ["axis", "dtype", "include_initial"],
    "diff": ["axis", "n", "prepend", "append"],
}


def test_signatures_follow_the_standard(mods):
    reductions, linalg = mods
    assert sorted(reductions.__all__) == sorted(REDUCTIONS)
    assert sorted(linalg.__all__) == ["matmul", "matrix_transpose", "tensordot", "vecdot"]
    for name, keywords in REDUCTIONS.items():
        fn = getattr(reductions, name)
        assert fn.__doc__, name
        params = list(inspect.signature(fn).parameters.values())
        assert params[0].name == "x" and params[0].kind is inspect.Parameter.POSITIONAL_ONLY
        assert [p.name for p in params[1:]] == keywords, name
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), name
    assert list(inspect.signature(linalg.tensordot).parameters) == ["x1", "x2", "axes"]
    assert list(inspect.signature(linalg.vecdot).parameters) == ["x1", "x2", "axis"]


def test_the_namespace_and_numpy_reach_them(rt, mods):
    reductions, linalg = mods
    ns = gpupart.array_api
    for name in REDUCTIONS:
        assert getattr(ns, name).__wrapped__ is getattr(reductions, name)  # on the operand stream
    for name in linalg.__all__:
        assert getattr(ns, name).__wrapped__ is getattr(linalg, name)
    a = np.arange(12.0).reshape(4, 3) - 4
    x = gpupart.asarray(a, grid=(2, 1))
    w = np.array([1.0, -2.0, 0.5])
    assert float(np.sum(x)) == a.sum()
    np.testing.assert_allclose(np.mean(x, axis=0).to_numpy(), a.mean(axis=0))
    np.testing.assert_allclose(np.std(x, ddof=1).to_numpy(), a.std(ddof=1))
    assert int(np.argmax(x)) == int(np.argmax(a))
    np.testing.assert_array_equal(np.cumsum(x, axis=0).to_numpy(), np.cumsum(a, axis=0))
    np.testing.assert_allclose(np.matmul(x, w).to_numpy(), a @ w)
    np.testing.assert_allclose((np.ones((2, 4)) @ x).to_numpy(), np.ones((2, 4)) @ a)
    np.testing.assert_allclose((x.mT @ x).to_numpy(), a.T @ a)
    np.testing.assert_allclose((x.T @ x).to_numpy(), a.T @ a)


def test_layouts_of_results(rt, mods):
    reductions, linalg = mods
    a = np.arange(24.0).reshape(4, 6)
    x = gpupart.asarray(a, grid=(2, 3))
    full = reductions.sum(x)
    assert full.shape == () and full.tiling.num_partitions == 1
    assert (np.asarray(full.owners) == -1).all(), "a full reduction is every rank's"
    rows = reductions.max(gpupart.asarray(a, grid=(2, 1)), axis=1)  # an uncut axis: local
    assert [list(b) for b in rows.tiling.boundaries] == [[0, 2, 4]]
    cols = reductions.min(x, axis=0, keepdims=True)  # a cut axis, kept axis cut: owners
    assert cols.shape == (1, 6) and cols.tiling.grid == (1, 3)
    np.testing.assert_array_equal(cols.to_numpy(), a.min(axis=0, keepdims=True))
    c = reductions.cumulative_sum(x, axis=1, include_initial=True)
    assert list(c.tiling.boundaries[1]) == [0, 3, 5, 7]
    np.testing.assert_array_equal(c.to_numpy(), np.cumulative_sum(a, axis=1, include_initial=True))
    xw = gpupart.asarray(a, grid=(2, 1)) @ np.ones((6, 2))
    assert [list(b) for b in xw.tiling.boundaries] == [[0, 2, 4], [0, 2]]
    t = linalg.matrix_transpose(x)
    assert t.shape == (6, 4) and t.tiling.grid == (3, 2)
    assert all(tile.base is not None for tile in t.local_tiles.values()), "views, no copies"


@pytest.mark.parametrize(
    ("call", "exc", "needles"),
    [
        (lambda r, la, x: r.sum(x, axis=2), np.exceptions.AxisError, ["axis", "[-2, 1]", "2"]),
        (lambda r, la, x: r.mean(x, axis=(1, -1)), ValueError, ["axis", "distinct"]),
        (lambda r, la, x: r.prod(x, axis=[0]), TypeError, ["axis", "tuple of ints"]),
        (lambda r, la, x: r.max(x, keepdims="no"), TypeError, ["keepdims"]),
        (lambda r, la, x: r.sum(np.ones(3)), TypeError, ["x", "DistArray", "ndarray"]),
        (lambda r, la, x: r.sum(x, dtype="nope"), TypeError, ["dtype"]),
        (lambda r, la, x: r.var(x, correction="1"), TypeError, ["correction"]),
        (lambda r, la, x: r.argmax(x, axis=(0,)), TypeError, ["axis", "int or None"]),
        (lambda r, la, x: r.min(gpupart.zeros((0, 2)), axis=0), ValueError, ["min", "(0, 2)"]),
        (lambda r, la, x: r.cumulative_prod(x), ValueError, ["axis", "2-d"]),
        (lambda r, la, x: la.matmul(x, np.ones((2, 2))), ValueError, ["x2", "4 rows", "(3, 4)"]),
        (lambda r, la, x: la.tensordot(x, x, axes=-1), ValueError, ["axes", "[0, 2]"]),
        (lambda r, la, x: la.tensordot(x, x, axes="ab"), TypeError, ["axes"]),
        (lambda r, la, x: la.vecdot(x, np.ones((1, 4)), axis=0), ValueError, ["axis", "equal"]),
        (lambda r, la, x: la.matrix_transpose(r.sum(x, axis=0)), ValueError, ["2 dimensions"]),
        (lambda r, la, x: la.matmul(x, la.matrix_transpose(x)), NotImplementedError, ["to_numpy"]),
    ],
)
def test_argument_errors_name_the_argument(rt, mods, call, exc, needles):
    reductions, linalg = mods
    x = gpupart.asarray(np.arange(12.0).reshape(3, 4), grid=(2, 2))
    with pytest.raises(exc) as info:
        call(reductions, linalg, x)
    for needle in needles:
        assert needle in str(info.value)


def test_python_scalars_need_one_value(rt, mods):
    reductions, _ = mods
    x = gpupart.asarray(np.arange(6).reshape(2, 3))
    assert int(reductions.sum(x)) == 15 and float(reductions.mean(x)) == 2.5
    assert bool(reductions.all(x >= 0)) and not bool(reductions.any(x > 9))
    assert [0, 1, 2][reductions.argmin(x)] == 0  # __index__
    with pytest.raises(TypeError, match=r"float\(\): expected a 0-d array"):
        float(x)
    with pytest.raises(ValueError, match=r"bool\(\): expected a 0-d array"):
        bool(x)


FRESH = """
import numpy as np, gpupart
x = gpupart.asarray(np.arange(6.0).reshape(3, 2))
g = x.T @ x  # nothing has imported gpupart.array_api (nor linalg/reductions) yet
assert np.array_equal(g.to_numpy(), np.arange(6.0).reshape(3, 2).T @ np.arange(6.0).reshape(3, 2))
print("ok")
"""


def test_operators_work_in_a_fresh_process():
    proc = subprocess.run(
        [PY, "-c", FRESH], capture_output=True, text=True, timeout=120, env=clean_env()
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
