"""XGBoost trained on gpupart's tiles (``gpupart.interop.xgboost``) against one process.

Run as ``gpupart run -n N -- python xgboost_cases.py`` (or under ``mpiexec``). Every rank
makes the same seeded data and hands its rows to gpupart (uneven, a rank with none at 3
ranks). Where every distinct value of a feature is a cut (no more than ``max_bin`` of
them), the merged sketch equals one process's and so must the trees: the same splits
(features, thresholds, missing-value branches) as ``xgboost.train`` on the whole data;
leaf values and predictions agree to float32 rounding only, as the workers' gradient
histograms are summed in another order. With more distinct values than bins the workers'
sketches merge into other cuts: the model differs, its fit must not. The Booster must be
byte-identical on every rank. Every rank emits ``@plan``, ``@case`` after
each case passes and ``@done``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import xgboost
from _interop import Cases
from _mp import expect, raises
from xgboost import collective

import gpupart
from gpupart.interop import xgboost as gx
from gpupart.interop._local import local_rows

cases = Cases()
case = cases.case
PARAMS = {"tree_method": "hist", "max_depth": 4, "nthread": 1, "max_bin": 64, "eta": 0.3}


def my_slice(rt: Any, n: int) -> slice:
    """This rank's rows of ``n``: uneven runs, none for rank 2."""
    weights = np.array([0 if r == 2 else r + 1 for r in range(rt.size)], dtype=float)
    cuts = np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n
    cuts = cuts.round().astype(int)
    return slice(cuts[rt.rank], cuts[rt.rank + 1])


