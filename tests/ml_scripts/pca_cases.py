"""gpupart.ml.PCA checked against scikit-learn on the same data, at any job size.

Run as ``gpupart run -n N -- python pca_cases.py``. Every rank builds the same NumPy data
(seeded), distributes it (uneven tiles, X cut along columns too, a rank with no rows, a
DistFrame, SPMD and Dask-style ``__partitioned__`` dicts), fits with both solvers and compares
components (scikit-learn's signs), variances, singular values, the mean, the noise variance
and the transforms with scikit-learn's ``PCA`` on the whole data. The runtime's collectives
are counted: ``covariance_eigh`` is two all-reduces, ``tsqr`` one all-reduce and one
all-gather. Errors must be raised on every rank.

Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and ``@done``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _ml import agreed, collectives, dask_style, my_rows, on_every_rank, spmd_rows, whole
from _mp import emit, expect
from gpupart.ml import PCA, NotFittedError
from sklearn.decomposition import PCA as SkPCA

import gpupart

CASES: list[tuple[str, Callable[[], Any]]] = []
#: our solver -> scikit-learn's solver that computes the same thing
SK_SOLVER = {"covariance_eigh": "covariance_eigh", "tsqr": "full", "full": "full", "auto": "auto"}


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


# -- helpers ----------------------------------------------------------------------------------


def data(n: int, m: int, seed: int = 0) -> np.ndarray:
    """Correlated features with distinct variances, away from the origin."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.2, m)
    return (rng.standard_normal((n, m)) * scales) @ rng.standard_normal((m, m)) + 7.0


def close(where: str, got: Any, want: Any, rtol: float) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    expect(got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}")
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1e-12)
    err = float(np.abs(got - want).max()) / scale if want.size else 0.0
    expect(err <= rtol, f"{where}: relative error {err:.3g} > {rtol:.3g}")


def same_fit(where: str, ours: Any, ref: Any, rtol: float = 1e-8, keep: int | None = None) -> None:
    """Fitted attributes equal to scikit-learn's (the first ``keep`` components)."""
    expect(ours.n_components_ == ref.n_components_, f"{where}: n_components_ {ours.n_components_}")
    for name in ["components_", "explained_variance_", "mean_", "singular_values_"]:
        got, want = getattr(ours, name), getattr(ref, name)
        expect(got.dtype == want.dtype, f"{where}: {name} dtype {got.dtype} != {want.dtype}")
        if name != "mean_" and keep is not None:
            got, want = got[:keep], want[:keep]
        close(f"{where} {name}", got, want, rtol)
    close(f"{where} ratio", ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol)
    close(f"{where} noise_variance_", ours.noise_variance_, ref.noise_variance_, rtol)
    expect(ours.n_samples_ == ref.n_samples_, f"{where}: n_samples_")
    expect(ours.n_features_in_ == ref.n_features_in_, f"{where}: n_features_in_")


def same_use(where: str, ours: Any, ref: Any, Xd: Any, X: np.ndarray, rtol: float) -> None:
    """transform, inverse_transform and fit_transform equal to scikit-learn's."""
    got = ours.transform(Xd)
    want = ref.transform(X)
    expect(whole(got).dtype == want.dtype, f"{where}: transform dtype {whole(got).dtype}")
    close(f"{where} transform", whole(got), want, rtol)
    back = ours.inverse_transform(got)
    close(f"{where} inverse_transform", whole(back), ref.inverse_transform(want), rtol)
    if isinstance(got, gpupart.DistArray):
        cuts = Xd.tiling.boundaries[0] if isinstance(Xd, gpupart.DistArray) else None
        expect(cuts is None or got.tiling.boundaries[0] == cuts, f"{where}: lined up with X")
        expect(back.tiling.boundaries[0] == got.tiling.boundaries[0], f"{where}: inverse lined up")


# == fits against scikit-learn ================================================================


@case
def tall_uneven_tiles_both_solvers() -> None:
    X = data(211, 6)
    Xd = gpupart.asarray(X, tiles=(7, 6))
    for solver in ["covariance_eigh", "tsqr", "full", "auto"]:
        for n_components in [None, 3]:
            kw = dict(n_components=n_components, svd_solver=solver)
            ours = PCA(**kw).fit(Xd)
            ref = SkPCA(n_components=n_components, svd_solver=SK_SOLVER[solver]).fit(X)
            where = f"{solver} {n_components}"
            same_fit(where, ours, ref)
            same_use(where, ours, ref, Xd, X, 1e-8)
            close(f"{where} fit_transform", whole(ours.fit_transform(Xd)), ref.transform(X), 1e-8)
            agreed(rt, f"{where} components", ours.components_)
    auto = PCA().fit(Xd)
    expect(auto._fit_svd_solver == "covariance_eigh", f"auto chose {auto._fit_svd_solver}")
    expect(PCA().fit(gpupart.asarray(X[:50]))._fit_svd_solver == "tsqr", "auto, short data")


