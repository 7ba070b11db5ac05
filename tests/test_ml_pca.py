"""gpupart.ml.PCA at 1, 2 and 3 ranks against scikit-learn, and its API checks.

The rank script ``ml_scripts/pca_cases.py`` runs every case in one job per rank count (both
solvers against scikit-learn's covariance_eigh and full SVD, uneven tiles, X cut along
columns, a rank with no rows, tall and wide data, float32 and float64, whitening, fractional
and 'mle' n_components, ill-conditioned data, DistFrame and ``__partitioned__`` input, the
collectives each solver uses, errors on every rank); each case is a test here that checks
every rank reported it passed. The three jobs run side by side. In one process,
scikit-learn's ``check_estimator`` runs its checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CaseJobs, assert_sklearn_checks

SCRIPT = Path(__file__).parent / "ml_scripts" / "pca_cases.py"
SIZES = [1, 2, 3]

#: scikit-learn checks this estimator does not pass, and why
EXPECTED_FAILED_CHECKS = {}


JOBS = CaseJobs(SCRIPT, tuple(SIZES))
CASES = JOBS.names


@pytest.mark.multiprocess
def test_the_script_has_cases():
    assert len(CASES) >= 10, CASES


@pytest.mark.multiprocess
@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    JOBS.check_job(n)


@pytest.mark.multiprocess
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    JOBS.check_case(n, name)


# -- one process ------------------------------------------------------------------------------


def test_check_estimator(one_rank):
    from gpupart.ml import PCA

    assert_sklearn_checks(PCA(), EXPECTED_FAILED_CHECKS)


def test_local_numpy_in_numpy_out_and_pandas(one_rank):
    import pandas as pd
    from gpupart.ml import PCA
    from sklearn.decomposition import PCA as SkPCA

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 4)) @ rng.standard_normal((4, 4)) + 3.0
    ours = PCA(2).fit(X)
    ref = SkPCA(2).fit(X)
    np.testing.assert_allclose(ours.components_, ref.components_, rtol=1e-10, atol=1e-12)
    got = ours.transform(X)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ref.transform(X), rtol=1e-10, atol=1e-10)
    back = ours.inverse_transform(got)
    np.testing.assert_allclose(back, ref.inverse_transform(ref.transform(X)), rtol=1e-10)
    frame = PCA(2, output_type="pandas").fit_transform(X)
    assert isinstance(frame, pd.DataFrame)
    assert frame.shape == (80, 2)
