"""GPU rank script: each rank's CuPy tile goes into single-GPU cuML estimators by reference.

Every rank builds its rows on the GPU, joins them with ``from_local`` and takes them back
with ``gpupart.interop.cuml.local_array``: the same device pointer, which cuML's own input
conversion (C order, as ``KMeans`` asks) keeps. ``KMeans`` and ``LinearRegression`` fitted
on the rank's rows agree with scikit-learn on the same rows (``local_rows`` gives the rows of
``X`` and ``y`` as CuPy arrays).
"""

from __future__ import annotations

import sys

import cuml
import cupy as cp
import numpy as np
from cuml.internals.input_utils import input_to_cuml_array
from sklearn import cluster, linear_model

import gpupart
from gpupart.interop import cuml as gcuml


def pointer(a: object) -> int:
    return a.__cuda_array_interface__["data"][0]


def close(label: str, got: object, want: object, tol: float = 1e-5) -> None:
    got = cp.asnumpy(cp.asarray(got)) if not isinstance(got, np.ndarray) else got
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=label)


with gpupart.init(device="cuda") as rt:
    assert rt.backend.is_gpu, rt
    rng = np.random.default_rng(rt.rank)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 5.0, 5.0]])
    host = np.concatenate([c + 0.3 * rng.standard_normal((200 + 10 * rt.rank, 3)) for c in centres])
    piece = cp.asarray(host, dtype=cp.float32)
    X = gpupart.from_local(piece)
    local = gcuml.local_array(X)
    assert pointer(local) == pointer(piece), "local_array copied the tile"
    seen = input_to_cuml_array(local, order="C", check_dtype=cp.float32).array
    assert pointer(seen) == pointer(piece), "cuML copied a C-order float32 tile"

    ours = cuml.KMeans(n_clusters=3, init=cp.asarray(centres, dtype=cp.float32), n_init=1).fit(
        local
    )
    ref = cluster.KMeans(n_clusters=3, init=centres.astype(np.float32), n_init=1).fit(
        host.astype(np.float32)
    )
    close("KMeans cluster_centers_", ours.cluster_centers_, ref.cluster_centers_)
    labels = cp.asnumpy(cp.asarray(ours.predict(local)))
    assert (labels == ref.labels_).all(), "KMeans labels differ"

    coef = np.array([1.5, -2.0, 0.5])
    y = gpupart.from_local(cp.asarray(host @ coef + 1.0))
    Xr, yr = gcuml.local_rows(gpupart.from_local(cp.asarray(host)), y)
    assert isinstance(Xr, cp.ndarray) and isinstance(yr, cp.ndarray), (type(Xr), type(yr))
    lr = cuml.LinearRegression().fit(Xr, yr)
    ref = linear_model.LinearRegression().fit(host, host @ coef + 1.0)
    # cuML may solve in float32 (its default convert_dtype): compare at float32 precision
    close("LinearRegression coef_", lr.coef_, ref.coef_, tol=1e-4)
    close("LinearRegression intercept_", lr.intercept_, ref.intercept_, tol=1e-4)
    print(f"[{rt.rank}] CUML GPU OK", file=sys.stdout, flush=True)
