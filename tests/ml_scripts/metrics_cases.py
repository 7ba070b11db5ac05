"""gpupart.ml StandardScaler, metrics and train_test_split against scikit-learn, any job size.

Run as ``gpupart run -n N -- python metrics_cases.py``. Every rank builds the same NumPy data
(seeded) and distributes it as ``linear_cases.py`` does (its layout helpers are shared):
the scaler's statistics and transforms, the metrics of targets tiled unlike predictions and
weights, and the split's sizes, alignment and row choice are compared with scikit-learn.
The test indices a seeded split picks are emitted (``@split``): the pytest file checks they
are the same at every job size. Errors must be raised on every rank.

Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and ``@done``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import linear_cases as lc
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _ml import collectives, on_every_rank, whole
from _mp import emit, expect, raises
from gpupart.ml import NotFittedError, StandardScaler, metrics, train_test_split
from sklearn import metrics as skm
from sklearn import preprocessing as skp
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.model_selection import train_test_split as sk_split

import gpupart

CASES: list[tuple[str, Callable[[], Any]]] = []
close, layouts = lc.close, lc.layouts


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


def features(n: int, p: int, seed: int = 0, dtype: Any = np.float64) -> np.ndarray:
    """Columns of different scales and offsets, one constant, a few NaNs."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * np.geomspace(1e-3, 1e3, p) + np.linspace(-50, 1e4, p)
    X[:, 1] = 7.25
    X[rng.integers(0, n, 3), 0] = np.nan
    return X.astype(dtype)


def same_scaler(where: str, ours: Any, ref: Any, rtol: float = 1e-12) -> None:
    for att in ("mean_", "var_", "scale_", "n_samples_seen_"):
        got, want = getattr(ours, att), getattr(ref, att)
        if want is None:
            expect(got is None, f"{where}: {att} should be None")
            continue
        got, want = np.asarray(got), np.asarray(want)
        expect(got.dtype == want.dtype, f"{where}: {att} dtype {got.dtype} != {want.dtype}")
        expect(got.shape == want.shape, f"{where}: {att} shape {got.shape} != {want.shape}")
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-30, err_msg=f"{where} {att}")


def same_transform(where: str, got: Any, want: np.ndarray, rtol: float) -> None:
    got = whole(got)
    expect(got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=where)


# == StandardScaler ===========================================================================


@case
def scaler_every_layout() -> None:
    X = features(97, 4)
    ref = skp.StandardScaler().fit(X)
    for label, Xd in layouts(X):
        ours = StandardScaler().fit(Xd)
        same_scaler(label, ours, ref)
        t = ours.transform(Xd)
        same_transform(f"{label} transform", t, ref.transform(X), 1e-9)
        if isinstance(t, gpupart.DistArray):
            rows = ours._rows(Xd, fitting=False).array
            expect(list(t.tiling.boundaries[0]) == list(rows.tiling.boundaries[0]), "lined up")
        same_transform(f"{label} inverse", ours.inverse_transform(ours.transform(Xd)), X, 1e-9)
        same_transform(
            f"{label} fit_transform", StandardScaler().fit_transform(Xd), ref.transform(X), 1e-9
        )
        rt.barrier()
    frame = gpupart.from_pandas(pd.DataFrame(X, columns=list("abcd")))
    fitted = StandardScaler().fit(frame)
    expect(list(fitted.get_feature_names_out()) == list("abcd"), "feature names out")


@case
def scaler_options_weights_float32() -> dict:
    X = features(83, 3, seed=1)
    w = np.random.default_rng(1).uniform(0, 2, 83)
    Xd = gpupart.from_local(X[lc.my_rows(83)])
    wd = gpupart.asarray(w, tiles=(9,))
    for kw in [
        {},
        {"with_mean": False},
        {"with_std": False},
        {"with_mean": False, "with_std": False},
    ]:
        for weighted in (False, True):
            fit_kw = {"sample_weight": wd} if weighted else {}
            ref = skp.StandardScaler(**kw).fit(X, **({"sample_weight": w} if weighted else {}))
            ours = StandardScaler(**kw).fit(Xd, **fit_kw)
            same_scaler(f"{kw} weighted={weighted}", ours, ref)
            same_transform(f"{kw} transform", ours.transform(Xd), ref.transform(X), 1e-9)
    X32 = X.astype(np.float32)
    ref = skp.StandardScaler().fit(X32, sample_weight=w)
    ours = StandardScaler().fit(gpupart.asarray(X32, tiles=(10, 3)), sample_weight=wd)
    same_scaler("float32", ours, ref, rtol=1e-7)
    same_transform("float32", ours.transform(gpupart.asarray(X32)), ref.transform(X32), 1e-5)
    with collectives(rt) as counts:
        StandardScaler().fit(gpupart.asarray(X, tiles=(10, 3)))
    # the infinity check, the counts and sums, the centred sums of squares
    expect(counts["allreduce"] == 3, f"{counts['allreduce']} all-reduces, expected 3")
    expect(counts["exchange"] == 0, f"rows moved: {counts}")
    return {"collectives": counts}


