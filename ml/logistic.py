"""Logistic regression (binary and multinomial) fitted where the rows live.

The objective is scikit-learn's (``LinearModelLoss`` as ``LogisticRegression`` uses it since
1.5): the mean half binomial / half multinomial deviance weighted by ``sample_weight`` (times
``class_weight``), plus ``||W||^2 / (2 C sum(sample_weight))``, intercepts not penalised.
Each L-BFGS step evaluates loss and gradient block by block on the blocks' device and sums
the rank's partials with the others' in ONE all-reduce (loss and gradient packed in one
array). Every rank then runs the same host optimiser (SciPy's L-BFGS-B) on identical
all-reduced values, so all ranks take the same steps and stop together.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from gpupart.ml._data import Rows, check_finite, check_y, rows_like
from gpupart.ml._reduce import to_host
from gpupart.ml.base import Estimator
from scipy import optimize
from sklearn.base import ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

__all__ = ["LogisticRegression"]

_SOLVERS = ("lbfgs",)
_PENALTIES = ("l2", None)


class LogisticRegression(ClassifierMixin, Estimator):
    """Logistic regression: scikit-learn's ``LogisticRegression`` (lbfgs) on distributed rows.

    Parameters are scikit-learn's: ``penalty`` ``'l2'`` or ``None``; ``C`` the inverse
    regularisation strength; ``tol`` L-BFGS's projected-gradient tolerance; ``max_iter``;
    ``solver`` only ``'lbfgs'``; ``class_weight`` None, ``'balanced'`` or a dict;
    ``output_type`` what ``predict``/``predict_proba``/``decision_function`` return (see
    :mod:`gpupart.ml.base`). Two classes fit one coefficient row (binomial), more fit one row
    per class (multinomial, softmax).
    """

    _fitted_attributes = ("coef_", "intercept_", "classes_", "n_iter_")

    def __init__(
        self,
        penalty: str | None = "l2",
        *,
        C: float = 1.0,
        tol: float = 1e-4,
        fit_intercept: bool = True,
        max_iter: int = 100,
        solver: str = "lbfgs",
        class_weight: dict | str | None = None,
        output_type: str = "input",
    ) -> None:
        self.penalty = penalty
        self.C = C
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.solver = solver
        self.class_weight = class_weight
        self.output_type = output_type

    # -- fit ----------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LogisticRegression:
        """Fit on ``X`` (rows) and labels ``y`` (collective: every rank calls it)."""
        self._check_params()
        if y is None:
            raise ValueError(
                f"This {type(self).__name__} estimator requires y to be passed, but the"
                " target y is None."
            )
        rows = self._fit_rows(X)
        labels = _label_pieces(y, rows, fit=True)
        classes = _classes(labels, rows.runtime)
        if classes.size < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the data, but the data"
                f" contains only one class: {classes[0]!r}"
            )
        xp = rows.array.xp
        codes = [_encode(p, classes, xp) for p in labels]
        weights = _sample_weights(sample_weight, rows)
        weights, sw_sum = self._class_weighted(weights, codes, classes, rows)
        if sw_sum <= 0:
            raise ValueError("Sample weights must contain at least one non-zero number.")
        n_classes = classes.size
        objective = _Objective(rows, codes, weights, n_classes, self.fit_intercept)
        C = np.inf if self.penalty is None else float(self.C)
        l2 = 0.0 if np.isinf(C) else 1.0 / (C * sw_sum)
        solution, n_iter = _lbfgs(objective, sw_sum, l2, self.tol, self.max_iter)
        coef, intercept = objective.unpack(solution)
        self.classes_ = classes
        self.coef_ = coef.astype(rows.dtype)
        self.intercept_ = intercept.astype(rows.dtype)
        self.n_iter_ = np.asarray([n_iter], dtype=np.int32)
        return self

    def _check_params(self) -> None:
        if self.solver not in _SOLVERS:
            raise ValueError(
                f"solver: expected one of {_SOLVERS} (gpupart.ml implements L-BFGS only),"
                f" found {self.solver!r}"
            )
        if self.penalty not in _PENALTIES:
            raise ValueError(
                f"penalty: expected 'l2' or None (the lbfgs solver supports only these),"
                f" found {self.penalty!r}"
            )
        if not (isinstance(self.C, (int, float, np.number)) and self.C > 0):
            raise ValueError(f"C: expected a number > 0, found {self.C!r}")
        if not (isinstance(self.tol, (int, float, np.number)) and self.tol >= 0):
            raise ValueError(f"tol: expected a number >= 0, found {self.tol!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, (int, np.integer)):
            raise TypeError(f"max_iter: expected an int >= 0, found {self.max_iter!r}")
        if self.max_iter < 0:
            raise ValueError(f"max_iter: expected an int >= 0, found {self.max_iter!r}")
        cw = self.class_weight
        if not (cw is None or cw == "balanced" or isinstance(cw, dict)):
            raise ValueError(f"class_weight: expected None, 'balanced' or a dict, found {cw!r}")

    def _class_weighted(
        self, weights: list[Any] | None, codes: list[Any], classes: np.ndarray, rows: Rows
    ) -> tuple[list[Any] | None, float]:
        """Fold ``class_weight`` into the sample weights; return them and their global sum.

        One all-reduce (the weighted count of each class) when weights or class weights are
        given; otherwise the sum is the number of samples.
        """
        if weights is None and self.class_weight is None:
            return None, float(rows.n_samples)
        xp = rows.array.xp
        k = classes.size
        counts = np.zeros(k)
        for i, c in enumerate(codes):
            w = None if weights is None else weights[i]
            counts += to_host(xp.bincount(c, weights=w, minlength=k)).astype(np.float64)
        counts = rows.runtime.allreduce(counts)
        factors = _class_weight_factors(self.class_weight, classes, counts)
        if weights is None:
            weights = [xp.ones(c.shape[0], dtype=rows.dtype) for c in codes]
        factors_dev = xp.asarray(factors, dtype=rows.dtype)
        weights = [w * factors_dev[c] for w, c in zip(weights, codes, strict=True)]
        return weights, float(np.dot(factors, counts))

    # -- predict ------------------------------------------------------------------------------

    def _scores(self, rows: Rows) -> list[Any]:
        """Decision values per block: ``(n,)`` for two classes, ``(n, n_classes)`` for more."""
        xp = rows.array.xp
        coef = xp.asarray(self.coef_, dtype=rows.dtype)
        intercept = xp.asarray(self.intercept_, dtype=rows.dtype)
        out = []
        for _, block in rows.blocks:
            scores = block @ coef.T + intercept
            out.append(scores[:, 0] if coef.shape[0] == 1 else scores)
        return out

    def _probabilities(self, rows: Rows) -> list[Any]:
        xp = rows.array.xp
        out = []
        for s in self._scores(rows):
            if s.ndim == 1:
                p = xp.exp(-xp.logaddexp(0, -s))
                out.append(xp.stack([1 - p, p], axis=1))
            else:
                e = xp.exp(s - xp.max(s, axis=1, keepdims=True))
                out.append(e / xp.sum(e, axis=1, keepdims=True))
        return out

    def _indices(self, rows: Rows) -> list[Any]:
        """Index into ``classes_`` of each row's predicted class, per block."""
        xp = rows.array.xp
        return [
            (s > 0).astype(np.int64) if s.ndim == 1 else xp.argmax(s, axis=1)
            for s in self._scores(rows)
        ]

    def _label_pieces_predicted(self, rows: Rows) -> list[Any]:
        """Predicted labels per block: on the device for numbers, on the host for strings."""
        if self.classes_.dtype.kind in "biuf":
            classes = rows.array.xp.asarray(self.classes_)
            return [classes[i] for i in self._indices(rows)]
        return [self.classes_[to_host(i)] for i in self._indices(rows)]

    def decision_function(self, X: Any) -> Any:
        """Confidence scores: ``(n_samples,)`` for two classes, else ``(n_samples, n_classes)``."""
        rows = self._rows_for(X)
        return self._output(rows_like(rows, self._scores(rows), rows.dtype), rows)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n_samples, n_classes)`` in the order of ``classes_``."""
        rows = self._rows_for(X)
        return self._output(rows_like(rows, self._probabilities(rows), rows.dtype), rows)

    def predict_log_proba(self, X: Any) -> Any:
        """Logarithm of :meth:`predict_proba` (as scikit-learn computes it)."""
        rows = self._rows_for(X)
        xp = rows.array.xp
        pieces = [xp.log(p) for p in self._probabilities(rows)]
        return self._output(rows_like(rows, pieces, rows.dtype), rows)

    def predict(self, X: Any) -> Any:
        """Predicted class labels, lined up with ``X``."""
        rows = self._rows_for(X)
        if self.classes_.dtype.kind == "O":  # labels that cannot travel: indices, then labels
            return self._object_labels(rows)
        pieces = self._label_pieces_predicted(rows)
        return self._output(rows_like(rows, pieces, self.classes_.dtype), rows)

    def _object_labels(self, rows: Rows) -> Any:
        """Predict labels of dtype object (one-process runs only): gathered on the host."""
        kind = "numpy" if self.output_type == "input" else self.output_type
        if rows.kind != "local" or kind not in ("numpy", "pandas"):
            raise TypeError(
                "output_type: labels of dtype object can only be returned as NumPy or pandas"
                f" for local input, found output_type={self.output_type!r} with {rows.kind} X"
            )
        index = rows_like(rows, self._indices(rows), np.int64)
        labels = self.classes_[to_host(index.to_numpy())]
        if kind == "pandas":
            import pandas as pd

            return pd.Series(labels)
        return labels

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on ``X`` against ``y`` (weighted); one all-reduce of (correct, total)."""
        rows = self._rows_for(X)
        if y is None:
            raise ValueError("score: y is None, expected the true labels of X")
        truth = _label_pieces(y, rows, fit=False)
        weights = _sample_weights(sample_weight, rows)
        predicted = self._label_pieces_predicted(rows)
        tally = np.zeros(2)
        for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
            if type(p) is not type(t):
                p, t = to_host(p), to_host(t)
            hit = p == t
            if weights is None:
                tally += [float(to_host(hit.sum())), float(t.shape[0])]
            else:
                w = weights[i] if type(weights[i]) is type(hit) else to_host(weights[i])
                tally += [float(to_host((w * hit).sum())), float(to_host(w.sum()))]
        correct, total = rows.runtime.allreduce(tally)
        return float(correct / total)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


