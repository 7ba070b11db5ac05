"""scikit-learn's estimator checks for LinearRegression, Ridge and StandardScaler, one process.

``gpupart.init()`` makes a world of one, so the checks' NumPy and pandas inputs go through
the same code as distributed ones (``check_X``, the packed all-reduces, ``rows_like``).
No check is expected to fail; the array-API check skips itself (SCIPY_ARRAY_API unset).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("sklearn")

from gpupart.ml import LinearRegression, Ridge, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import gpupart

_LAUNCH_PREFIXES = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_")

#: check name -> why it cannot pass (none today)
EXPECTED_FAILED: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def world_of_one() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(_LAUNCH_PREFIXES):
                mp.delenv(name)
        runtime = gpupart.init(device="cpu")
        yield runtime
        runtime.close()


@parametrize_with_checks(
    [LinearRegression(), Ridge(), StandardScaler()],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
