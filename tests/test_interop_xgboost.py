"""XGBoost trained on gpupart's tiles (``gpupart.interop.xgboost``), one worker per rank.

The rank script ``interop_scripts/xgboost_cases.py`` runs under ``gpupart run`` at 2 and 3
ranks and under ``mpiexec`` at 2: XGBoost's workers are the job's ranks; each rank's rows
of X are its tile; on data whose every value is a cut the trees split as one process's
``xgboost.train`` on all the data (leaves to float32 rounding: histograms are summed in
another order), with DMatrix and QuantileDMatrix, frames, weights, evaluation sets and X
and y tiled differently; with more values than bins the fit is as good; the Booster is the
same on every rank; errors are raised on every rank and the job trains again after them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CaseJobs
from mpi_jobs import MpiCaseJobs

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]  # real jobs under mpiexec or gpupart run

pytest.importorskip("xgboost", reason="xgboost is not installed (pip install 'gpupart[interop]')")

SCRIPT = Path(__file__).parent / "interop_scripts" / "xgboost_cases.py"
SIZES = [2, 3]
JOBS = CaseJobs(SCRIPT, tuple(SIZES))
MPI_JOBS = MpiCaseJobs(SCRIPT, (2,))
CASES = JOBS.names


@pytest.mark.multiprocess
def test_the_script_has_cases():
    assert len(CASES) >= 6, CASES


@pytest.mark.multiprocess
@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    JOBS.check_job(n)


@pytest.mark.multiprocess
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    JOBS.check_case(n, name)


@pytest.mark.multiprocess
def test_under_mpiexec():
    MPI_JOBS.check_job(2)
    for name in CASES:
        MPI_JOBS.check_case(2, name)
