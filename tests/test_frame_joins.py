"""``DistFrame.merge`` and ``sort_values`` (containers/joins.py) at 1, 2 and 3 ranks, vs pandas.

The rank script ``frame_scripts/join_cases.py`` runs every case in one job per rank count:
merges for every ``how``, ``on``/``left_on``/``right_on``, suffixes, multi-column, string,
datetime and nullable keys, null keys (they match, as in pandas), keys absent on some ranks,
empty sides, a rank with no rows, key dtypes that differ (int32 with int64 after a common
cast; int with a string refused on every rank), skewed keys (refused with
``JoinSkewError``, or salted), the broadcast path forced and chosen by size; sorts by one and
several columns, ascending and descending, ``na_position``, stable among ties, strings,
datetimes, nullable and categorical columns, duplicate-heavy keys. Merges are compared with
pandas after sorting by every column (a distributed merge does not give pandas' row order);
sorts are compared in order. Each case is a test here that checks every rank reported it.
The three jobs run side by side (they mostly wait on each other's messages).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CaseJobs

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "frame_scripts" / "join_cases.py"
SIZES = [1, 2, 3]


JOBS = CaseJobs(SCRIPT, tuple(SIZES))
CASES = JOBS.names


def test_the_script_has_cases():
    assert len(CASES) >= 15, CASES
    assert any(name.startswith("merge_") for name in CASES)
    assert any(name.startswith("sort_") for name in CASES)


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    JOBS.check_job(n)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    JOBS.check_case(n, name)
