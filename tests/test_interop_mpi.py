"""mpi4py programs and gpupart in one job (``gpupart.interop.mpi``), under ``mpiexec -n 2, 3``.

The rank script ``interop_scripts/mpi_cases.py`` imports mpi4py first, checks that gpupart's
ranks, peers and tile locations are MPI's, hands each rank's array to gpupart with
``from_local`` and takes it back with ``local_array`` as the same object (and frames with
``local_frame``), compares gpupart's results with MPI's collectives on the same pieces, and
checks that a communicator numbering the ranks differently is refused on every rank.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mpi_jobs import MpiCaseJobs

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]  # real jobs under mpiexec or gpupart run

SIZES = [2, 3]
JOBS = MpiCaseJobs(Path(__file__).parent / "interop_scripts" / "mpi_cases.py", tuple(SIZES))
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
