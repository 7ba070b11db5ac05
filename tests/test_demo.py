"""The README's main job runs end to end (small dataset) at one, two and three ranks."""

from __future__ import annotations

import pytest
from conftest import PY, run_ranks


@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2, 3])
def test_demo_job_runs(nprocs: int) -> None:
    rc, out, err = run_ranks(
        nprocs, [PY, "-m", "gpupart.demo", "--rows", "20000", "--files", "2"], timeout=180
    )
    assert rc == 0, out + err
    verified = out.split("tiles and counts verified")
    assert len(verified) == 2 and verified[1].split("\n")[0].rstrip(" │").endswith("yes")
    assert "20,000 rows" in out  # read_parquet read every row
    assert "groupby(segment)" in out
    assert "__partitioned__" in out
