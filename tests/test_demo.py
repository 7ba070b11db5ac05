"""The README's main job runs end to end (small dataset) at one and two ranks."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2])
def test_demo_job_runs(nprocs: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "gpupart",
        "run",
        "-n",
        str(nprocs),
        "--",
        sys.executable,
        "-m",
        "gpupart.demo",
        "--rows",
        "20000",
        "--files",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tiles verified" in proc.stdout
    assert "yes" in proc.stdout
    assert "__partitioned__" in proc.stdout
