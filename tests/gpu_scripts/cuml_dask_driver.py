"""Start a dask-cuda cluster, run ``cuml_dask_rank.py`` as a gpupart job of N ranks beside it.

``python cuml_dask_driver.py N``: one dask-cuda worker per visible GPU; the job's output is
passed through and its return code is this script's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dask_cuda import LocalCUDACluster
from distributed import Client

RANK = Path(__file__).resolve().parent / "cuml_dask_rank.py"

if __name__ == "__main__":
    with LocalCUDACluster() as cluster, Client(cluster):
        rank = [sys.executable, str(RANK), cluster.scheduler_address]
        job = subprocess.run(
            [sys.executable, "-m", "gpupart", "run", "-n", sys.argv[1], "--", *rank],
            capture_output=True,
            text=True,
            timeout=400,
            stdin=subprocess.DEVNULL,
        )
    sys.stdout.write(job.stdout)
    sys.stderr.write(job.stderr)
    sys.exit(job.returncode)