def few_values(n: int, m: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of at most 30 distinct values each (every one a cut), a noisy target."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 30, (n, m)).astype(np.float64)
    X[rng.random((n, m)) < 0.05] = np.nan  # missing values, as XGBoost reads NaN
    y = np.nan_to_num(X[:, 0]) * 0.5 - np.nan_to_num(X[:, 1]) ** 1.5 / 10
    return X, y + rng.standard_normal(n)


def same_trees(booster: Any, ref: Any, what: str) -> None:
    """The same splits as ``ref``; leaves and predictions equal up to float32 rounding."""
    leafless = [re.sub(r"leaf=[-+.e0-9]+", "leaf", t) for t in booster.get_dump()]
    expect(leafless == [re.sub(r"leaf=[-+.e0-9]+", "leaf", t) for t in ref.get_dump()], what)


def same_on_every_rank(rt: Any, booster: Any) -> None:
    raws = rt.allgather(bytes(booster.save_raw()))
    expect(all(r == raws[0] for r in raws), "the Booster differs between ranks")


@case
def ranks_are_xgboost_workers(rt: Any) -> None:
    with gx.communicator() as args:
        expect(collective.get_rank() == rt.rank, f"XGBoost rank {collective.get_rank()}")
        expect(collective.get_world_size() == rt.size, "world size")
        total = collective.allreduce(np.array([rt.rank + 1.0]), collective.Op.SUM)
        expect(float(total[0]) == rt.size * (rt.size + 1) / 2, f"allreduce {total}")
        expect(collective.broadcast(f"from {rt.rank}", 0) == "from 0", "broadcast")
        expect(args["dmlc_task_id"] == f"gpupart-{rt.rank:09d}", f"{args}")
    with gx.communicator():  # a second time in the same job: the first one was shut down
        expect(collective.get_rank() == rt.rank, "second communicator")


@case
def local_rows_are_the_tile(rt: Any) -> None:
    X, y = few_values(500)
    piece = X[my_slice(rt, 500)].copy()
    rows = local_rows(gpupart.from_local(piece), finite=False, y=gpupart.asarray(y), weight=None)
    expect(rows.X is piece, "the rank's rows of X are its tile, not a copy")
    np.testing.assert_array_equal(rows.targets["y"], y[my_slice(rt, 500)])
    expect(rows.targets["weight"] is None and rows.shape == (500, 5), f"{rows.shape}")


@case
def every_value_a_cut_gives_one_process_trees(rt: Any) -> dict:
    X, y = few_values(3000)
    mine = my_slice(rt, 3000)
    Xd, yd = gpupart.from_local(X[mine]), gpupart.from_local(y[mine])
    booster = gx.train(PARAMS, Xd, yd, num_boost_round=15)
    ref = xgboost.train(PARAMS, xgboost.QuantileDMatrix(X, y, max_bin=64), num_boost_round=15)
    same_trees(booster, ref, "the splits differ from one process's")
    ours, theirs = booster.inplace_predict(X), ref.inplace_predict(X)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    same_on_every_rank(rt, booster)
    return {"max_prediction_difference": float(np.abs(ours - theirs).max())}


@case
def dmatrix_and_other_tilings(rt: Any) -> None:
    X, y = few_values(2000, seed=1)
    Xd = gpupart.asarray(X, tiles=(300, 5))  # several blocks per rank, joined
    yd = gpupart.asarray(y, tiles=(700,))  # y cut elsewhere: its rows are fetched
    booster = gx.train(PARAMS, Xd, yd, num_boost_round=8, quantile=False)
    ref = xgboost.train(PARAMS, xgboost.DMatrix(X, y), num_boost_round=8)
    same_trees(booster, ref, "DMatrix splits differ from one process's")
    pred = gx.predict(booster, Xd)
    expect(isinstance(pred, gpupart.DistArray) and pred.shape == (2000,), f"{pred!r}")
    np.testing.assert_array_equal(pred.to_numpy(), booster.inplace_predict(X))
    np.testing.assert_allclose(pred.to_numpy(), ref.inplace_predict(X), rtol=1e-5, atol=1e-5)


@case
def frames_weights_and_evals(rt: Any) -> dict:
    X, y = few_values(2400, m=4, seed=2)
    label = (y > np.median(y)).astype(np.float64)
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    cols = ["age", "dose", "x2", "x3"]
    mine = my_slice(rt, len(y))
    frame = gpupart.from_local_frames(pd.DataFrame(X[mine], columns=cols))
    params = {**PARAMS, "objective": "binary:logistic", "eval_metric": "logloss"}
    got: dict = {}
    half = slice(0, 1200)
    booster = gx.train(
        params,
        frame,
        gpupart.from_local(label[mine]),
        weight=gpupart.from_local(w[mine]),
        num_boost_round=10,
        evals=[
            (
                gpupart.from_pandas(pd.DataFrame(X[half], columns=cols)),
                gpupart.asarray(label[half]),
                "first",
            )
        ],
        evals_result=got,
        verbose_eval=False,
    )
    expect(booster.feature_names == cols, f"feature names {booster.feature_names}")
    dtrain = xgboost.QuantileDMatrix(pd.DataFrame(X, columns=cols), label, weight=w, max_bin=64)
    dfirst = xgboost.QuantileDMatrix(
        pd.DataFrame(X[half], columns=cols), label[half], ref=dtrain, max_bin=64
    )
    want: dict = {}
    ref = xgboost.train(
        params,
        dtrain,
        num_boost_round=10,
        evals=[(dfirst, "first")],
        evals_result=want,
        verbose_eval=False,
    )
    same_trees(booster, ref, "weighted logistic splits differ")
    np.testing.assert_allclose(got["first"]["logloss"], want["first"]["logloss"], rtol=1e-5)
    same_on_every_rank(rt, booster)
    return {"logloss": got["first"]["logloss"][-1]}


@case
def more_values_than_bins_fit_as_well(rt: Any) -> dict:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((6000, 6))
    y = 2 * X[:, 0] - X[:, 1] ** 2 + np.sin(3 * X[:, 2]) + 0.1 * rng.standard_normal(6000)
    mine = my_slice(rt, 6000)
    booster = gx.train(
        PARAMS, gpupart.from_local(X[mine]), gpupart.from_local(y[mine]), num_boost_round=30
    )
    ref = xgboost.train(PARAMS, xgboost.QuantileDMatrix(X, y, max_bin=64), num_boost_round=30)
    ours, theirs = booster.inplace_predict(X), ref.inplace_predict(X)
    rmse = float(np.sqrt(np.mean((ours - y) ** 2)))
    rmse_ref = float(np.sqrt(np.mean((theirs - y) ** 2)))
    expect(rmse <= 1.05 * rmse_ref, f"RMSE {rmse:.4f} against one process's {rmse_ref:.4f}")
    same_on_every_rank(rt, booster)
    return {
        "rmse": rmse,
        "rmse_one_process": rmse_ref,
        "max_prediction_difference": float(np.abs(ours - theirs).max()),
    }


@case
def errors_on_every_rank_and_the_job_goes_on(rt: Any) -> None:
    X, y = few_values(100)
    Xd = gpupart.asarray(X)
    raises(ValueError, lambda: gx.train(PARAMS, Xd, gpupart.asarray(y[:90])), "[100, 90]")
    raises(gpupart.InteropError, lambda: gx.train(PARAMS, Xd, y, host_ip="no-such-host.invalid"))
    raises(ValueError, lambda: gx.communicator(timeout=0).__enter__(), "timeout")
    booster = gx.train(PARAMS, Xd, gpupart.asarray(y), num_boost_round=2)
    expect(len(booster.get_dump()) == 2, "training after the errors")


def main() -> None:
    rt = gpupart.init(timeout=60)
    cases.run(rt)
    rt.close()


if __name__ == "__main__":
    main()
