"""tril/triu, meshgrid, nonzero and from_dlpack (``containers/structure.py``) at 1, 2, 3 ranks.

The rank script ``array_scripts/structure_cases.py`` runs every case in one job per rank
count against NumPy: uneven grids cut on every axis, empty tiles, replicated arrays, k
positive/negative/beyond the shape, batched triangles, meshgrid of 1-3 inputs tiled
differently in both indexings, nonzero of 1-d to 3-d arrays of several dtypes with none or
all nonzero, DLPack copies, and errors every rank raises. It checks that tril/triu send no
message, that meshgrid fetches once per input and that nonzero of an array cut only along
its first axis fetches nothing. Each case is a test here that checks every rank passed it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CaseJobs

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "array_scripts" / "structure_cases.py"
SIZES = [1, 2, 3]


JOBS = CaseJobs(SCRIPT, tuple(SIZES))
CASES = JOBS.names


def test_the_script_has_cases():
    assert len(CASES) >= 12, CASES


def test_the_namespace_provides_them():
    from gpupart.containers import namespace, structure

    for name in ("tril", "triu", "meshgrid", "nonzero", "from_dlpack"):
        assert name in namespace.__all__
        assert getattr(namespace, name).__wrapped__ is getattr(structure, name)


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    JOBS.check_job(n)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    JOBS.check_case(n, name)
