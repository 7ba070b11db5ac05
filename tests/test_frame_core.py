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

from pathlib import Path

import pytest
from conftest import CaseJobs

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "frame_scripts" / "core_cases.py"
SIZES = [1, 2, 3]
#: One job's limit: three side by side on a loaded 2-core machine, under pytest's 300 s.
JOB_TIMEOUT = 240.0


JOBS = CaseJobs(SCRIPT, tuple(SIZES), timeout=JOB_TIMEOUT)
CASES = JOBS.names


def test_the_script_has_cases():
    assert len(CASES) >= 20, CASES


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    JOBS.check_job(n)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    JOBS.check_case(n, name)


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