@case
def columns_cut_float32_and_whiten() -> None:
    X = data(157, 8, seed=1).astype(np.float32)
    Xd = gpupart.asarray(X, tiles=(13, 3))  # columns cut: repartitioned by rows once
    for solver in ["covariance_eigh", "tsqr"]:
        for whiten in [False, True]:
            ours = PCA(5, whiten=whiten, svd_solver=solver).fit(Xd)
            ref = SkPCA(5, whiten=whiten, svd_solver=SK_SOLVER[solver]).fit(X)
            expect(ours.components_.dtype == np.float32, f"{solver}: float32 kept")
            # scikit-learn computes in float32 throughout; we reduce in float64
            same_fit(f"float32 {solver}", ours, ref, rtol=2e-4)
            same_use(f"float32 {solver} whiten={whiten}", ours, ref, Xd, X, 2e-3)
    X64 = X.astype(np.float64)
    ours = PCA(4, whiten=True).fit(gpupart.asarray(X64, tiles=(13, 3)))
    ref = SkPCA(4, whiten=True).fit(X64)
    same_fit("float64 whiten", ours, ref)
    same_use("float64 whiten", ours, ref, gpupart.asarray(X64, tiles=(13, 3)), X64, 1e-8)


@case
def rank_with_no_rows_tall_and_wide() -> None:
    X = data(120, 5, seed=2)
    Xd = gpupart.from_local(X[my_rows(rt, len(X))])
    for solver in ["covariance_eigh", "tsqr"]:
        ours = PCA(svd_solver=solver).fit(Xd)
        ref = SkPCA(svd_solver=SK_SOLVER[solver]).fit(X)
        same_fit(f"empty rank {solver}", ours, ref)
        same_use(f"empty rank {solver}", ours, ref, Xd, X, 1e-8)
    # wide: 9 rows, 20 features; the centred data have rank 8: the last axis is arbitrary
    W = np.random.default_rng(3).standard_normal((9, 20))
    Wd = gpupart.from_local(W[my_rows(rt, len(W))])
    ours = PCA(svd_solver="tsqr").fit(Wd)
    ref = SkPCA(svd_solver="full").fit(W)
    same_fit("wide", ours, ref, rtol=1e-8, keep=8)
    ours = PCA(5).fit(Wd)  # auto: tsqr
    ref = SkPCA(5).fit(W)
    same_fit("wide 5", ours, ref)
    same_use("wide 5", ours, ref, Wd, W, 1e-8)


@case
def fractions_and_mle_choose_like_sklearn() -> None:
    X = data(300, 7, seed=4)
    Xd = gpupart.asarray(X, tiles=(41, 7))
    for n_components in [0.5, 0.9, 0.999, "mle", 0, 7]:
        for solver in ["covariance_eigh", "tsqr"]:
            ours = PCA(n_components, svd_solver=solver).fit(Xd)
            ref = SkPCA(n_components, svd_solver=SK_SOLVER[solver]).fit(X)
            same_fit(f"{n_components} {solver}", ours, ref)


@case
def ill_conditioned_tsqr_is_accurate() -> None:
    rng = np.random.default_rng(5)
    q1, _ = np.linalg.qr(rng.standard_normal((400, 5)))
    q2, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    s = np.array([1.0, 1e-2, 1e-4, 1e-6, 1e-8])
    X = (q1 * s) @ q2.T + 3.0  # centred singular values ~ s
    Xd = gpupart.asarray(X, tiles=(37, 5))
    ref = SkPCA(svd_solver="full").fit(X)
    tsqr = PCA(svd_solver="tsqr").fit(Xd)
    close("tsqr singular values", tsqr.singular_values_, ref.singular_values_, 1e-12)
    small = abs(tsqr.singular_values_[-1] / ref.singular_values_[-1] - 1)
    expect(small < 1e-7, f"tsqr: smallest singular value off by {small:.3g}")
    eigh = PCA(svd_solver="covariance_eigh").fit(Xd)
    off = abs(eigh.singular_values_[-1] / ref.singular_values_[-1] - 1)
    expect(off > 1e-2, f"covariance_eigh should lose the smallest value, off by {off:.3g}")