# -- the objective --------------------------------------------------------------------------------


class _Objective:
    """Loss and gradient of the blocks on this rank, summed over ranks in one all-reduce.

    Parameters are laid out as scikit-learn lays them out for L-BFGS: binary ``[w, b]``;
    multinomial the ``(n_classes, n_features [+ 1])`` matrix raveled in Fortran order (the
    classes of one feature contiguous), so both follow the same path of iterates.
    """

    def __init__(
        self,
        rows: Rows,
        codes: list[Any],
        weights: list[Any] | None,
        n_classes: int,
        fit_intercept: bool,
    ) -> None:
        self.rows = rows
        self.xp = rows.array.xp
        self.binary = n_classes == 2
        self.k = 1 if self.binary else n_classes
        self.m = rows.n_features
        self.fit_intercept = fit_intercept
        self.n_dof = self.m + int(fit_intercept)
        self.n_params = self.k * self.n_dof
        self.blocks = [b for _, b in rows.blocks]
        if self.binary:
            self.targets = [c.astype(rows.dtype) for c in codes]
        else:
            self.targets = [c.astype(np.int64)[:, None] for c in codes]
        self.weights = weights

    def unpack(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(coef (k, m), intercept (k,))`` from the flat parameter vector."""
        matrix = w.reshape((self.k, self.n_dof), order="F")
        intercept = matrix[:, self.m] if self.fit_intercept else np.zeros(self.k)
        return np.array(matrix[:, : self.m]), np.array(intercept)

    def loss_gradient(self, w: np.ndarray, sw_sum: float, l2: float) -> tuple[float, np.ndarray]:
        """Scikit-learn's penalised mean loss and its gradient (collective)."""
        coef, intercept = self.unpack(w)
        xp = self.xp
        dtype = self.rows.dtype
        coef_dev = xp.asarray(coef, dtype=dtype)
        intercept_dev = xp.asarray(intercept, dtype=dtype)
        partial = np.zeros(1 + self.n_params)
        for i, block in enumerate(self.blocks):
            raw = block @ coef_dev.T + intercept_dev  # (n, k)
            if self.binary:
                loss, grad = _binomial(xp, raw[:, 0], self.targets[i])
                grad = grad[:, None]
            else:
                loss, grad = _multinomial(xp, raw, self.targets[i])
            if self.weights is not None:
                loss = loss * self.weights[i]
                grad = grad * self.weights[i][:, None]
            parts = [xp.reshape(xp.sum(loss), (1,)), xp.reshape((grad.T @ block).T, (-1,))]
            if self.fit_intercept:
                parts.append(xp.sum(grad, axis=0))
            partial += to_host(xp.concatenate(parts)).astype(np.float64)
        total = self.rows.runtime.allreduce(partial)
        penalty = 0.5 * l2 * float(np.dot(coef.ravel(), coef.ravel()))
        gradient = total[1:] / sw_sum
        gradient[: self.k * self.m] += l2 * coef.T.ravel()
        return float(total[0] / sw_sum) + penalty, gradient


def _lbfgs(
    objective: _Objective, sw_sum: float, l2: float, tol: float, max_iter: int
) -> tuple[np.ndarray, int]:
    """Minimise from zero with scikit-learn's L-BFGS-B options; warn as it does when stopped.

    Every rank runs this on identical all-reduced values, so every rank returns the same.
    """
    result = optimize.minimize(
        objective.loss_gradient,
        np.zeros(objective.n_params),
        method="L-BFGS-B",
        jac=True,
        args=(sw_sum, l2),
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    n_iter = min(int(result.nit), max_iter)
    if result.status != 0:
        message = (
            f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):"
            f"\n{result.message}\n"
        )
        if n_iter == max_iter:
            message += (
                "\nIncrease the number of iterations to improve the convergence"
                f" (max_iter={max_iter})."
            )
        warnings.warn(message, ConvergenceWarning, stacklevel=3)
    return result.x, n_iter


def _binomial(xp: Any, raw: Any, y: Any) -> tuple[Any, Any]:
    """Half binomial deviance per sample and its derivative in ``raw`` (stable forms)."""
    loss = xp.logaddexp(0, raw) - y * raw
    grad = xp.exp(-xp.logaddexp(0, -raw)) - y
    return loss, grad


def _multinomial(xp: Any, raw: Any, y: Any) -> tuple[Any, Any]:
    """Half multinomial deviance per sample and its derivative (softmax minus one-hot)."""
    top = xp.max(raw, axis=1, keepdims=True)
    e = xp.exp(raw - top)
    total = xp.sum(e, axis=1, keepdims=True)
    lse = top + xp.log(total)
    loss = (lse - xp.take_along_axis(raw, y, axis=1))[:, 0]
    grad = e / total
    onehot = xp.arange(raw.shape[1])[None, :] == y
    return loss, grad - onehot.astype(grad.dtype)


# -- labels and weights ---------------------------------------------------------------------------


def _is_distributed(obj: Any) -> bool:
    from gpupart.containers.darray import DistArray
    from gpupart.containers.dframe import DistFrame, DistSeries

    return isinstance(obj, (DistArray, DistFrame, DistSeries)) or hasattr(obj, "__partitioned__")


def _label_pieces(y: Any, rows: Rows, *, fit: bool) -> list[Any]:
    """Return the labels lined up with this rank's blocks of ``X``, one piece per block.

    In a one-process run a local ``y`` (NumPy, list, pandas; any labels scikit-learn takes,
    strings and objects too) is checked as scikit-learn checks it and cut by the blocks;
    distributed ``y`` must hold numbers, booleans or NumPy strings.
    """
    if rows.runtime.size == 1 and not _is_distributed(y):
        host = column_or_1d(y, warn=True)
        if host.shape[0] != rows.n_samples:
            raise ValueError(
                "Found input variables with inconsistent numbers of samples:"
                f" [{rows.n_samples}, {host.shape[0]}] (y against X)"
            )
        if host.dtype.kind == "f":
            check_finite([host], np, rows.runtime, "y", host.dtype)
        if fit:
            check_classification_targets(host)
        return [
            host[s : s + b.shape[0]] for s, (_, b) in zip(rows.starts(), rows.blocks, strict=True)
        ]
    from gpupart.containers.dframe import DistSeries

    dtype = getattr(y, "dtype", None)
    if isinstance(y, DistSeries) and not _numpy_kind(dtype, "biufUS"):
        raise TypeError(
            f"y: labels of dtype {dtype} in a distributed series are not supported; expected"
            " numbers, booleans or NumPy strings (encode the labels, e.g. as category codes)"
        )
    pieces = check_y(y, rows, numeric=False, finite=False)
    kinds = rows.runtime.allgather(sorted({np.dtype(p.dtype).kind for p in pieces}))
    found = {k for ks in kinds for k in ks}
    if not found <= set("biufUS"):
        raise TypeError(
            f"y: expected labels that are numbers, booleans or strings, found dtype kind(s)"
            f" {sorted(found)}"
        )
    if "f" in found:
        check_finite(pieces, rows.array.xp, rows.runtime, "y", "float64")
    return pieces


def _numpy_kind(dtype: Any, kinds: str) -> bool:
    try:
        return np.dtype(dtype).kind in kinds
    except TypeError:
        return False


def _classes(labels: list[Any], rt: Any) -> np.ndarray:
    """Sorted distinct labels over all ranks (one all-gather of each rank's distinct labels)."""
    mine = [np.unique(to_host(p)) for p in labels if p.shape[0]]
    local = np.unique(np.concatenate(mine)) if mine else None
    everyone = [local] if rt.size == 1 else rt.allgather(local)  # objects stay on one rank
    gathered = [g for g in everyone if g is not None]
    classes = np.unique(np.concatenate(gathered))
    check_classification_targets(classes)
    return classes


def _encode(piece: Any, classes: np.ndarray, xp: Any) -> Any:
    """Class indices (into ``classes``) of a piece of labels, on the blocks' device."""
    if isinstance(piece, np.ndarray):
        return xp.asarray(np.searchsorted(classes, piece).astype(np.int64))
    return xp.searchsorted(xp.asarray(classes), piece).astype(np.int64)


def _sample_weights(sample_weight: Any, rows: Rows) -> list[Any] | None:
    """``sample_weight`` lined up with this rank's blocks (``X``'s dtype), or None."""
    if sample_weight is None:
        return None
    xp = rows.array.xp
    if np.isscalar(sample_weight):
        return [xp.full(b.shape[0], sample_weight, dtype=rows.dtype) for _, b in rows.blocks]
    return check_y(sample_weight, rows, what="sample_weight", dtype=rows.dtype)


def _class_weight_factors(
    class_weight: dict | str | None, classes: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """One factor per class, as scikit-learn's ``compute_class_weight`` gives them."""
    if class_weight is None:
        return np.ones(classes.size)
    if class_weight == "balanced":
        return counts.sum() / (classes.size * counts)
    factors = np.ones(classes.size)
    missing = []
    for i, c in enumerate(classes):
        key = str(c) if classes.dtype.kind in "UOS" else int(c) if float(c) == int(c) else c
        if key in class_weight:
            factors[i] = class_weight[key]
        else:
            missing.append(key)
    if missing and classes.size - len(missing) != len(class_weight):
        raise ValueError(f"The classes, {missing}, are not in class_weight")
    return factors
