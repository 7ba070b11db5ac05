"""The README's main job runs end to end (small dataset) at one and two ranks."""

from __future__ import annotations

import pytest
from conftest import PY, run_ranks


@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2])
def test_demo_job_runs(nprocs: int) -> None:
    rc, out, err = run_ranks(
        nprocs, [PY, "-m", "gpupart.demo", "--rows", "20000", "--files", "2"], timeout=180
    )
    assert rc == 0, out + err
    assert "tiles verified" in out
    assert "yes" in out
    assert "__partitioned__" in out
