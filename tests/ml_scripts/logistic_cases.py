"""gpupart.ml.LogisticRegression checked against scikit-learn on the same data, at any job size.

Run as ``gpupart run -n N -- python logistic_cases.py``. Every rank builds the same NumPy data
(seeded), distributes it (uneven tiles, X cut along columns too, y tiled differently, a rank
with no rows, a DistFrame, SPMD and Dask-style ``__partitioned__`` dicts), fits and compares
coefficients, predictions, probabilities and scores with scikit-learn's ``LogisticRegression``
fitted on the whole data. Errors must be raised on every rank. The runtime's collectives are
counted: one L-BFGS evaluation is exactly one all-reduce and nothing else.

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
from _ml import collectives, dask_style, my_rows, on_every_rank, spmd_rows, whole
from _mp import emit, expect
from gpupart.ml import LogisticRegression, NotFittedError
from gpupart.ml import logistic as logistic_module
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression as SkLogistic

import gpupart

CASES: list[tuple[str, Callable[[], Any]]] = []
TIGHT = {"tol": 1e-10, "max_iter": 1000}


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


# -- helpers ----------------------------------------------------------------------------------


def data(n: int, m: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n, m, n_informative=min(m, 4), n_redundant=0, n_classes=k, random_state=seed
    )
    return X, y


def sklearn_fit(X: np.ndarray, y: np.ndarray, sample_weight: Any = None, **kw: Any) -> Any:
    if kw.pop("penalty", "l2") is None:
        kw["C"] = np.inf
    return SkLogistic(**kw).fit(X, y, sample_weight=sample_weight)


def close(where: str, got: Any, want: Any, rtol: float) -> None:
    got, want = np.asarray(got), np.asarray(want)
    expect(got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}")
    scale = max(float(np.abs(want).max()), 1.0)
    err = float(np.abs(got - want).max()) / scale
    expect(err <= rtol, f"{where}: relative error {err:.3g} > {rtol:.3g}")


def same_model(where: str, ours: Any, ref: Any, rtol: float = 1e-6) -> None:
    expect(np.array_equal(ours.classes_, ref.classes_), f"{where}: classes {ours.classes_}")
    expect(ours.coef_.dtype == ref.coef_.dtype, f"{where}: coef dtype {ours.coef_.dtype}")
    close(f"{where} coef_", ours.coef_, ref.coef_, rtol)
    close(f"{where} intercept_", ours.intercept_, ref.intercept_, rtol)
    expect(ours.n_iter_.shape == (1,), f"{where}: n_iter_ shape {ours.n_iter_.shape}")


def same_predictions(where: str, ours: Any, ref: Any, Xd: Any, X: np.ndarray, rtol: float) -> None:
    np.testing.assert_array_equal(whole(ours.predict(Xd)), ref.predict(X), err_msg=where)
    close(f"{where} proba", whole(ours.predict_proba(Xd)), ref.predict_proba(X), rtol)
    close(f"{where} log proba", whole(ours.predict_log_proba(Xd)), ref.predict_log_proba(X), rtol)
    close(f"{where} decision", whole(ours.decision_function(Xd)), ref.decision_function(X), rtol)


# == fits against scikit-learn ================================================================


@case
def binary_uneven_tiles_y_tiled_differently() -> None:
    X, y = data(203, 5, 2)
    Xd = gpupart.asarray(X, tiles=(7, 5))
    yd = gpupart.asarray(y, tiles=(11,))
    ours = LogisticRegression(C=0.7, **TIGHT).fit(Xd, yd)
    ref = sklearn_fit(X, y, C=0.7, **TIGHT)
    same_model("binary", ours, ref)
    expect(ours.coef_.shape == (1, 5) and ours.intercept_.shape == (1,), "binary shapes")
    same_predictions("binary", ours, ref, Xd, X, 1e-6)
    pred = ours.predict(Xd)
    expect(isinstance(pred, gpupart.DistArray), f"predict returned {type(pred)}")
    expect(pred.tiling.boundaries[0] == Xd.tiling.boundaries[0], "predict lined up with X")
    got = ours.score(Xd, yd)
    expect(abs(got - ref.score(X, y)) < 1e-12, f"score {got} != {ref.score(X, y)}")


@case
def multiclass_columns_cut_too() -> None:
    X, y = data(157, 6, 3, seed=1)
    Xd = gpupart.asarray(X, tiles=(13, 4))  # columns cut: repartitioned by rows once
    yd = gpupart.asarray(y, tiles=(40,))
    ours = LogisticRegression(**TIGHT).fit(Xd, yd)
    ref = sklearn_fit(X, y, **TIGHT)
    same_model("multinomial", ours, ref)
    expect(ours.coef_.shape == (3, 6) and ours.intercept_.shape == (3,), "multinomial shapes")
    same_predictions("multinomial", ours, ref, Xd, X, 1e-6)
    expect(abs(ours.score(Xd, yd) - ref.score(X, y)) < 1e-12, "multinomial score")


@case
def rank_with_no_rows_and_labels_not_from_zero() -> None:
    X, y = data(120, 4, 4, seed=2)
    labels = np.array([-3, 7, 10, 42])[y]
    part = my_rows(rt, len(y))
    Xd = gpupart.from_local(X[part])
    yd = gpupart.from_local(labels[part])
    ours = LogisticRegression(C=2.0, **TIGHT).fit(Xd, yd)
    ref = sklearn_fit(X, labels, C=2.0, **TIGHT)
    same_model("empty rank", ours, ref)
    same_predictions("empty rank", ours, ref, Xd, X, 1e-6)
    expect(abs(ours.score(Xd, yd) - ref.score(X, labels)) < 1e-12, "empty-rank score")


@case
def float32_kept_and_close() -> None:
    X, y = data(180, 5, 3, seed=3)
    X32 = X.astype(np.float32)
    Xd = gpupart.asarray(X32, tiles=(17, 5))
    ours = LogisticRegression(C=0.5, **TIGHT).fit(Xd, gpupart.asarray(y))
    ref = sklearn_fit(X32, y, C=0.5, **TIGHT)
    expect(ours.coef_.dtype == np.float32, f"coef dtype {ours.coef_.dtype}")
    # float32 evaluations stop the optimiser at slightly different points
    same_model("float32", ours, ref, rtol=2e-3)
    proba = whole(ours.predict_proba(Xd))
    expect(proba.dtype == np.float32, f"proba dtype {proba.dtype}")
    close("float32 proba", proba, ref.predict_proba(X32), 2e-3)


@case
def sample_weight_and_class_weight() -> None:
    X, y = data(150, 4, 3, seed=4)
    sw = np.random.default_rng(5).uniform(0.1, 3.0, len(y))
    Xd = gpupart.asarray(X, tiles=(23, 4))
    yd = gpupart.asarray(y, tiles=(50,))
    swd = gpupart.asarray(sw, tiles=(31,))
    for cw in [None, "balanced", {0: 1.0, 1: 3.0, 2: 0.5}]:
        ours = LogisticRegression(class_weight=cw, **TIGHT).fit(Xd, yd, sample_weight=swd)
        ref = sklearn_fit(X, y, sample_weight=sw, class_weight=cw, **TIGHT)
        same_model(f"weights {cw}", ours, ref)
    got = ours.score(Xd, yd, sample_weight=swd)
    want = ref.score(X, y, sample_weight=sw)
    expect(abs(got - want) < 1e-12, f"weighted score {got} != {want}")
    # the binary problem with balanced class weights and scalar weights
    yb = (y == 1).astype(np.int64)
    ours = LogisticRegression(class_weight="balanced", **TIGHT).fit(Xd, gpupart.asarray(yb), 2.0)
    ref = sklearn_fit(X, yb, sample_weight=np.full(len(y), 2.0), class_weight="balanced", **TIGHT)
    same_model("binary balanced", ours, ref)


@case
def no_penalty_no_intercept() -> None:
    X, y = data(140, 3, 2, seed=6)
    Xd = gpupart.asarray(X, tiles=(9, 3))
    yd = gpupart.asarray(y)
    for kw in [dict(penalty=None), dict(fit_intercept=False), dict(penalty=None, C=3.0)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sklearn: C ignored without penalty
            ref = sklearn_fit(X, y, **kw, **TIGHT)
        ours = LogisticRegression(**kw, **TIGHT).fit(Xd, yd)
        same_model(f"{kw}", ours, ref, rtol=1e-5)
        if not kw.get("fit_intercept", True):
            expect(np.all(ours.intercept_ == 0), "no intercept")


@case
def frame_input_and_feature_names() -> None:
    X, y = data(90, 3, 3, seed=7)
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=y)
    frame = gpupart.from_pandas(df)
    Xf = frame[["a", "b", "c"]]
    ours = LogisticRegression(**TIGHT).fit(Xf, frame["label"])
    ref = sklearn_fit(df[["a", "b", "c"]], y, **TIGHT)
    same_model("frame", ours, ref)
    expect(list(ours.feature_names_in_) == ["a", "b", "c"], f"{ours.feature_names_in_}")
    np.testing.assert_array_equal(whole(ours.predict(Xf)), ref.predict(df[["a", "b", "c"]]))


@case
def partitioned_dicts_spmd_and_dask() -> None:
    X, y = data(64, 4, 2, seed=8)
    counts = [64 // size] * size
    counts[-1] += 64 - sum(counts)
    ref = sklearn_fit(X, y, **TIGHT)
    yd = gpupart.asarray(y, tiles=(10,))
    for name, producer in [
        ("spmd", spmd_rows(rt, X, counts)),
        ("dask", dask_style(rt, X, [0, 20, 41, 64], [0, 3, 4])),
    ]:
        ours = LogisticRegression(output_type="numpy", **TIGHT).fit(producer, yd)
        same_model(name, ours, ref)
        pred = ours.predict(producer)
        expect(isinstance(pred, np.ndarray), f"{name}: output_type numpy gave {type(pred)}")
        np.testing.assert_array_equal(pred, ref.predict(X), err_msg=name)


@case
def string_labels() -> None:
    X, y = data(75, 3, 3, seed=9)
    names = np.array(["cat", "dog", "emu"])[y]
    ref = sklearn_fit(X, names, **TIGHT)
    Xd = gpupart.asarray(X, tiles=(8, 3))
    ours = LogisticRegression(**TIGHT).fit(Xd, gpupart.asarray(names, tiles=(20,)))
    same_model("strings", ours, ref)
    np.testing.assert_array_equal(whole(ours.predict(Xd)), ref.predict(X))
    if size == 1:  # a local y in a one-process run: objects too
        ours = LogisticRegression(**TIGHT).fit(X, names.astype(object))
        np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    frame = gpupart.from_pandas(pd.DataFrame({"label": names}))
    on_every_rank(
        rt, TypeError, lambda: LogisticRegression().fit(Xd, frame["label"]), "y:", "dtype"
    )


@case
def convergence_warning_and_n_iter() -> None:
    X, y = data(100, 5, 3, seed=10)
    ref_warned = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = sklearn_fit(X, y, max_iter=3)
        ours = LogisticRegression(max_iter=3).fit(gpupart.asarray(X, tiles=(30, 5)), y_dist(y))
    ref_warned = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    expect(len(ref_warned) == 2, f"one ConvergenceWarning each, got {caught}")
    expect(ours.n_iter_.tolist() == ref.n_iter_.tolist() == [3], f"n_iter_ {ours.n_iter_}")
    expect(ours.n_iter_.dtype == ref.n_iter_.dtype, f"n_iter_ dtype {ours.n_iter_.dtype}")
    same_model("3 iterations", ours, ref)
    ours = LogisticRegression().fit(gpupart.asarray(X), y_dist(y))
    ref = sklearn_fit(X, y)
    expect(ours.n_iter_.tolist() == ref.n_iter_.tolist(), f"{ours.n_iter_} != {ref.n_iter_}")


def y_dist(y: np.ndarray) -> Any:
    return gpupart.asarray(y, tiles=(max(len(y) // 3, 1),))


@case
def one_allreduce_per_evaluation() -> None:
    X, y = data(90, 4, 3, seed=11)
    Xd, yd = gpupart.asarray(X, tiles=(11, 4)), y_dist(y)
    calls: list[dict[str, int]] = []
    saved = logistic_module._Objective.loss_gradient

    def counted(self: Any, *args: Any) -> Any:
        with collectives(rt) as counts:
            out = saved(self, *args)
        calls.append(dict(counts))
        return out

    logistic_module._Objective.loss_gradient = counted
    try:
        LogisticRegression().fit(Xd, yd)
    finally:
        logistic_module._Objective.loss_gradient = saved
    expect(len(calls) >= 2, f"{len(calls)} evaluations")
    for counts in calls:
        expect(counts["allreduce"] == 1, f"an evaluation did {counts}")
        expect(sum(counts.values()) == 1, f"an evaluation did {counts}")
    return {"evaluations": len(calls)}


# == errors on every rank =====================================================================


@case
def errors_on_every_rank() -> None:
    X, y = data(40, 3, 2, seed=12)
    Xd = gpupart.asarray(X, tiles=(9, 3))
    on_every_rank(
        rt,
        ValueError,
        lambda: LogisticRegression().fit(Xd, gpupart.asarray(np.full(40, 4))),
        "at least 2 classes",
        "4",
    )
    bad = X.copy()
    bad[37, 1] = np.nan
    on_every_rank(
        rt,
        ValueError,
        lambda: LogisticRegression().fit(gpupart.asarray(bad, tiles=(9, 3)), y),
        "NaN",
    )
    yf = y.astype(float)
    yf[3] = np.nan
    on_every_rank(rt, ValueError, lambda: LogisticRegression().fit(Xd, gpupart.asarray(yf)), "NaN")
    on_every_rank(
        rt,
        ValueError,
        lambda: LogisticRegression().fit(Xd, gpupart.asarray(y[:39])),
        "inconsistent numbers of samples",
    )
    on_every_rank(
        rt,
        ValueError,
        lambda: LogisticRegression().fit(Xd, gpupart.asarray(y + 0.5)),
        "Unknown label type",
    )
    on_every_rank(rt, NotFittedError, lambda: LogisticRegression().predict(Xd), "not fitted")
    fitted = LogisticRegression().fit(Xd, gpupart.asarray(y))
    on_every_rank(
        rt,
        ValueError,
        lambda: fitted.predict(gpupart.asarray(X[:, :2])),
        "X has 2 features",
        "expecting 3",
    )
    on_every_rank(rt, ValueError, lambda: fitted.predict(gpupart.asarray(X[:, 0])), "2D")
    on_every_rank(rt, ValueError, lambda: LogisticRegression(solver="saga").fit(Xd, y), "solver")
    on_every_rank(rt, ValueError, lambda: LogisticRegression(penalty="l1").fit(Xd, y), "penalty")
    on_every_rank(rt, ValueError, lambda: LogisticRegression(C=0).fit(Xd, y), "C")
    on_every_rank(rt, ValueError, lambda: LogisticRegression().fit(Xd, None), "requires y")
    if size > 1:  # a local array is refused in a job of several ranks
        on_every_rank(rt, TypeError, lambda: LogisticRegression().fit(Xd, y), "y", "from_local")


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
