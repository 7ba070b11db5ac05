"""oneDAL's distributed algorithms (daal4py, on CPUs) fed from gpupart's tiles.

Run as ``mpiexec -n N python sklearnex_cases.py``. Every rank makes the same seeded data
and hands its rows to gpupart (uneven; at 3 ranks rank 2 has none and ``local_data``
rebalances); each rank passes its local rows to daal4py's ``distributed=True`` algorithms
and the results must equal scikit-learn's (or NumPy's) in one process on all the data.
``sklearnex.spmd`` needs a SYCL GPU (see ``gpupart.interop.sklearnex``): the case that
tries it records what this install does. Every rank emits ``@plan``, ``@case`` after each
case passes and ``@done``.
"""

from __future__ import annotations

from typing import Any

import daal4py as d4p
import numpy as np
from _interop import Cases
from _mp import expect, raises
from mpi4py import MPI
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.linear_model import LinearRegression, Ridge

import gpupart
from gpupart.interop import sklearnex as gs

cases = Cases()
case = cases.case


def my_slice(rt: Any, n: int) -> slice:
    """This rank's rows of ``n``: uneven runs, none for rank 2."""
    weights = np.array([0 if r == 2 else r + 1 for r in range(rt.size)], dtype=float)
    cuts = (np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).round().astype(int)
    return slice(cuts[rt.rank], cuts[rt.rank + 1])


def regression(n: int = 900, m: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m)) * rng.uniform(0.5, 5, m) + 10
    y = X @ rng.standard_normal(m) + 3.0 + 0.1 * rng.standard_normal(n)
    return X, y


def close(where: str, got: Any, want: Any, rtol: float = 1e-9) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    expect(got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}")
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))
    expect(err <= rtol, f"{where}: relative error {err:.3g} > {rtol:.3g}")


@case
def daal4py_processes_are_the_ranks(rt: Any) -> None:
    expect(gs.start_daal4py() is rt, "start_daal4py returns the runtime")
    expect(d4p.my_procid() == rt.rank == MPI.COMM_WORLD.Get_rank(), "process id")
    expect(d4p.num_procs() == rt.size, "number of processes")


@case
def local_data_is_the_tile_and_fills_every_rank(rt: Any) -> dict:
    X, y = regression()
    mine = X[my_slice(rt, len(X))]
    got = gs.local_data(gpupart.from_local(mine), gpupart.asarray(y))
    if rt.size < 3:  # every rank has rows: they are the tile itself
        expect(got.X is mine, "the rank's rows are its tile")
    expect(got.X.shape[0] >= 1, f"rank {rt.rank} has {got.X.shape[0]} rows")
    whole = np.concatenate(rt.allgather(got.X))
    np.testing.assert_array_equal(whole, X)  # rebalanced or not, rows stay in order
    np.testing.assert_array_equal(np.concatenate(rt.allgather(got.targets["y"])), y)
    raises(ValueError, lambda: gs.local_data(gpupart.asarray(X[: rt.size - 1])), "row(s)")
    return {"rows": int(got.X.shape[0])}


@case
def linear_regression_equals_scikit_learn(rt: Any) -> None:
    X, y = regression()
    mine = my_slice(rt, len(X))
    data = gs.local_data(gpupart.from_local(X[mine]), gpupart.from_local(y[mine]))
    model = d4p.linear_regression_training(distributed=True, interceptFlag=True).compute(
        data.X, data.targets["y"][:, None]
    )
    ref = LinearRegression().fit(X, y)
    beta = model.model.Beta[0]
    close("intercept", beta[0], ref.intercept_)
    close("coef", beta[1:], ref.coef_)


@case
def ridge_equals_scikit_learn(rt: Any) -> None:
    X, y = regression(seed=1)
    mine = my_slice(rt, len(X))
    data = gs.local_data(gpupart.from_local(X[mine]), gpupart.from_local(y[mine]))
    model = d4p.ridge_regression_training(
        distributed=True, interceptFlag=True, ridgeParameters=np.array([[2.5]])
    ).compute(data.X, data.targets["y"][:, None])
    ref = Ridge(alpha=2.5).fit(X, y)
    beta = model.model.Beta[0]
    close("ridge intercept", beta[0], ref.intercept_, 1e-8)
    close("ridge coef", beta[1:], ref.coef_, 1e-8)


@case
def kmeans_equals_scikit_learn(rt: Any) -> dict:
    X, _ = make_blobs(1200, 4, centers=5, cluster_std=1.5, random_state=2)
    init = X[[0, 100, 200, 300, 400]]
    mine = my_slice(rt, len(X))
    data = gs.local_data(gpupart.from_local(X[mine]))
    got = d4p.kmeans(5, 300, accuracyThreshold=0.0, distributed=True).compute(data.X, init)
    ref = KMeans(5, init=init, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(X)
    close("centroids", got.centroids, ref.cluster_centers_)
    close("inertia", got.objectiveFunction[0, 0], ref.inertia_)
    return {"iterations": int(got.nIterations[0, 0]), "sklearn_iterations": int(ref.n_iter_)}


@case
def moments_and_covariance_equal_numpy(rt: Any) -> None:
    X, _ = regression(700, 5, seed=3)
    mine = my_slice(rt, len(X))
    data = gs.local_data(gpupart.from_local(X[mine]))
    moments = d4p.low_order_moments(distributed=True).compute(data.X)
    close("mean", moments.mean[0], X.mean(axis=0), 1e-12)
    close("variance", moments.variance[0], X.var(axis=0, ddof=1), 1e-10)
    close("minimum", moments.minimum[0], X.min(axis=0), 0)
    close("maximum", moments.maximum[0], X.max(axis=0), 0)
    cov = d4p.covariance(distributed=True).compute(data.X)
    close("covariance", cov.covariance, np.cov(X, rowvar=False), 1e-10)


@case
def sklearnex_spmd_on_this_install(rt: Any) -> dict:
    """What ``sklearnex.spmd`` does here: without the SPMD backend it cannot fit."""
    import onedal
    from sklearnex.spmd.linear_model import LinearRegression as SpmdLinearRegression

    X, y = regression()
    mine = my_slice(rt, len(X))
    data = gs.local_data(gpupart.from_local(X[mine]), gpupart.from_local(y[mine]))
    if onedal._spmd_backend is not None:  # a GPU install: recorded, tested where a GPU is
        return {"spmd_backend": True}
    try:
        SpmdLinearRegression().fit(data.X, data.targets["y"])
    except (AttributeError, RuntimeError) as exc:
        return {"spmd_backend": False, "error": f"{type(exc).__name__}: {exc}"}
    raise AssertionError("sklearnex.spmd fitted without its SPMD backend: test it for real")


def main() -> None:
    rt = gpupart.init(timeout=60)
    cases.run(rt)
    rt.close()


if __name__ == "__main__":
    main()
