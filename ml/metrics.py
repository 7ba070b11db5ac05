"""Scores of distributed predictions: ``r2_score``, ``mean_squared_error``, ``accuracy_score``.

``y_true`` sets the layout: ``y_pred`` and ``sample_weight`` (any tiling) are brought lined
up with this rank's blocks of ``y_true`` (one ``fetch_regions`` each, as ``check_y`` does for
estimators), each rank sums its rows, and only the sums are all-reduced: one packed
all-reduce (two for ``r2_score``, whose total sum of squares is centred on the global mean
for accuracy). Every function returns a Python float equal to scikit-learn's (an array for
``multioutput='raw_values'``). Partial sums reach the host and the other ranks through
``gpupart.ml._reduce``, as the estimators' statistics do.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from gpupart.containers.darray import DistArray
from gpupart.containers.dframe import DistFrame, DistSeries
from gpupart.ml._data import (
    Rows,
    _as_distributed,
    _check_numeric,
    _columns_whole,
    check_finite,
    check_y,
    counted_blocks,
)
from gpupart.ml._reduce import packed_sum, to_host
from sklearn.exceptions import UndefinedMetricWarning

__all__ = ["accuracy_score", "mean_squared_error", "r2_score"]

_MULTIOUTPUT = ("raw_values", "uniform_average", "variance_weighted")


def as_targets(y: Any, what: str) -> DistArray:
    """``y`` (any accepted input, 1-d or 2-d, numeric) as a DistArray with whole columns."""
    obj, _ = _as_distributed(y, what)
    if isinstance(obj, DistFrame):
        obj = obj[obj.columns[0]] if len(obj.columns) == 1 else obj.to_array()
    if isinstance(obj, DistSeries):
        _check_numeric(obj.dtype, what)
        obj = obj.to_array()
    arr: DistArray = obj
    if arr.ndim not in (1, 2):
        raise ValueError(f"{what}: expected a 1-d or 2-d array, found shape {arr.shape}")
    _check_numeric(arr.dtype, what)
    if arr.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    return _columns_whole(arr) if arr.ndim == 2 else arr


def _outputs(arr: DistArray) -> int:
    return 1 if arr.ndim == 1 else arr.shape[1]


class _Pairs:
    """``y_true``/``y_pred``/``sample_weight`` lined up on this rank: 2-d float64 blocks."""

    def __init__(self, y_true: Any, y_pred: Any, sample_weight: Any, *, finite: bool) -> None:
        truth = as_targets(y_true, "y_true")
        pred = as_targets(y_pred, "y_pred")
        if pred.shape[0] != truth.shape[0]:
            raise ValueError(
                "Found input variables with inconsistent numbers of samples:"
                f" [{truth.shape[0]}, {pred.shape[0]}]"
            )
        if _outputs(truth) != _outputs(pred):
            raise ValueError(
                "y_true and y_pred have different number of output"
                f" ({_outputs(truth)}!={_outputs(pred)})"
            )
        self.rows = Rows(truth, counted_blocks(truth), "array", None)
        self.rt, self.xp = truth.runtime, truth.xp
        self.n_samples, self.n_outputs = truth.shape[0], _outputs(truth)
        self.multilabel = truth.ndim == 2
        self.truth_dtype, self.pred_dtype = truth.dtype, pred.dtype
        raw_truth = [b for _, b in self.rows.blocks]
        if finite:
            check_finite(raw_truth, self.xp, self.rt, "y_true", truth.dtype)
        raw_pred = check_y(pred, self.rows, what="y_pred", ndim=(1, 2), finite=finite)
        self.true = [self._column_block(b) for b in raw_truth]
        self.pred = [self._column_block(b) for b in raw_pred]
        self.weights: list[Any] | None = None
        if sample_weight is not None:
            self.weights = check_y(sample_weight, self.rows, what="sample_weight", dtype=np.float64)

    def _column_block(self, b: Any) -> Any:
        b = b.astype(np.float64, copy=False)
        return b.reshape(b.shape[0], self.n_outputs)

    def weighted(self, i: int, values: Any) -> Any:
        """Column sums of ``values`` (rows of block ``i``) weighted by the sample weights."""
        if self.weights is None:
            return values.sum(axis=0)
        return self.weights[i] @ values

    def weight_total(self, i: int) -> Any:
        return self.true[i].shape[0] if self.weights is None else self.weights[i].sum()


def _check_multioutput(
    multioutput: Any, n_outputs: int, allowed: tuple[str, ...] = _MULTIOUTPUT
) -> Any:
    if isinstance(multioutput, str):
        if multioutput not in allowed:
            raise ValueError(
                f"multioutput: expected one of {', '.join(map(repr, allowed))} or an array"
                f" of weights, found {multioutput!r}"
            )
        return multioutput
    weights = np.asarray(multioutput, dtype=np.float64)
    if n_outputs == 1:
        raise ValueError(
            "Custom weights are useful only in multi-output cases (multioutput: found an array"
            " for one output)"
        )
    if weights.shape != (n_outputs,):
        raise ValueError(
            f"There must be equally many custom weights ({weights.shape[0] if weights.ndim else 1})"
            f" as outputs ({n_outputs})."
        )
    return weights


def _average(scores: np.ndarray, multioutput: Any, denominator: np.ndarray | None) -> Any:
    if isinstance(multioutput, str):
        if multioutput == "raw_values":
            return scores
        weights = None
        if multioutput == "variance_weighted" and denominator is not None and denominator.any():
            weights = denominator
    else:
        weights = multioutput
    return float(np.average(scores, weights=weights))


def r2_score(
    y_true: Any,
    y_pred: Any,
    *,
    sample_weight: Any = None,
    multioutput: Any = "uniform_average",
    force_finite: bool = True,
) -> Any:
    """Coefficient of determination R² of distributed targets (collective), as scikit-learn's.

    Two all-reduces: the weight total, weighted target sums and residual sums of squares;
    then the sums of squares about the global weighted mean.
    """
    p = _Pairs(y_true, y_pred, sample_weight, finite=True)
    multioutput = _check_multioutput(multioutput, p.n_outputs)
    if p.n_samples < 2:
        warnings.warn(
            "R^2 score is not well-defined with less than two samples.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return float("nan")
    t = p.n_outputs
    total, sums, residual = 0.0, np.zeros(t), np.zeros(t)
    for i, (yt, yp) in enumerate(zip(p.true, p.pred, strict=True)):
        total = total + p.weight_total(i)
        sums = sums + to_host(p.weighted(i, yt))
        residual = residual + to_host(p.weighted(i, (yt - yp) ** 2))
    total, sums, numerator = packed_sum(p.rt, [total, sums, residual])
    mean = sums / total
    spread = np.zeros(t)
    for i, yt in enumerate(p.true):
        centred = yt - p.xp.asarray(mean)
        spread = spread + to_host(p.weighted(i, centred**2))
    (denominator,) = packed_sum(p.rt, [spread])
    if force_finite:
        scores = np.ones(t)
        valid = (denominator != 0) & (numerator != 0)
        scores[valid] = 1 - numerator[valid] / denominator[valid]
        scores[(numerator != 0) & (denominator == 0)] = 0.0
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = 1 - numerator / denominator
    return _average(scores, multioutput, denominator)


def mean_squared_error(
    y_true: Any,
    y_pred: Any,
    *,
    sample_weight: Any = None,
    multioutput: Any = "uniform_average",
) -> Any:
    """Mean squared error of distributed targets (collective; one all-reduce), as scikit-learn's."""
    p = _Pairs(y_true, y_pred, sample_weight, finite=True)
    multioutput = _check_multioutput(multioutput, p.n_outputs, _MULTIOUTPUT[:2])
    total, residual = 0.0, np.zeros(p.n_outputs)
    for i, (yt, yp) in enumerate(zip(p.true, p.pred, strict=True)):
        total = total + p.weight_total(i)
        residual = residual + to_host(p.weighted(i, (yt - yp) ** 2))
    total, residual = packed_sum(p.rt, [total, residual])
    return _average(residual / total, multioutput, None)


