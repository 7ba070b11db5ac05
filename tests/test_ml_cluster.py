"""gpupart.ml.KMeans at 1, 2 and 3 ranks against scikit-learn, and its API checks.

The rank script ``ml_scripts/cluster_cases.py`` runs every case in one job per rank count
(given initial centres: scikit-learn's iterations, labels, centres and inertia exactly, with
uneven tiles, X cut along columns, sample weights tiled differently, a rank with no rows,
float32 and float64, empty clusters relocated, DistFrame and ``__partitioned__`` input; the
k-means++, k-means|| and random initialisations good, reproducible and agreed on every rank;
one all-reduce per Lloyd iteration; errors on every rank); each case is a test here that
checks every rank reported it passed. The three jobs run side by side. In one process,
scikit-learn's ``check_estimator`` runs its checks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import CaseJobs, assert_sklearn_checks

SCRIPT = Path(__file__).parent / "ml_scripts" / "cluster_cases.py"
SIZES = [1, 2, 3]

#: scikit-learn checks this estimator does not pass, and why
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "scikit-learn marks it as failing for its own KMeans: weighted and repeated rows draw"
        " different random initial centres"
    ),
}


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
    from gpupart.ml import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # the sample-weight checks fit 16 rows with 4 distinct points into 8 clusters:
        # scikit-learn's KMeans warns alike (fewer distinct clusters than n_clusters)
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert_sklearn_checks(KMeans(random_state=0), EXPECTED_FAILED_CHECKS)


def test_local_numpy_in_numpy_out(one_rank):
    from gpupart.ml import KMeans
    from sklearn.cluster import KMeans as SkKMeans

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3)) + 10.0
    init = X[:4]
    ours = KMeans(4, init=init).fit(X)
    ref = SkKMeans(4, init=init, n_init=1).fit(X)
    assert isinstance(ours.labels_, np.ndarray)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert KMeans(4).get_params()["n_init"] == 1
