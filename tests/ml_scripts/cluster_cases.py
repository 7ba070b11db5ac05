"""gpupart.ml.KMeans checked against scikit-learn on the same data, at any job size.

Run as ``gpupart run -n N -- python cluster_cases.py``. Every rank builds the same NumPy data
(seeded), distributes it (uneven tiles, X cut along columns too, sample weights tiled
differently, a rank with no rows, a DistFrame, SPMD and Dask-style ``__partitioned__``
dicts). Given the initial centres, a fit must equal scikit-learn's (iterations, labels,
centres, inertia); the random initialisations must give good, reproducible clusterings that
every rank agrees on. The runtime's collectives are counted: one Lloyd iteration is exactly
one all-reduce. Errors must be raised on every rank.

Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and ``@done``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _ml import agreed, collectives, dask_style, my_rows, on_every_rank, spmd_rows, whole
from _mp import emit, expect
from gpupart.ml import KMeans, NotFittedError
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

import gpupart

CASES: list[tuple[str, Callable[[], Any]]] = []


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


# -- helpers ----------------------------------------------------------------------------------


def blobs(n: int, m: int, k: int, seed: int = 0, std: float = 2.5) -> np.ndarray:
    """Overlapping blobs far from the origin (so centring matters), float64."""
    X, _ = make_blobs(n, m, centers=k, cluster_std=std, random_state=seed)
    return X + 50.0


def close(where: str, got: Any, want: Any, rtol: float) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    expect(got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}")
    scale = max(float(np.abs(want).max()), 1e-300)
    err = float(np.abs(got - want).max()) / scale
    expect(err <= rtol, f"{where}: relative error {err:.3g} > {rtol:.3g}")


def same_fit(where: str, ours: Any, ref: Any, rtol: float = 1e-8, labels: bool = True) -> None:
    """Iterations, labels, centres and inertia equal to scikit-learn's."""
    expect(ours.n_iter_ == ref.n_iter_, f"{where}: n_iter_ {ours.n_iter_} != {ref.n_iter_}")
    dtype = ours.cluster_centers_.dtype
    expect(dtype == ref.cluster_centers_.dtype, f"{where}: centres dtype {dtype}")
    close(f"{where} cluster_centers_", ours.cluster_centers_, ref.cluster_centers_, rtol)
    close(f"{where} inertia_", ours.inertia_, ref.inertia_, rtol)
    if labels:
        got = whole(ours.labels_)
        expect(got.dtype == np.int32, f"{where}: labels dtype {got.dtype}")
        np.testing.assert_array_equal(got, ref.labels_, err_msg=where)
    expect(ours.n_features_in_ == ref.n_features_in_, f"{where}: n_features_in_")


def same_use(where: str, ours: Any, ref: Any, Xd: Any, X: np.ndarray, rtol: float) -> None:
    """predict, transform and score equal to scikit-learn's."""
    pred = ours.predict(Xd)
    np.testing.assert_array_equal(whole(pred), ref.predict(X), err_msg=f"{where} predict")
    dist = whole(ours.transform(Xd))
    expect(dist.dtype == ref.transform(X).dtype, f"{where}: transform dtype {dist.dtype}")
    close(f"{where} transform", dist, ref.transform(X), rtol)
    close(f"{where} score", ours.score(Xd), ref.score(X), rtol)


# == given initial centres: scikit-learn's result ==============================================


@case
def given_init_uneven_tiles_equals_sklearn() -> None:
    X = blobs(203, 5, 6)
    init = X[[0, 40, 80, 120, 160, 200]]
    Xd = gpupart.asarray(X, tiles=(7, 5))
    ours = KMeans(6, init=init).fit(Xd)
    ref = SkKMeans(6, init=init, n_init=1).fit(X)
    expect(ref.n_iter_ > 3, f"the data should take a few iterations, took {ref.n_iter_}")
    same_fit("uneven", ours, ref)
    same_use("uneven", ours, ref, Xd, X, 1e-8)
    labels = ours.labels_
    expect(isinstance(labels, gpupart.DistArray), f"labels_ is {type(labels)}")
    expect(labels.tiling.boundaries[0] == Xd.tiling.boundaries[0], "labels_ lined up with X")
    dist = ours.fit_transform(Xd)
    expect(dist.tiling.boundaries[0] == Xd.tiling.boundaries[0], "transform lined up with X")
    close("fit_transform", whole(dist), ref.transform(X), 1e-8)
    np.testing.assert_array_equal(whole(ours.fit_predict(Xd)), ref.labels_)
    agreed(rt, "centres", ours.cluster_centers_)