@case
def frame_input_and_feature_names() -> None:
    X = data(90, 3, seed=6)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    frame = gpupart.from_pandas(df)
    ours = PCA(2).fit(frame)
    ref = SkPCA(2).fit(df)
    same_fit("frame", ours, ref)
    expect(list(ours.feature_names_in_) == ["a", "b", "c"], f"{ours.feature_names_in_}")
    close("frame transform", whole(ours.transform(frame)), ref.transform(df), 1e-8)
    names = list(ours.get_feature_names_out())
    expect(names == ["pca0", "pca1"], f"feature names out {names}")


@case
def partitioned_dicts_spmd_and_dask() -> None:
    X = data(64, 4, seed=7)
    counts = [64 // size] * size
    counts[-1] += 64 - sum(counts)
    for solver in ["covariance_eigh", "tsqr"]:
        ref = SkPCA(3, svd_solver=SK_SOLVER[solver]).fit(X)
        for name, producer in [
            ("spmd", spmd_rows(rt, X, counts)),
            ("dask", dask_style(rt, X, [0, 20, 41, 64], [0, 3, 4])),
        ]:
            ours = PCA(3, svd_solver=solver, output_type="numpy").fit(producer)
            same_fit(f"{name} {solver}", ours, ref)
            got = ours.transform(producer)
            expect(isinstance(got, np.ndarray), f"{name}: output_type numpy gave {type(got)}")
            close(f"{name} {solver} transform", got, ref.transform(X), 1e-8)


@case
def one_rank_holds_everything_and_output_types() -> None:
    X = data(70, 5, seed=10)
    Xd = gpupart.from_local(X if rank == 0 else X[:0])
    ref = SkPCA(3, whiten=True).fit(X)
    ours = PCA(3, whiten=True, output_type="pandas").fit(Xd)
    same_fit("one rank", ours, ref)
    got = ours.transform(Xd)
    expect(isinstance(got, pd.DataFrame), f"output_type pandas gave {type(got)}")
    close("pandas transform", got.to_numpy(), ref.transform(X), 1e-8)
    ours.set_params(output_type="gpupart")
    dist = ours.transform(Xd)
    expect(isinstance(dist, gpupart.DistArray), f"output_type gpupart gave {type(dist)}")
    want = ref.inverse_transform(ref.transform(X))
    close("gpupart inverse", whole(ours.inverse_transform(dist)), want, 1e-8)


@case
def collectives_per_solver() -> None:
    X = data(200, 4, seed=8)
    Xd = gpupart.asarray(X, tiles=(23, 4))
    with collectives(rt) as eigh:
        PCA(svd_solver="covariance_eigh").fit(Xd)
    with collectives(rt) as tsqr:
        PCA(svd_solver="tsqr").fit(Xd)
    # check_X agrees on NaN/inf with one all-reduce; then the solver's own
    want = dict.fromkeys(eigh, 0)
    expect(eigh == {**want, "allreduce": 3}, f"covariance_eigh: {eigh}")
    expect(tsqr == {**want, "allreduce": 2, "allgather": 1}, f"tsqr: {tsqr}")


# == errors on every rank ======================================================================


@case
def errors_on_every_rank() -> None:
    X = data(40, 3, seed=9)
    Xd = gpupart.asarray(X, tiles=(9, 3))
    on_every_rank(rt, NotFittedError, lambda: PCA().transform(Xd), "not fitted")
    on_every_rank(rt, NotFittedError, lambda: PCA().inverse_transform(Xd), "not fitted")
    on_every_rank(rt, ValueError, lambda: PCA().fit(gpupart.asarray(X[:, 0])), "2D")
    bad = X.copy()
    bad[17, 1] = np.inf
    on_every_rank(rt, ValueError, lambda: PCA().fit(gpupart.asarray(bad, tiles=(9, 3))), "infinity")
    on_every_rank(rt, ValueError, lambda: PCA(4).fit(Xd), "n_components=4", "between 0 and")
    on_every_rank(rt, ValueError, lambda: PCA(svd_solver="arpack").fit(Xd), "svd_solver")
    on_every_rank(rt, ValueError, lambda: PCA(-1).fit(Xd), "n_components")
    on_every_rank(rt, ValueError, lambda: PCA("mle").fit(gpupart.asarray(X[:2])), "mle")
    fitted = PCA(2).fit(Xd)
    wide = gpupart.asarray(np.ones((5, 4)))
    on_every_rank(rt, ValueError, lambda: fitted.transform(wide), "4 features", "expecting 3")
    on_every_rank(
        rt, ValueError, lambda: fitted.inverse_transform(wide), "4 features", "expecting 2"
    )
    if size > 1:
        on_every_rank(rt, TypeError, lambda: PCA().fit(X), "__partitioned__")


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