@case
def scaler_errors_on_every_rank() -> None:
    X = features(30, 3, seed=2)
    bad = X.copy()
    bad[4, 2] = np.inf
    on_every_rank(rt, ValueError, lambda: StandardScaler().fit(gpupart.asarray(bad)), "infinity")
    on_every_rank(rt, ValueError, lambda: StandardScaler().fit(gpupart.asarray(X[:, 0])), "2D")
    zeros = gpupart.asarray(np.zeros(30), tiles=(7,))
    on_every_rank(
        rt,
        ValueError,
        lambda: StandardScaler().fit(gpupart.asarray(X), sample_weight=zeros),
        "non-zero",
    )
    raises(NotFittedError, lambda: StandardScaler().transform(gpupart.asarray(X)), "not fitted")
    rt.barrier()
    fitted = StandardScaler().fit(gpupart.asarray(X, tiles=(7, 3)))
    on_every_rank(
        rt,
        ValueError,
        lambda: fitted.transform(gpupart.asarray(X[:, :2])),
        "X has 2 features",
        "expecting 3",
    )


# == metrics ==================================================================================


@case
def metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    yt, w = rng.standard_normal(91) * 4 + 10, rng.uniform(0, 2, 91)
    yp = yt + rng.standard_normal(91)
    truth, pred = gpupart.asarray(yt, tiles=(13,)), gpupart.from_local(yp[lc.my_rows(91)])
    weights = gpupart.asarray(w, tiles=(40,))
    for name in ("r2_score", "mean_squared_error"):
        ours, ref = getattr(metrics, name), getattr(skm, name)
        got = ours(truth, pred)
        expect(type(got) is float, f"{name}: {type(got)}")
        close(name, got, ref(yt, yp), 1e-12)
        close(
            f"{name} weighted",
            ours(truth, pred, sample_weight=weights),
            ref(yt, yp, sample_weight=w),
            1e-12,
        )
    Yt = rng.standard_normal((91, 3)) * [1, 10, 100]
    Yp = Yt + rng.standard_normal((91, 3))
    T, P = gpupart.asarray(Yt, tiles=(20, 2)), gpupart.asarray(Yp, tiles=(7, 3))
    for mo in ("raw_values", "uniform_average", "variance_weighted", [0.2, 0.3, 0.5]):
        close(
            f"r2 {mo}",
            metrics.r2_score(T, P, multioutput=mo),
            skm.r2_score(Yt, Yp, multioutput=mo),
            1e-12,
        )
        if mo == "variance_weighted":
            continue  # r2 only
        close(
            f"mse {mo}",
            metrics.mean_squared_error(T, P, multioutput=mo, sample_weight=weights),
            skm.mean_squared_error(Yt, Yp, multioutput=mo, sample_weight=w),
            1e-12,
        )
    labels_t = rng.integers(0, 4, 91)
    labels_p = np.where(rng.random(91) < 0.7, labels_t, rng.integers(0, 4, 91))
    lt, lp = gpupart.asarray(labels_t, tiles=(11,)), gpupart.from_local(labels_p[lc.my_rows(91)])
    got = metrics.accuracy_score(lt, lp)
    expect(type(got) is float, f"accuracy: {type(got)}")
    close("accuracy", got, skm.accuracy_score(labels_t, labels_p), 1e-15)
    close(
        "accuracy weighted",
        metrics.accuracy_score(lt, lp, sample_weight=weights),
        skm.accuracy_score(labels_t, labels_p, sample_weight=w),
        1e-12,
    )
    close(
        "accuracy count",
        metrics.accuracy_score(lt, lp, normalize=False),
        skm.accuracy_score(labels_t, labels_p, normalize=False),
        0,
    )
    multi_t, multi_p = rng.integers(0, 2, (91, 3)), rng.integers(0, 2, (91, 3))
    multi_p[::2] = multi_t[::2]
    close(
        "subset accuracy",
        metrics.accuracy_score(gpupart.asarray(multi_t, tiles=(9, 3)), gpupart.asarray(multi_p)),
        skm.accuracy_score(multi_t, multi_p),
        1e-15,
    )
    frame = gpupart.from_pandas(pd.DataFrame({"y": yt}))
    close("DistFrame y_true", metrics.r2_score(frame, pred), skm.r2_score(yt, yp), 1e-12)
    close(
        "heat-style y_pred",
        metrics.mean_squared_error(truth, lc.heat_style(yp[:, None])),
        skm.mean_squared_error(yt, yp),
        1e-12,
    )


