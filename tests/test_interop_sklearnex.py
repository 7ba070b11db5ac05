"""oneDAL's distributed algorithms fed from gpupart's tiles (``gpupart.interop.sklearnex``).

``sklearnex.spmd`` needs a SYCL GPU; on CPUs oneDAL's distributed mode is daal4py's. The
rank script ``interop_scripts/sklearnex_cases.py`` runs under ``mpiexec`` at 2 and 3
ranks: daal4py's processes are the job's ranks; each rank's rows are its tile, a rank
without rows gets some (oneDAL would hang the others); linear and ridge regression,
k-means, moments and covariance computed from the ranks' rows equal scikit-learn's or
NumPy's on all the data; and what ``sklearnex.spmd`` does on this install is recorded.
Outside ``mpiexec`` daal4py sees one process per rank: refused on every rank.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PY, records, run_ranks
from mpi_jobs import MpiCaseJobs

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]  # real jobs under mpiexec or gpupart run

pytest.importorskip("daal4py", reason="scikit-learn-intelex is not installed (gpupart[interop])")
pytest.importorskip("mpi4py", reason="mpi4py is not installed (gpupart[interop])")

SIZES = [2, 3]
JOBS = MpiCaseJobs(Path(__file__).parent / "interop_scripts" / "sklearnex_cases.py", (2, 3))
CASES = JOBS.names

_OUTSIDE_MPIEXEC = """
import json, gpupart
from gpupart.interop import sklearnex
rt = gpupart.init()
try:
    sklearnex.start_daal4py()
    row = {"rank": rt.rank, "error": None}
except gpupart.InteropError as exc:
    row = {"rank": rt.rank, "error": str(exc)}
print("@refused " + json.dumps(row), flush=True)
rt.close()
"""


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
def test_daal4py_outside_mpiexec_is_refused_on_every_rank():
    rc, out, err = run_ranks(2, [PY, "-c", _OUTSIDE_MPIEXEC])
    assert rc == 0, err[-4000:]
    rows = sorted(records(out, "refused"), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1], out
    for row in rows:
        assert "gpupart rank 1 is daal4py process 0 of 1" in row["error"], row
