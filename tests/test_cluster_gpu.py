"""Real-GPU runtime tests: CuPy tiles with streams and events, fetched and exchanged between ranks.

Both ranks may share one GPU (the runtime binds GPU 0 when only one is visible).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PY, run_ranks

SCRIPTS = Path(__file__).parent / "gpu_scripts"


@pytest.mark.gpu
@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2])
def test_cupy_tiles_fetched_between_ranks(cuda_gpus: int, nprocs: int) -> None:
    rc, out, err = run_ranks(
        nprocs, [PY, str(SCRIPTS / "fetch_cupy.py")], env={"GPUPART_DEVICE": "cuda"}, timeout=300
    )
    assert rc == 0, out + err
    assert out.count("GPU OK") == nprocs, out


@pytest.mark.gpu
@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2])
def test_dist_arrays_with_cupy_tiles(cuda_gpus: int, nprocs: int) -> None:
    rc, out, err = run_ranks(
        nprocs, [PY, str(SCRIPTS / "arrays_cupy.py")], env={"GPUPART_DEVICE": "cuda"}, timeout=300
    )
    assert rc == 0, out + err
    assert out.count("ARRAYS GPU OK") == nprocs, out


@pytest.mark.gpu
@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2])
def test_dist_frames_with_cudf_partitions(cuda_gpus: int, nprocs: int) -> None:
    pytest.importorskip("cudf", reason="needs cuDF (pip install gpupart[cuda12] or [cuda13])")
    rc, out, err = run_ranks(
        nprocs, [PY, str(SCRIPTS / "frames_cudf.py")], env={"GPUPART_DEVICE": "cuda"}, timeout=600
    )
    assert rc == 0, out + err
    assert out.count("FRAMES GPU OK") == nprocs, out


@pytest.mark.gpu
@pytest.mark.multiprocess
@pytest.mark.parametrize("nprocs", [1, 2])
def test_ml_estimators_with_cupy_tiles(cuda_gpus: int, nprocs: int) -> None:
    pytest.importorskip("sklearn", reason="needs scikit-learn (pip install gpupart[ml])")
    rc, out, err = run_ranks(
        nprocs, [PY, str(SCRIPTS / "ml_cupy.py")], env={"GPUPART_DEVICE": "cuda"}, timeout=600
    )
    assert rc == 0, out + err
    assert out.count("ML GPU OK") == nprocs, out
