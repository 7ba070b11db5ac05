"""GPU rank script: a DistArray of CuPy tiles into ``cuml.dask`` through the Dask adapter.

``gpupart run -n N -- python cuml_dask_rank.py SCHEDULER``: every rank joins the dask-cuda
cluster as a client, hands its rows to it with ``gpupart.interop.dask.to_dask`` and rank 0
fits ``cuml.dask.linear_model.LinearRegression`` on them, compared with scikit-learn on all
rows.
"""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np
from cuml.dask.linear_model import LinearRegression
from distributed import Client
from sklearn import linear_model

import gpupart
from gpupart.interop import dask as gdask

COEF = np.array([1.5, -2.0, 0.5])


def rows(rank: int) -> np.ndarray:
    return np.random.default_rng(rank).standard_normal((300 + 20 * rank, 3))


with gpupart.init(device="cuda") as rt, Client(sys.argv[1], timeout=60) as client:
    host = rows(rt.rank)
    X = gpupart.from_local(cp.asarray(host))
    y = gpupart.from_local(cp.asarray(host @ COEF + 1.0))
    dX, dy = gdask.to_dask(X, client), gdask.to_dask(y, client)
    if rt.rank == 0:
        model = LinearRegression(client=client).fit(dX, dy)
        whole = np.concatenate([rows(r) for r in range(rt.size)])
        ref = linear_model.LinearRegression().fit(whole, whole @ COEF + 1.0)
        got = cp.asnumpy(cp.asarray(model.coef_))
        np.testing.assert_allclose(got, ref.coef_, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(float(model.intercept_), ref.intercept_, rtol=1e-4, atol=1e-4)
    rt.allgather(None)  # rank 0 fitted before the others' clients leave
    print(f"[{rt.rank}] CUML DASK OK", file=sys.stdout, flush=True)
