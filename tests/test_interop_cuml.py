"""gpupart.interop.cuml: a rank's CuPy rows into single-GPU cuML by reference; cuml.dask.

The GPU tests (``gpu``) run the real cuML at 1 and 2 ranks: ``gpu_scripts/cuml_local.py``
checks that the tile cuML reads has the device pointer of the array the rank put (and that
cuML's own input conversion keeps it) and compares ``KMeans`` and ``LinearRegression`` with
scikit-learn; ``gpu_scripts/cuml_dask_driver.py`` fits ``cuml.dask`` on a dask-cuda cluster
from a DistArray handed over by ``gpupart.interop.dask.to_dask``. They skip without a GPU or
without cuML (dask-cuda for the second). On the CPU: the helpers refuse host tiles, naming
what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import PY, run_ranks

import gpupart
from gpupart.interop import cuml as gcuml

SCRIPTS = Path(__file__).parent / "gpu_scripts"


@pytest.mark.gpu
@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2])
def test_local_tiles_into_single_gpu_cuml_without_copy(cuda_gpus: int, nprocs: int) -> None:
    pytest.importorskip("cuml", reason="needs cuML (pip install cuml-cu12)")
    rc, out, err = run_ranks(
        nprocs, [PY, str(SCRIPTS / "cuml_local.py")], env={"GPUPART_DEVICE": "cuda"}, timeout=300
    )
    assert rc == 0, out + err
    assert out.count("CUML GPU OK") == nprocs, out


@pytest.mark.gpu
@pytest.mark.multiprocess
def test_cuml_dask_from_a_dist_array(cuda_gpus: int) -> None:
    pytest.importorskip("cuml", reason="needs cuML (pip install cuml-cu12[dask])")
    pytest.importorskip("dask_cuda", reason="needs dask-cuda (pip install cuml-cu12[dask])")
    import subprocess
    import sys

    from conftest import clean_env

    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "cuml_dask_driver.py"), "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env({"GPUPART_DEVICE": "cuda"}),
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("CUML DASK OK") == 2, run.stdout


def test_host_tiles_are_refused_naming_the_device(one_rank) -> None:
    X = gpupart.from_local(np.ones((4, 3)))
    with pytest.raises(gpupart.InteropError, match=r"expected x's tiles in GPU memory.*numpy"):
        gcuml.local_array(X)
    with pytest.raises(gpupart.InteropError, match=r"expected X's tiles in GPU memory"):
        gcuml.local_rows(X, gpupart.from_local(np.ones(4)))
