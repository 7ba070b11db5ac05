"""Distributed groupby, drop_duplicates and value_counts at 1, 2 and 3 ranks, against pandas.

The rank script ``frame_scripts/groupby_cases.py`` runs every case in one job per rank count
(every aggregation of every dtype, string/float/datetime/nullable/bool keys with nulls both
ways of ``dropna``, one key and ten thousand, Zipf-skewed keys, keys on one rank only, empty
frames and partitions, a rank with no rows, first/last in the global row order, transforms,
``sort=True``, errors on every rank) and counts the runtime's messaging calls (groupby-agg:
one exchange). Each case is a test here that checks every rank reported it passed. The three
jobs start at once (they spend most of their time in pandas, and a job waits on its peers).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CaseJobs, records

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "frame_scripts" / "groupby_cases.py"
SIZES = [1, 2, 3]
#: One job's limit: the three run together on a loaded 2-core machine.
JOB_TIMEOUT = 240.0


JOBS = CaseJobs(SCRIPT, tuple(SIZES), timeout=JOB_TIMEOUT)
CASES = JOBS.names


def test_the_script_has_cases():
    assert len(CASES) >= 10, CASES


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    JOBS.check_job(n)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    JOBS.check_case(n, name)


def test_skewed_keys_move_partial_states_not_rows():
    """The Zipf case: each rank received at most one partial row per key and sender."""
    _, out, _ = JOBS.result(3)
    got = [r for r in records(out, "case") if r["name"].startswith("zipf")]
    assert len(got) == 3, out[-2000:]
    for r in got:
        assert r["partial_rows_received"] < r["rows_held"] / 10, r