@case
def columns_cut_and_sample_weight_tiled_differently() -> None:
    X = blobs(157, 6, 4, seed=1)
    sw = np.random.default_rng(2).uniform(0.2, 3.0, len(X))
    init = X[:4] + 0.5
    Xd = gpupart.asarray(X, tiles=(13, 4))  # columns cut: repartitioned by rows once
    swd = gpupart.asarray(sw, tiles=(40,))
    ours = KMeans(4, init=init, tol=0).fit(Xd, sample_weight=swd)
    ref = SkKMeans(4, init=init, n_init=1, tol=0).fit(X, sample_weight=sw)
    same_fit("weighted", ours, ref)
    got = ours.score(Xd, sample_weight=swd)
    close("weighted score", got, ref.score(X, sample_weight=sw), 1e-8)
    ours = KMeans(4, init=init).fit(Xd, sample_weight=2.0)  # a scalar weight
    ref = SkKMeans(4, init=init, n_init=1).fit(X, sample_weight=np.full(len(X), 2.0))
    same_fit("scalar weight", ours, ref)


@case
def rank_with_no_rows_float32() -> None:
    X = blobs(240, 4, 5, seed=3).astype(np.float32)
    init = X[[1, 50, 100, 150, 200]]
    Xd = gpupart.from_local(X[my_rows(rt, len(X))])
    ours = KMeans(5, init=init).fit(Xd)
    ref = SkKMeans(5, init=init, n_init=1).fit(X)
    expect(ours.cluster_centers_.dtype == np.float32, "float32 centres")
    same_fit("float32", ours, ref, rtol=2e-5)
    same_use("float32", ours, ref, Xd, X, 2e-5)
    # float64 through the same layout: exact
    X64 = X.astype(np.float64)
    ours = KMeans(5, init=init.astype(np.float64)).fit(gpupart.from_local(X64[my_rows(rt, len(X))]))
    same_fit("empty rank", ours, SkKMeans(5, init=init.astype(np.float64), n_init=1).fit(X64))


@case
def stops_on_tol_or_max_iter_like_sklearn() -> None:
    X = blobs(300, 3, 7, seed=4, std=4.0)
    init = X[:7]
    Xd = gpupart.asarray(X, tiles=(33, 3))
    for kw in [dict(tol=1e-2), dict(tol=0.5), dict(max_iter=2), dict(tol=0.0)]:
        ours = KMeans(7, init=init, **kw).fit(Xd)
        ref = SkKMeans(7, init=init, n_init=1, **kw).fit(X)
        same_fit(f"{kw}", ours, ref)


@case
def empty_clusters_relocated_like_sklearn() -> None:
    X = blobs(120, 3, 3, seed=5)
    far = X[:3] + 1e4  # no row comes near these: empty at the first iteration
    init = np.vstack([X[[0, 50, 100]], far])
    Xd = gpupart.asarray(X, tiles=(17, 3))
    ours = KMeans(6, init=init).fit(Xd)
    ref = SkKMeans(6, init=init, n_init=1).fit(X)
    same_fit("relocated", ours, ref)


@case
def frame_input_and_feature_names() -> None:
    X = blobs(90, 3, 3, seed=6)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    frame = gpupart.from_pandas(df)
    init = X[[0, 30, 60]]
    ours = KMeans(3, init=init).fit(frame)
    ref = SkKMeans(3, init=init, n_init=1).fit(df)
    same_fit("frame", ours, ref)
    expect(list(ours.feature_names_in_) == ["a", "b", "c"], f"{ours.feature_names_in_}")
    np.testing.assert_array_equal(whole(ours.predict(frame)), ref.predict(df))