@case
def metrics_edge_cases_and_collectives() -> dict:
    const = np.full(20, 3.0)
    off = const + np.arange(20) * 0.1
    for yt, yp in [(const, const), (const, off)]:
        for ff in (True, False):
            with np.errstate(divide="ignore", invalid="ignore"):
                want = skm.r2_score(yt, yp, force_finite=ff)
            got = metrics.r2_score(
                gpupart.asarray(yt, tiles=(3,)), gpupart.asarray(yp), force_finite=ff
            )
            expect(got == want or (np.isnan(got) and np.isnan(want)), f"r2 {ff}: {got} != {want}")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = metrics.r2_score(gpupart.asarray(np.ones(1)), gpupart.asarray(np.ones(1)))
    expect(np.isnan(got), "one sample: nan")
    expect(any(issubclass(w.category, UndefinedMetricWarning) for w in seen), "warned")
    yt = np.random.default_rng(4).standard_normal(50)
    with collectives(rt) as counts:
        metrics.mean_squared_error(gpupart.asarray(yt, tiles=(7,)), gpupart.asarray(yt * 2))
    # a finite check for each input, then one all-reduce of the sums; no rows moved
    expect(counts["allreduce"] == 3, f"{counts['allreduce']} all-reduces, expected 3")
    expect(counts["exchange"] == 0, f"{counts}")
    return {"collectives": counts}


@case
def metrics_errors_on_every_rank() -> None:
    yt = np.arange(10.0)
    T = gpupart.asarray(yt, tiles=(3,))
    on_every_rank(
        rt,
        ValueError,
        lambda: metrics.r2_score(T, gpupart.asarray(yt[:8])),
        "inconsistent",
        "[10, 8]",
    )
    on_every_rank(
        rt,
        ValueError,
        lambda: metrics.mean_squared_error(T, gpupart.asarray(np.ones((10, 2)))),
        "different number of output",
    )
    bad = yt.copy()
    bad[9] = np.nan
    on_every_rank(
        rt, ValueError, lambda: metrics.mean_squared_error(T, gpupart.asarray(bad)), "NaN"
    )
    on_every_rank(
        rt, ValueError, lambda: metrics.accuracy_score(T, gpupart.asarray(yt + 0.5)), "continuous"
    )
    on_every_rank(
        rt, ValueError, lambda: metrics.r2_score(T, T, multioutput="median"), "multioutput"
    )


# == train_test_split =========================================================================


def ids(result: Any) -> np.ndarray:
    """The global row ids a split kept (column 0 of the id-encoding arrays)."""
    got = whole(result)
    return (got[:, 0] if got.ndim == 2 else got).astype(np.int64)


@case
def split_sizes_follow_scikit_learn() -> dict:
    n = 103
    X = np.c_[np.arange(n), np.arange(n) * 10.0]
    Xd = gpupart.asarray(X, tiles=(17, 2))
    picked = {}
    for kw in [
        {},
        {"test_size": 0.33},
        {"train_size": 0.5},
        {"test_size": 7, "train_size": 20},
        {"test_size": 0.1, "train_size": 0.3},
    ]:
        ours = train_test_split(Xd, random_state=12, **kw)
        ref = sk_split(X, random_state=12, **kw)
        for side, got, want in zip(("train", "test"), ours, ref, strict=True):
            expect(got.shape == want.shape, f"{kw} {side}: shape {got.shape} != {want.shape}")
        tr, te = ids(ours[0]), ids(ours[1])
        expect(not set(tr) & set(te), f"{kw}: train and test overlap")
        expect(list(tr) == sorted(tr) and list(te) == sorted(te), f"{kw}: row order kept")
        np.testing.assert_array_equal(whole(ours[0])[:, 1], tr * 10.0)
        picked[str(kw)] = te.tolist()
    again = train_test_split(gpupart.from_local(X[lc.my_rows(n)]), random_state=12)
    expect(ids(again[1]).tolist() == picked["{}"], "the same rows under another layout")
    other = train_test_split(Xd, random_state=13)
    expect(ids(other[1]).tolist() != picked["{}"], "another seed picks other rows")
    emit("split", rank=rank, picked=picked)
    return {}


