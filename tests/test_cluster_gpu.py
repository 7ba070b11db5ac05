"""Real-GPU runtime tests: CuPy tiles with streams and events, fetched between ranks.

Both ranks may share one GPU (the runtime binds GPU 0 when only one is visible).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpupart import backend

SCRIPTS = Path(__file__).parent / "gpu_scripts"


@pytest.fixture
def cuda_gpus() -> int:
    count = backend.probe().count
    if count == 0:
        pytest.skip("needs a CUDA GPU with CuPy")
    return count


@pytest.mark.gpu
@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2])
def test_cupy_tiles_fetched_between_ranks(cuda_gpus: int, nprocs: int) -> None:
    env = dict(os.environ, GPUPART_DEVICE="cuda")
    cmd = [
        sys.executable,
        "-m",
        "gpupart",
        "run",
        "-n",
        str(nprocs),
        "--",
        sys.executable,
        str(SCRIPTS / "fetch_cupy.py"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("GPU OK") == nprocs, proc.stdout
