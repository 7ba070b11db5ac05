"""GPU rank script: gpupart.ml estimators on CuPy tiles against scikit-learn on the same data."""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np
from sklearn import cluster, decomposition, linear_model, preprocessing

import gpupart
from gpupart import ml


def close(label: str, got: object, want: object, rtol: float = 1e-8) -> None:
    got = np.asarray(got.get() if hasattr(got, "get") else got, dtype=float)
    np.testing.assert_allclose(
        got, np.asarray(want, dtype=float), rtol=rtol, atol=1e-10, err_msg=label
    )


with gpupart.init(device="cuda") as rt:
    assert rt.backend.is_gpu, rt
    rng = np.random.default_rng(11)
    A = rng.standard_normal((1003, 6))
    y = A @ np.linspace(-1, 1, 6) + 0.05 * rng.standard_normal(1003)
    labels = (y > 0).astype(np.int64)
    X = gpupart.asarray(A, tiles=(170, 6))  # uneven row blocks of CuPy tiles
    for tile in X.local_tiles.values():
        assert isinstance(tile, cp.ndarray), type(tile)
    Y, L = gpupart.asarray(y, tiles=(250,)), gpupart.asarray(labels, tiles=(300,))

    ours, ref = ml.LinearRegression().fit(X, Y), linear_model.LinearRegression().fit(A, y)
    close("LinearRegression coef_", ours.coef_, ref.coef_)
    close("LinearRegression predict", ours.predict(X).to_numpy(), ref.predict(A))
    ours, ref = ml.Ridge(alpha=2.0).fit(X, Y), linear_model.Ridge(alpha=2.0).fit(A, y)
    close("Ridge coef_", ours.coef_, ref.coef_)
    ours = ml.LogisticRegression(tol=1e-10, max_iter=500).fit(X, L)
    ref = linear_model.LogisticRegression(tol=1e-10, max_iter=500).fit(A, labels)
    close("LogisticRegression coef_", ours.coef_, ref.coef_, rtol=1e-5)
    centres = A[:4].copy()
    ours = ml.KMeans(n_clusters=4, init=centres, n_init=1).fit(X)
    ref = cluster.KMeans(n_clusters=4, init=centres, n_init=1).fit(A)
    close("KMeans cluster_centers_", ours.cluster_centers_, ref.cluster_centers_)
    close("KMeans inertia_", ours.inertia_, ref.inertia_)
    ours, ref = ml.PCA(n_components=3).fit(X), decomposition.PCA(n_components=3).fit(A)
    close("PCA components_", ours.components_, ref.components_, rtol=1e-6)
    ours, ref = ml.StandardScaler().fit(X), preprocessing.StandardScaler().fit(A)
    close("StandardScaler scale_", ours.scale_, ref.scale_)
    close("StandardScaler transform", ours.transform(X).to_numpy(), ref.transform(A))
    print(f"[{rt.rank}] ML GPU OK", file=sys.stdout, flush=True)