def accuracy_score(
    y_true: Any, y_pred: Any, *, normalize: bool = True, sample_weight: Any = None
) -> float:
    """Fraction (or weighted count) of rows predicted exactly (collective; one all-reduce).

    Labels are numbers (a distributed array holds no strings); 2-d targets are multilabel
    indicators, a row counting when all its labels match (scikit-learn's subset accuracy).
    Non-integer labels raise scikit-learn's ``ValueError`` on every rank.
    """
    p = _Pairs(y_true, y_pred, sample_weight, finite=False)
    xp = p.xp
    hits, total = 0.0, 0.0
    continuous = np.zeros(2)
    for i, (yt, yp) in enumerate(zip(p.true, p.pred, strict=True)):
        for k, b in enumerate((yt, yp)):
            if b.size and not bool(xp.all(b == xp.round(b))):
                continuous[k] = 1
        match = xp.all(yt == yp, axis=1).astype(np.float64)
        hits = hits + to_host(match.sum() if p.weights is None else p.weights[i] @ match)
        total = total + p.weight_total(i)
    hits, total, continuous = packed_sum(p.rt, [hits, total, continuous])
    kinds = ["continuous" if c else "discrete" for c in continuous]
    if all(continuous):
        raise ValueError("continuous is not supported (y_true and y_pred hold non-integer values)")
    if any(continuous):
        raise ValueError(
            f"Classification metrics can't handle a mix of {kinds[0]} and {kinds[1]} targets"
            " (labels must be integers)"
        )
    return float(hits / total) if normalize else float(hits)