@case
def partitioned_dicts_spmd_and_dask() -> None:
    X = blobs(64, 4, 3, seed=7)
    counts = [64 // size] * size
    counts[-1] += 64 - sum(counts)
    init = X[[0, 20, 40]]
    ref = SkKMeans(3, init=init, n_init=1).fit(X)
    for name, producer in [
        ("spmd", spmd_rows(rt, X, counts)),
        ("dask", dask_style(rt, X, [0, 20, 41, 64], [0, 3, 4])),
    ]:
        ours = KMeans(3, init=init, output_type="numpy").fit(producer)
        expect(isinstance(ours.labels_, np.ndarray), f"{name}: labels_ {type(ours.labels_)}")
        same_fit(name, ours, ref)
        pred = ours.predict(producer)
        expect(isinstance(pred, np.ndarray), f"{name}: output_type numpy gave {type(pred)}")
        np.testing.assert_array_equal(pred, ref.predict(X), err_msg=name)


@case
def one_allreduce_per_iteration() -> None:
    X = blobs(200, 4, 5, seed=8, std=4.0)
    init = X[:5]
    Xd = gpupart.asarray(X, tiles=(23, 4))
    with collectives(rt) as short:
        a = KMeans(5, init=init, max_iter=2).fit(Xd)
    with collectives(rt) as long:
        b = KMeans(5, init=init, tol=0).fit(Xd)
    expect(a.n_iter_ == 2 and b.n_iter_ > 4, f"iterations {a.n_iter_}, {b.n_iter_}")
    extra = {k: long[k] - short[k] for k in long}
    want = dict.fromkeys(long, 0)
    want["allreduce"] = b.n_iter_ - a.n_iter_
    expect(extra == want, f"{b.n_iter_ - a.n_iter_} more iterations cost {extra}")


# == random initialisations ====================================================================


@case
def initialisations_good_reproducible_agreed() -> None:
    X, truth = make_blobs(400, 5, centers=6, cluster_std=0.6, random_state=9)
    Xd = gpupart.asarray(X, tiles=(37, 5))
    best = SkKMeans(6, n_init=10, random_state=0).fit(X).inertia_
    for init in ["k-means++", "k-means||", "random"]:
        n_init = 10 if init == "random" else 1
        ours = KMeans(6, init=init, n_init=n_init, random_state=3).fit(Xd)
        expect(ours.inertia_ <= 1.05 * best, f"{init}: inertia {ours.inertia_} vs {best}")
        labels = whole(ours.labels_)
        from sklearn.metrics import adjusted_rand_score

        ari = adjusted_rand_score(truth, labels)
        expect(ari > 0.99, f"{init}: adjusted Rand index {ari}")
        agreed(rt, f"{init} centres", ours.cluster_centers_)
        again = KMeans(6, init=init, n_init=n_init, random_state=3).fit(Xd)
        np.testing.assert_array_equal(again.cluster_centers_, ours.cluster_centers_, err_msg=init)
        # the fit's labels and inertia are those of its centres
        ref = SkKMeans(6, init=ours.cluster_centers_, n_init=1, max_iter=1).fit(X)
        np.testing.assert_array_equal(labels, ref.predict(X), err_msg=f"{init} labels")
        close(f"{init} inertia", ours.inertia_, -ref.score(X), 1e-8)
    auto = KMeans(6, init="random", n_init="auto", random_state=1).fit(Xd)
    expect(auto.inertia_ <= 1.05 * best, f"n_init='auto': inertia {auto.inertia_}")
    # a rank with no rows and a weighted k-means||
    part = gpupart.from_local(X[my_rows(rt, len(X))])
    sw = gpupart.asarray(np.random.default_rng(0).uniform(0.5, 1.5, len(X)), tiles=(50,))
    for init in ["k-means++", "k-means||", "random"]:
        ours = KMeans(6, init=init, random_state=0, n_init=3).fit(part, sample_weight=sw)
        expect(adjusted_rand_score(truth, whole(ours.labels_)) > 0.99, f"{init} empty rank")


@case
def duplicate_points_warn_and_output_types() -> None:
    X = np.repeat(np.arange(3.0)[:, None], 10, axis=0) * np.ones((1, 2))
    Xd = gpupart.asarray(X, tiles=(7, 2))
    init = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [2.0, 2.0]])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ours = KMeans(4, init=init).fit(Xd)
        ref = SkKMeans(4, init=init, n_init=1).fit(X)
    found = [w for w in seen if issubclass(w.category, ConvergenceWarning)]
    expect(len(found) == 2, f"expected a ConvergenceWarning from each, got {seen}")
    same_fit("duplicates", ours, ref)
    for init_name in ["k-means++", "k-means||", "random"]:  # fewer distinct points than k
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            got = KMeans(4, init=init_name, random_state=0).fit(Xd)
        expect(got.inertia_ < 1e-9, f"{init_name}: inertia {got.inertia_}")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        KMeans(3, init=init[:3], n_init=4).fit(Xd)
    expect(any("Explicit initial center" in str(w.message) for w in seen), f"{seen}")
    ours = KMeans(3, init=init[:3], output_type="gpupart").fit(Xd)
    expect(isinstance(ours.predict(Xd), gpupart.DistArray), "output_type gpupart")
    pred = KMeans(3, init=init[:3], output_type="pandas").fit(Xd).predict(Xd)
    expect(isinstance(pred, pd.Series), f"output_type pandas gave {type(pred)}")