@case
def split_keeps_arrays_lined_up_and_rows_in_place() -> dict:
    n = 64
    X = np.c_[np.arange(n, dtype=np.float64), np.random.default_rng(5).standard_normal(n)]
    y = np.arange(n)
    frame = gpupart.from_pandas(pd.DataFrame({"id": np.arange(n), "v": np.arange(n) * 2.0}))
    Xd = gpupart.from_local(X[lc.my_rows(n)])
    with collectives(rt) as counts:
        out = train_test_split(
            Xd,
            gpupart.asarray(y, tiles=(11,)),
            frame,
            frame["v"],
            lc.heat_style(X),
            test_size=0.25,
            random_state=0,
        )
    expect(counts["exchange"] == 0 and counts["alltoall"] == 0, f"rows moved: {counts}")
    expect(len(out) == 10, f"{len(out)} outputs")
    for side in (0, 1):
        want = ids(out[side])
        np.testing.assert_array_equal(whole(out[2 + side]), want)
        np.testing.assert_array_equal(out[4 + side].to_pandas()["id"].to_numpy(), want)
        np.testing.assert_array_equal(out[6 + side].to_pandas().to_numpy(), want * 2.0)
        np.testing.assert_array_equal(ids(out[8 + side]), want)
        np.testing.assert_array_equal(whole(out[side])[:, 1], X[want, 1])
        part = out[side]
        expect((part.owners.ravel() == Xd.owners.ravel()).all(), "the input's owners kept")
        for pos, tile in part.local_tiles.items():  # every kept row stayed on its rank
            mine = Xd.local_tiles[pos][:, 0]
            expect(np.isin(tile[:, 0], mine).all(), f"rank {rank}: a row came from elsewhere")
    ordered = train_test_split(Xd, gpupart.asarray(y, tiles=(5,)), shuffle=False, test_size=0.2)
    ref = sk_split(X, y, shuffle=False, test_size=0.2)
    for got, want in zip(ordered, ref, strict=True):
        np.testing.assert_array_equal(whole(got), want)
    fresh = train_test_split(Xd, test_size=0.5)  # random_state=None: rank 0's draw for all
    mine = ids(fresh[1]).tolist()
    expect(all(other == mine for other in rt.allgather(mine)), "ranks agree without a seed")
    return {"collectives": counts}


@case
def split_local_inputs_and_errors() -> None:
    n = 30
    X = np.arange(2 * n).reshape(n, 2)
    if size == 1:
        df = pd.DataFrame(X, index=np.arange(n) + 100)
        got = train_test_split(df, list(range(n)), random_state=1)
        expect(
            isinstance(got[0], pd.DataFrame) and isinstance(got[2], list),
            f"{[type(g) for g in got]}",
        )
        np.testing.assert_array_equal(got[0].index.to_numpy() - 100, got[2])
        np.testing.assert_array_equal(got[0].to_numpy()[:, 0] // 2, got[2])
    else:
        on_every_rank(rt, TypeError, lambda: train_test_split(X), "arrays[0]", "__partitioned__")
    Xd = gpupart.asarray(X)
    on_every_rank(rt, ValueError, lambda: train_test_split(), "At least one array")
    on_every_rank(
        rt,
        ValueError,
        lambda: train_test_split(Xd, gpupart.asarray(np.arange(5))),
        "inconsistent",
        "[30, 5]",
    )
    on_every_rank(rt, ValueError, lambda: train_test_split(Xd, test_size=1.5), "test_size=1.5")
    on_every_rank(rt, ValueError, lambda: train_test_split(Xd, test_size=30), "test_size=30")
    on_every_rank(
        rt, ValueError, lambda: train_test_split(Xd, test_size=0.6, train_size=0.6), "The sum"
    )
    on_every_rank(
        rt, ValueError, lambda: train_test_split(Xd, test_size=25, train_size=10), "smaller than"
    )
    on_every_rank(
        rt, ValueError, lambda: train_test_split(Xd, test_size="a"), "Invalid value for test_size"
    )
    on_every_rank(rt, ValueError, lambda: train_test_split(Xd, random_state="x"), "random_state")


# == main =====================================================================================


rt: Any = None
rank = size = 0


def main() -> None:
    global rt, rank, size
    rt = gpupart.init(timeout=60)
    rank, size = rt.rank, rt.size
    lc.rt, lc.rank, lc.size = rt, rank, size
    emit("plan", rank=rank, cases=[name for name, _ in CASES])
    for name, fn in CASES:
        extra = fn() or {}
        rt.barrier()
        emit("case", name=name, rank=rank, **extra)
    emit("done", rank=rank, size=size)
    rt.close()


if __name__ == "__main__":
    main()
