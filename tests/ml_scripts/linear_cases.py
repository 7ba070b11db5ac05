"""gpupart.ml LinearRegression and Ridge checked against scikit-learn on the same data.

Run as ``gpupart run -n N -- python linear_cases.py`` at any job size. Every rank builds the
same NumPy data (seeded), distributes ``X`` under many layouts (uneven tiles, cut along
columns too, a rank with no rows, a DistFrame, Heat-style and Dask-style ``__partitioned__``
dicts) with ``y`` tiled differently, fits, and compares ``coef_``, ``intercept_`` (values,
shapes, dtypes), predictions and scores with scikit-learn fitted on the whole data. Errors
must be raised on every rank. The runtime's collectives are counted: a fit all-reduces its
statistics twice (plus one finite check per input) and moves no rows.

Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and ``@done``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _ml import collectives, on_every_rank, whole
from _mp import emit, expect, raises
from gpupart.ml import LinearRegression, NotFittedError, Ridge
from sklearn import linear_model as sk
from sklearn.exceptions import NotFittedError as SkNotFitted

import gpupart

CASES: list[tuple[str, Callable[[], Any]]] = []


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


# -- helpers ----------------------------------------------------------------------------------


def data(n: int, p: int, targets: int = 0, seed: int = 0, offset: float = 0.0) -> tuple:
    """``X`` (n x p) and ``y`` (1-d when ``targets`` is 0, else n x targets), seeded."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * rng.uniform(0.5, 3, p) + offset
    coef = rng.standard_normal((p, max(targets, 1)))
    y = X @ coef + 0.3 * rng.standard_normal((n, max(targets, 1))) + 2.0
    return X, (y[:, 0] if targets == 0 else y)


def close(where: str, got: Any, want: Any, rtol: float) -> None:
    got, want = np.asarray(got), np.asarray(want)
    expect(got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}")
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1.0)
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale if want.size else 0.0
    expect(err <= rtol, f"{where}: relative error {err:.3g} > {rtol:.3g}")


def same_model(where: str, ours: Any, ref: Any, rtol: float) -> None:
    expect(ours.coef_.dtype == ref.coef_.dtype, f"{where}: coef_ dtype {ours.coef_.dtype}")
    close(f"{where} coef_", ours.coef_, ref.coef_, rtol)
    expect(
        type(ours.intercept_) is type(ref.intercept_),
        f"{where}: intercept_ {type(ours.intercept_)} != {type(ref.intercept_)}",
    )
    if isinstance(ref.intercept_, np.ndarray):
        expect(ours.intercept_.dtype == ref.intercept_.dtype, f"{where}: intercept_ dtype")
    close(f"{where} intercept_", ours.intercept_, ref.intercept_, rtol)
    expect(ours.n_features_in_ == ref.n_features_in_, f"{where}: n_features_in_")


def same_predictions(where: str, ours: Any, ref: Any, Xd: Any, X: np.ndarray, rtol: float) -> None:
    got = ours.predict(Xd)
    want = ref.predict(X)
    expect(whole(got).dtype == want.dtype, f"{where}: predict dtype {whole(got).dtype}")
    close(f"{where} predict", whole(got), want, rtol)


def my_rows(n: int) -> slice:
    """This rank's share of ``n`` rows; rank 0 holds none when there are several ranks."""
    if size == 1:
        return slice(0, n)
    cuts = np.linspace(0, n, size).astype(int)
    if rank == 0:
        return slice(0, 0)
    return slice(cuts[rank - 1], cuts[rank])


class Producer:
    """Any object with a ``__partitioned__`` property."""

    def __init__(self, parted: dict) -> None:
        self._parted = parted

    @property
    def __partitioned__(self) -> dict:
        return self._parted


