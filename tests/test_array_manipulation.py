"""DistArray manipulation, indexing and sorting at 1, 2 and 3 ranks, against NumPy.

The rank script ``array_scripts/manipulation.py`` runs every case in one job per rank count
(uneven tilings, empty tiles, 0-d to 3-d, several dtypes, errors); each case is a test here
that checks every rank reported it passed. The script checks values, layouts, that the
operations documented to move no data send no message, and that views are views.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CaseJobs

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "array_scripts" / "manipulation.py"
SIZES = [1, 2, 3]


JOBS = CaseJobs(SCRIPT, tuple(SIZES))
CASES = JOBS.names


def test_the_script_has_cases():
    assert len(CASES) >= 15, CASES


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    JOBS.check_job(n)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    JOBS.check_case(n, name)