# == errors on every rank ======================================================================


@case
def errors_on_every_rank() -> None:
    X = blobs(40, 3, 2, seed=10)
    Xd = gpupart.asarray(X, tiles=(9, 3))
    on_every_rank(rt, NotFittedError, lambda: KMeans(2).predict(Xd), "not fitted")
    on_every_rank(rt, ValueError, lambda: KMeans(2).fit(gpupart.asarray(X[:, 0])), "2D")
    bad = X.copy()
    bad[17, 1] = np.nan
    on_every_rank(rt, ValueError, lambda: KMeans(2).fit(gpupart.asarray(bad, tiles=(9, 3))), "NaN")
    on_every_rank(rt, ValueError, lambda: KMeans(41).fit(Xd), "n_samples=40", "n_clusters=41")
    on_every_rank(rt, ValueError, lambda: KMeans(0).fit(Xd), "n_clusters")
    on_every_rank(rt, ValueError, lambda: KMeans(2, init="nope").fit(Xd), "init")
    on_every_rank(rt, ValueError, lambda: KMeans(3, init=X[:2]).fit(Xd), "number of clusters 3")
    on_every_rank(rt, ValueError, lambda: KMeans(2, init=X[:2, :2]).fit(Xd), "number of features")
    on_every_rank(rt, ValueError, lambda: KMeans(2, output_type="xml").fit(Xd), "output_type")
    sw = gpupart.asarray(np.ones(39))
    on_every_rank(rt, ValueError, lambda: KMeans(2).fit(Xd, sample_weight=sw), "[40, 39]")
    fitted = KMeans(2, random_state=0).fit(Xd)
    wide = gpupart.asarray(np.ones((5, 4)))
    on_every_rank(rt, ValueError, lambda: fitted.predict(wide), "4 features", "expecting 3")
    on_every_rank(rt, ValueError, lambda: fitted.transform(wide), "4 features")
    if size > 1:
        on_every_rank(rt, TypeError, lambda: KMeans(2).fit(X), "__partitioned__")


# == main =====================================================================================


rt: Any = None
rank = size = 0


def main() -> None:
    global rt, rank, size
    rt = gpupart.init(timeout=60)
    rank, size = rt.rank, rt.size
    emit("plan", rank=rank, cases=[name for name, _ in CASES])
    for name, fn in CASES:
        extra = fn() or {}
        rt.barrier()
        emit("case", name=name, rank=rank, **extra)
    emit("done", rank=rank, size=size)
    rt.close()


if __name__ == "__main__":
    main()
