"""Heat and gpupart in one MPI job (``gpupart.interop.heat``), under ``mpiexec -n 2, 3``.

Needs Heat (and so torch) in the interpreter running the tests, which CI's venv does not
carry (docs/interop.md says why); ``bash tests/heat_venv.sh`` makes a venv that has them
and takes gpupart from the main one, then::

    /tmp/heatvenv/bin/python -m pytest tests/test_interop_heat.py

The rank script ``interop_scripts/heat_cases.py`` checks that the tiles are Heat's local
tensors' memory both ways (NumPy's data pointer against torch's ``data_ptr``), values
against NumPy, writes seen through the other side, repartitioning and refusals.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mpi_jobs import MpiCaseJobs

try:
    pytest.importorskip(
        "heat",
        reason="Heat is not installed here: CI does not carry torch; run these tests with"
        " the venv of tests/heat_venv.sh (docs/interop.md)",
    )
except (OSError, RuntimeError) as exc:  # a torch/torchvision pair that does not load
    pytest.skip(f"Heat is installed but does not import: {exc}", allow_module_level=True)

SIZES = [2, 3]
JOBS = MpiCaseJobs(Path(__file__).parent / "interop_scripts" / "heat_cases.py", tuple(SIZES))
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
