"""Distributed sort/argsort, unique_* and searchsorted at 1, 2 and 3 ranks, against NumPy.

The rank script ``array_scripts/sorting_cases.py`` runs every case in one job per rank count
(duplicates, NaNs, signed zeros, uneven, empty and replicated tiles, a rank with no data,
sorted, reversed and all-equal input, bool/int8/uint64/float32/float64, errors on every
rank); each case is a test here that checks every rank reported it passed. The script also
counts the runtime's exchanges: a sample sort moves its data in exactly one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CaseJobs

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "array_scripts" / "sorting_cases.py"
SIZES = [1, 2, 3]


JOBS = CaseJobs(SCRIPT, tuple(SIZES))
CASES = JOBS.names


def test_the_script_has_cases():
    assert len(CASES) >= 7, CASES


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    JOBS.check_job(n)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    JOBS.check_case(n, name)


def test_namespace_exports_the_sorting_functions():
    from gpupart.containers import indexing, namespace

    names = {"argsort", "searchsorted", "sort", "unique_all", "unique_counts"}
    names |= {"unique_inverse", "unique_values"}
    assert names <= set(namespace.__all__)
    assert not {"sort", "argsort"} & set(indexing.__all__)  # one home: containers.sorting
