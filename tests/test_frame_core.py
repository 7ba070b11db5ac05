"""DistFrame/DistSeries core and ``frame_ops`` at 1, 2 and 3 ranks, against pandas.

The rank script ``frame_scripts/core_cases.py`` runs every case in one job per rank count
(creation in several layouts with empty partitions and a rank with no rows, moving data
out, filters, assignment, operators, astype/rename/drop/dropna/fillna/isna, series
elementwise operations, reductions, nunique/unique, ``.str`` and ``.dt``; every dtype a
frame carries: nulls, strings, nullable ints, datetimes, categoricals; errors on every
rank); each case is a test here that checks every rank reported it passed. The three jobs
run side by side (they mostly wait on each other's messages).
"""

from __future__ import annotations

import ast
import functools
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import PY, records, run_ranks

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "frame_scripts" / "core_cases.py"
SIZES = [1, 2, 3]
#: One job's limit: three side by side on a loaded 2-core machine, under pytest's 300 s.
JOB_TIMEOUT = 240.0


def case_names() -> list[str]:
    """The script's cases, in order: its functions decorated with ``@case``."""
    tree = ast.parse(SCRIPT.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "case" for d in node.decorator_list)
    ]


CASES = case_names()


@functools.cache
def _jobs() -> dict[int, Future]:
    """Start the script at every rank count at once (first call only)."""
    pool = ThreadPoolExecutor(len(SIZES))
    jobs = {n: pool.submit(run_ranks, n, [PY, str(SCRIPT)], timeout=JOB_TIMEOUT) for n in SIZES}
    pool.shutdown(wait=False)
    return jobs


def job(n: int) -> tuple[int, str, str]:
    """``(rc, stdout, stderr)`` of the script at ``n`` ranks (run once per session)."""
    return _jobs()[n].result()


def test_the_script_has_cases():
    assert len(CASES) >= 20, CASES


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    rc, out, err = job(n)
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
    assert "Traceback" not in err, err
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    assert all(d["size"] == n for d in done)
    for plan in records(out, "plan"):
        assert plan["cases"] == CASES


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    _, out, err = job(n)
    passed = [r for r in records(out, "case") if r["name"] == name]
    ranks = sorted(r["rank"] for r in passed)
    assert ranks == list(range(n)), (
        f"{name} passed on ranks {ranks} of {n}\n--- stderr\n{err[-6000:]}"
    )
    assert all(r.get("line_rank", r["rank"]) == r["rank"] for r in passed)


def test_every_frame_ops_binding_has_a_function():
    """Each method ``dframe`` binds to ``frame_ops`` names a function defined there."""
    import inspect

    from gpupart.containers import dframe, frame_ops

    bound = []
    for cls in (dframe.DistFrame, dframe.DistSeries):
        for attr, value in vars(cls).items():
            fn = value.fget if isinstance(value, property) else value
            free = getattr(fn, "__closure__", None) or ()
            cells = [c.cell_contents for c in free]
            if "frame_ops" in cells:
                bound.append((cls.__name__, attr, fn.__name__))
    assert len(bound) >= 25, bound
    missing = [b for b in bound if not inspect.isfunction(getattr(frame_ops, b[2], None))]
    assert not missing, missing
    assert {name for _, _, name in bound} <= set(frame_ops.__all__)