class Ref:
    """A Dask future stand-in: the data behind a reference, resolved by ``get``."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value


def heat_style(X: np.ndarray) -> Producer:
    """One partition per rank (uneven, the last rank's maybe empty), data only on its owner."""
    n = X.shape[0]
    counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
    if size > 1:
        counts = [*counts[:-2], counts[-2] + counts[-1], 0]
    offs = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    parts = {
        (i, 0): {
            "start": (int(offs[i]), 0),
            "shape": (int(counts[i]), X.shape[1]),
            "data": X[offs[i] : offs[i + 1]].copy() if i == rank else None,
            "location": [i],
        }
        for i in range(size)
    }
    return Producer(
        {
            "shape": X.shape,
            "partition_tiling": (size, 1),
            "partitions": parts,
            "locals": [(rank, 0)],
            "get": lambda h: h,
        }
    )


def dask_style(X: np.ndarray) -> Producer:
    """No ``locals``; a 3 x 2 grid of references resolved with ``get``; rank ints as places."""
    n, p = X.shape
    rows = [0, n // 3, n // 2, n]
    cols = [0, p // 2, p]
    parts = {}
    for i in range(3):
        for j in range(2):
            parts[(i, j)] = {
                "start": (rows[i], cols[j]),
                "shape": (rows[i + 1] - rows[i], cols[j + 1] - cols[j]),
                "data": Ref(X[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].copy()),
                "location": [(i + 2 * j) % size],
            }

    def get(refs: Any) -> Any:
        return [r.value for r in refs] if isinstance(refs, list) else refs.value

    return Producer({"shape": X.shape, "partition_tiling": (3, 2), "partitions": parts, "get": get})


def layouts(X: np.ndarray) -> Iterator[tuple[str, Any]]:
    """``X`` distributed in every way an estimator takes."""
    n, p = X.shape
    yield "uneven tiles", gpupart.asarray(X, tiles=(7, p))
    yield "cut along columns", gpupart.asarray(X, tiles=(9, max(p // 2, 1)))
    yield "a rank with no rows", gpupart.from_local(X[my_rows(n)])
    names = [f"f{j}" for j in range(p)]
    yield "DistFrame", gpupart.from_pandas(pd.DataFrame(X, columns=names))
    yield "heat-style dict", heat_style(X)
    yield "dask-style dict", dask_style(X)
    if size == 1:
        yield "NumPy", X


def y_tiled(y: np.ndarray) -> Any:
    """``y`` tiled unlike every ``X`` layout."""
    return gpupart.asarray(y, tiles=(11, *y.shape[1:]))


# == LinearRegression =========================================================================


@case
def linear_regression_every_layout() -> None:
    X, y = data(101, 4)
    ref = sk.LinearRegression().fit(X, y)
    for label, Xd in layouts(X):
        ours = LinearRegression().fit(Xd, y_tiled(y))
        same_model(label, ours, ref, 1e-10)
        expect(ours.rank_ == ref.rank_, f"{label}: rank_ {ours.rank_}")
        close(f"{label} singular_", ours.singular_, ref.singular_, 1e-10)
        same_predictions(label, ours, ref, Xd, X, 1e-10)
        close(f"{label} score", ours.score(Xd, y_tiled(y)), ref.score(X, y), 1e-10)
        expect(isinstance(ours.score(Xd, y_tiled(y)), float), "score is a Python float")
        rt.barrier()


@case
def linear_regression_sample_weight() -> dict:
    X, y = data(90, 3, seed=1)
    w = np.random.default_rng(5).uniform(0, 3, 90)
    w[::7] = 0.0
    ref = sk.LinearRegression().fit(X, y, sample_weight=w)
    Xd = gpupart.asarray(X, tiles=(13, 3))
    with collectives(rt) as counts:
        ours = LinearRegression().fit(Xd, y_tiled(y), sample_weight=gpupart.asarray(w, tiles=(8,)))
    same_model("weighted", ours, ref, 1e-10)
    # X, y and the weights checked for NaN (one all-reduce each), then the two statistics
    expect(counts["allreduce"] == 5, f"{counts['allreduce']} all-reduces, expected 5")
    expect(counts["exchange"] == 0, f"rows moved: {counts}")
    close(
        "weighted score",
        ours.score(Xd, y_tiled(y), sample_weight=gpupart.from_local(w[my_rows(90)])),
        ref.score(X, y, sample_weight=w),
        1e-10,
    )
    scalar = LinearRegression().fit(Xd, y_tiled(y), sample_weight=2.5)
    same_model("scalar weight", scalar, sk.LinearRegression().fit(X, y, sample_weight=2.5), 1e-10)
    return {"collectives": counts}


@case
def linear_regression_two_allreduces_of_statistics() -> dict:
    X, y = data(60, 5, seed=2)
    Xd, yd = gpupart.asarray(X, tiles=(8, 5)), gpupart.asarray(y, tiles=(8,))
    with collectives(rt) as counts:
        LinearRegression().fit(Xd, yd)
    # one finite check for X, one for y, then the means and the centred Gram
    expect(counts["allreduce"] == 4, f"{counts['allreduce']} all-reduces, expected 4")
    expect(counts["exchange"] == 0 and counts["alltoall"] == 0, f"rows moved: {counts}")
    return {"collectives": counts}


@case
def linear_regression_float32() -> None:
    X, y = data(120, 4, seed=3)
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    ref = sk.LinearRegression().fit(X32, y32)
    for label, Xd in [("float32 tiles", gpupart.asarray(X32, tiles=(17, 4)))]:
        ours = LinearRegression().fit(Xd, y_tiled(y))  # y float64: cast to X's dtype
        same_model(label, ours, ref, 1e-5)
        expect(type(ours.intercept_) is np.float32, f"{label}: {type(ours.intercept_)}")
        same_predictions(label, ours, ref, Xd, X32, 1e-5)
    ints = LinearRegression().fit(gpupart.asarray(np.round(X * 3).astype(np.int64)), y_tiled(y))
    expect(ints.coef_.dtype == np.float64, "integer X fits in float64")


@case
def linear_regression_multi_target() -> None:
    X, Y = data(77, 3, targets=2, seed=4)
    ref = sk.LinearRegression().fit(X, Y)
    Xd = gpupart.from_local(X[my_rows(77)])
    ours = LinearRegression().fit(Xd, y_tiled(Y))
    same_model("2 targets", ours, ref, 1e-10)
    expect(ours.coef_.shape == (2, 3), f"coef_ shape {ours.coef_.shape}")
    same_predictions("2 targets", ours, ref, Xd, X, 1e-10)
    close("2 targets score", ours.score(Xd, y_tiled(Y)), ref.score(X, Y), 1e-10)
    one = LinearRegression().fit(Xd, y_tiled(Y[:, :1]))
    ref1 = sk.LinearRegression().fit(X, Y[:, :1])
    same_model("(n, 1) target", one, ref1, 1e-10)
    same_predictions("(n, 1) target", one, ref1, Xd, X, 1e-10)


@case
def linear_regression_rank_deficient_is_minimum_norm() -> None:
    X, y = data(80, 3, seed=5)
    for label, Xr in [
        ("duplicated column", np.c_[X, X[:, 1]]),
        ("constant column", np.c_[X, np.full(80, 4.0)]),
        ("more features than rows", np.c_[X, X * 2.0][:5]),
    ]:
        yr = y[: Xr.shape[0]]
        ref = sk.LinearRegression().fit(Xr, yr)
        ours = LinearRegression().fit(gpupart.asarray(Xr, tiles=(3, Xr.shape[1])), y_tiled(yr))
        same_model(label, ours, ref, 1e-8)
        expect(ours.rank_ == ref.rank_, f"{label}: rank_ {ours.rank_} != {ref.rank_}")
        same_predictions(label, ours, ref, gpupart.asarray(Xr), Xr, 1e-8)


@case
def linear_regression_no_intercept_and_large_offset() -> None:
    X, y = data(70, 3, seed=6)
    ref = sk.LinearRegression(fit_intercept=False).fit(X, y)
    ours = LinearRegression(fit_intercept=False).fit(gpupart.asarray(X, tiles=(9, 3)), y_tiled(y))
    same_model("no intercept", ours, ref, 1e-10)
    expect(ours.intercept_ == 0.0 and type(ours.intercept_) is float, "intercept_ is 0.0")
    # features around 1e6 with unit spread: the Gram is formed from globally centred rows
    Xo, yo = data(70, 3, seed=6, offset=1e6)
    ref = sk.LinearRegression().fit(Xo, yo)
    ours = LinearRegression().fit(gpupart.asarray(Xo, tiles=(9, 3)), y_tiled(yo))
    close("offset 1e6 coef_", ours.coef_, ref.coef_, 1e-7)


@case
def linear_output_types() -> None:
    X, y = data(40, 2, seed=7)
    Xd = gpupart.asarray(X, tiles=(6, 2))
    ref = sk.LinearRegression().fit(X, y).predict(X)
    got = LinearRegression().fit(Xd, y_tiled(y)).predict(Xd)
    expect(isinstance(got, gpupart.DistArray), f"input: {type(got)}")
    expect(list(got.tiling.boundaries[0]) == list(Xd.tiling.boundaries[0]), "lined up with X")
    expect(all(got.owners[i] == Xd.owners[i, 0] for i in range(got.owners.shape[0])), "owners")
    for kind, cls in [("numpy", np.ndarray), ("pandas", pd.Series), ("gpupart", gpupart.DistArray)]:
        out = LinearRegression(output_type=kind).fit(Xd, y_tiled(y)).predict(Xd)
        expect(isinstance(out, cls), f"{kind}: {type(out)}")
        close(kind, whole(out), ref, 1e-10)
    frame = gpupart.from_pandas(pd.DataFrame(X, columns=["a", "b"]))
    fitted = LinearRegression().fit(frame, y_tiled(y))
    expect(list(fitted.feature_names_in_) == ["a", "b"], f"{fitted.feature_names_in_}")
    expect(not hasattr(LinearRegression().fit(Xd, y_tiled(y)), "feature_names_in_"), "names")


# == Ridge ====================================================================================


@case
def ridge_every_layout() -> None:
    X, y = data(95, 4, seed=8)
    ref = sk.Ridge(alpha=3.0).fit(X, y)
    for label, Xd in layouts(X):
        ours = Ridge(alpha=3.0).fit(Xd, y_tiled(y))
        same_model(label, ours, ref, 1e-10)
        same_predictions(label, ours, ref, Xd, X, 1e-10)
        close(f"{label} score", ours.score(Xd, y_tiled(y)), ref.score(X, y), 1e-10)
        expect(ours.solver_ == "cholesky", f"{label}: solver_ {ours.solver_}")
        rt.barrier()


@case
def ridge_weights_targets_and_alphas() -> None:
    X, Y = data(88, 5, targets=3, seed=9)
    w = np.random.default_rng(9).uniform(0.1, 2, 88)
    Xd = gpupart.from_local(X[my_rows(88)])
    wd = gpupart.asarray(w, tiles=(10,))
    for alpha in [0.5, [0.1, 1.0, 10.0]]:
        ref = sk.Ridge(alpha=alpha).fit(X, Y, sample_weight=w)
        ours = Ridge(alpha=alpha).fit(Xd, y_tiled(Y), sample_weight=wd)
        same_model(f"alpha {alpha}", ours, ref, 1e-10)
        same_predictions(f"alpha {alpha}", ours, ref, Xd, X, 1e-10)
    one = Ridge().fit(Xd, y_tiled(Y[:, :1]))
    ref = sk.Ridge().fit(X, Y[:, :1])
    same_model("(n, 1) target", one, ref, 1e-10)
    same_predictions("(n, 1) target", one, ref, Xd, X, 1e-10)
    ref = sk.Ridge(alpha=2.0, fit_intercept=False).fit(X, Y[:, 0])
    ours = Ridge(alpha=2.0, fit_intercept=False).fit(Xd, y_tiled(Y[:, 0]))
    same_model("no intercept", ours, ref, 1e-10)


@case
def ridge_float32_and_alpha_zero() -> None:
    X, y = data(64, 3, seed=10)
    X32 = X.astype(np.float32)
    ref = sk.Ridge(alpha=1.5).fit(X32, y)
    ours = Ridge(alpha=1.5).fit(gpupart.asarray(X32, tiles=(10, 3)), y_tiled(y))
    same_model("float32", ours, ref, 1e-5)
    same_predictions("float32", ours, ref, gpupart.asarray(X32), X32, 1e-5)
    ref = sk.Ridge(alpha=0.0).fit(X, y)  # plain least squares
    ours = Ridge(alpha=0.0).fit(gpupart.asarray(X, tiles=(10, 3)), y_tiled(y))
    same_model("alpha 0", ours, ref, 1e-10)


# == errors on every rank =====================================================================


@case
def errors_on_every_rank() -> None:
    X, y = data(30, 3, seed=11)
    Xd, yd = gpupart.asarray(X, tiles=(7, 3)), gpupart.asarray(y, tiles=(5,))
    bad, worse = X.copy(), y.copy()
    bad[29, 2] = np.nan
    worse[0] = np.inf
    for est in (LinearRegression(), Ridge()):
        name = type(est).__name__
        on_every_rank(rt, ValueError, lambda e=est: e.fit(gpupart.asarray(y), yd), "2D")
        on_every_rank(rt, ValueError, lambda e=est: e.fit(gpupart.asarray(bad), yd), "NaN")
        on_every_rank(rt, ValueError, lambda e=est: e.fit(Xd, gpupart.asarray(worse)), "infinity")
        on_every_rank(
            rt,
            ValueError,
            lambda e=est: e.fit(Xd, gpupart.asarray(y[:20])),
            "inconsistent",
            "30, 20",
        )
        fresh = type(est)()
        exc = raises(NotFittedError, lambda f=fresh: f.predict(Xd), name, "not fitted")
        expect(isinstance(exc, SkNotFitted), "also scikit-learn's NotFittedError")
        raises(NotFittedError, lambda f=fresh: f.score(Xd, yd), "not fitted")
        rt.barrier()
        est.fit(Xd, yd)
        on_every_rank(
            rt,
            ValueError,
            lambda e=est: e.predict(gpupart.asarray(X[:, :2])),
            "X has 2 features",
            f"{name} is expecting 3",
        )
        on_every_rank(
            rt, ValueError, lambda e=est: type(e)(output_type="list").fit(Xd, yd), "output_type"
        )
    on_every_rank(
        rt,
        ValueError,
        lambda: LinearRegression().fit(Xd, yd, sample_weight=gpupart.asarray(-np.ones(30))),
        "Negative values",
    )
    zeros = gpupart.asarray(np.zeros(30), tiles=(4,))
    on_every_rank(rt, ValueError, lambda: Ridge().fit(Xd, yd, sample_weight=zeros), "non-zero")
    on_every_rank(rt, ValueError, lambda: LinearRegression().fit(Xd, None), "requires y")
    on_every_rank(rt, ValueError, lambda: Ridge(alpha=-1.0).fit(Xd, yd), "alpha")
    on_every_rank(rt, ValueError, lambda: Ridge(alpha=[1.0, 2.0]).fit(Xd, yd), "penalties")
    on_every_rank(rt, ValueError, lambda: Ridge(solver="sag").fit(Xd, yd), "solver", "'sag'")


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
