"""Least squares and ridge regression from all-reduced Gram matrices.

Two passes over the rows, each ending in one packed all-reduce: (1) the weight total and the
weighted column sums of ``X`` and ``y`` (the global means); (2) the Gram matrix of the rows
centred on those means, ``Xc^T W Xc`` (``p x p``), and ``Xc^T W yc`` (``p x targets``).
Centring on the global means before forming the Gram keeps precision that the Gram of
uncentred data loses (large offsets cancel catastrophically). Products run on each block's
device with its array module, in float64 (a float32 block is upcast block by block); every
rank then solves the same small system on the host, so every rank holds the same ``coef_``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import scipy.linalg
from gpupart.ml._data import Rows, check_y, row_chunks, rows_like
from gpupart.ml._reduce import packed_sum, to_host
from gpupart.ml.base import Estimator
from gpupart.ml.metrics import as_targets, r2_score
from sklearn.base import MultiOutputMixin, RegressorMixin

__all__ = ["LinearRegression", "Ridge"]

#: scikit-learn's ``LinearRegression(tol=1e-6)``: singular values of centred ``X`` below
#: ``tol`` times the largest count as zero (its ``lstsq(cond=tol)``); on the Gram matrix the
#: eigenvalues are the squares, so the cutoff there is ``tol**2``.
_TOL = 1e-6


class _Moments:
    """The centred, weighted second moments of ``(X, y)`` over every rank's rows."""

    def __init__(
        self, rows: Rows, y: Any, sample_weight: Any, fit_intercept: bool, *, negative: bool
    ) -> None:
        xp, rt = rows.array.xp, rows.runtime
        target = as_targets(y, "y")
        self.y_ndim = target.ndim
        self.targets = 1 if target.ndim == 1 else target.shape[1]
        # y and the weights are rounded to X's dtype first, as scikit-learn casts them
        ys = check_y(target, rows, ndim=(1, 2), dtype=rows.dtype)
        scalar_weight = isinstance(sample_weight, (numbers.Real, np.number))
        ws = None
        if sample_weight is not None and not scalar_weight:
            ws = check_y(sample_weight, rows, what="sample_weight", dtype=rows.dtype)
            ws = [w.astype(np.float64) for w in ws]
        ys = [v.astype(np.float64).reshape(v.shape[0], self.targets) for v in ys]
        p, t = rows.n_features, self.targets
        # each block in chunks of rows, upcast chunk by chunk: temporaries stay bounded
        chunks = [
            (xb[sl].astype(np.float64, copy=False), i, sl)
            for i, (_, xb) in enumerate(rows.blocks)
            for sl in row_chunks(xb.shape[0], p)
        ]
        xs = [c for c, _, _ in chunks]
        ys = [ys[i][sl] for _, i, sl in chunks]
        if ws is not None:
            ws = [ws[i][sl] for _, i, sl in chunks]
        total, sx, sy, bad = 0.0, np.zeros(p), np.zeros(t), 0.0
        for i, (xb, yb) in enumerate(zip(xs, ys, strict=True)):
            if ws is None:
                total, sx, sy = (
                    total + xb.shape[0],
                    sx + to_host(xb.sum(0)),
                    sy + to_host(yb.sum(0)),
                )
            else:
                w = ws[i]
                total, sx, sy = total + to_host(w.sum()), sx + to_host(w @ xb), sy + to_host(w @ yb)
                if negative:
                    bad = bad + to_host((w < 0).sum())
        total, sx, sy, bad = packed_sum(rt, [total, sx, sy, bad])
        if bad or (scalar_weight and negative and float(sample_weight) < 0):
            raise ValueError("Negative values in data passed to `sample_weight`")
        if total == 0 or (scalar_weight and float(sample_weight) == 0):
            raise ValueError("Sample weights must contain at least one non-zero number.")
        self.x_mean = sx / total if fit_intercept else np.zeros(p)
        self.y_mean = sy / total if fit_intercept else np.zeros(t)
        gram, xy = np.zeros((p, p)), np.zeros((p, t))
        xm, ym = xp.asarray(self.x_mean), xp.asarray(self.y_mean)
        for i, (xb, yb) in enumerate(zip(xs, ys, strict=True)):
            xc, yc = xb - xm, yb - ym
            xw = xc if ws is None else xc * ws[i][:, None]
            gram, xy = gram + to_host(xw.T @ xc), xy + to_host(xw.T @ yc)
        self.gram, self.xy = packed_sum(rt, [gram, xy])
        if scalar_weight:
            self.gram, self.xy = self.gram * float(sample_weight), self.xy * float(sample_weight)


class _LinearModel(MultiOutputMixin, RegressorMixin, Estimator):
    """What both regressions share: the fitted attributes' shapes, predict, score."""

    _fitted_attributes = ("coef_", "intercept_", "n_features_in_")

    def _set(self, coef: np.ndarray, m: _Moments, rows: Rows, ravel_single: bool) -> None:
        """Store ``coef`` (``p x targets``) and the intercept as scikit-learn shapes them."""
        dtype = rows.dtype
        coef = coef.T.astype(dtype)  # targets x p
        intercept = (m.y_mean - coef.astype(np.float64) @ m.x_mean).astype(dtype)
        if m.y_ndim == 1 or (ravel_single and m.targets == 1):
            coef = coef.ravel()
        self.coef_ = coef
        if not self.fit_intercept:
            self.intercept_ = 0.0
        elif m.y_ndim == 1:
            self.intercept_ = dtype.type(intercept[0])
        else:
            self.intercept_ = intercept

    def _require_y(self, y: Any) -> None:
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )

    def _predict_rows(self, rows: Rows) -> Any:
        xp = rows.array.xp
        coef = xp.asarray(np.asarray(self.coef_, dtype=rows.dtype))
        intercept = xp.asarray(np.asarray(self.intercept_, dtype=rows.dtype))
        pieces = [b @ coef.T + intercept for _, b in rows.blocks]
        return rows_like(rows, pieces, rows.dtype)

    def predict(self, X: Any) -> Any:
        """Predicted targets, lined up with ``X`` (collective), shaped as ``output_type`` says."""
        rows = self._rows_for(X)
        return self._output(self._predict_rows(rows), rows)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of ``predict(X)`` against ``y`` (collective; the prediction never gathered)."""
        rows = self._rows_for(X)
        return r2_score(y, self._predict_rows(rows), sample_weight=sample_weight)


class LinearRegression(_LinearModel):
    """Ordinary least squares, fitted where the rows live (scikit-learn's ``LinearRegression``).

    Solver: Cholesky (``scipy.linalg.cho_factor``) of the all-reduced centred Gram matrix when
    centred ``X`` has full column rank; otherwise ``scipy.linalg.lstsq`` of the same system
    with scikit-learn's cutoff, which gives the minimum-norm solution scikit-learn's
    ``lstsq`` on ``X`` gives. ``rank_`` and ``singular_`` come from the Gram's eigenvalues.
    ``copy_X`` is accepted for compatibility: ``X`` is never written to.
    """

    def __init__(
        self, fit_intercept: bool = True, copy_X: bool = True, output_type: str = "input"
    ) -> None:
        self.fit_intercept = fit_intercept
        self.copy_X = copy_X
        self.output_type = output_type

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegression:
        """Fit on distributed ``X`` and ``y`` (collective: two all-reduces)."""
        self._require_y(y)
        rows = self._fit_rows(X)
        m = _Moments(rows, y, sample_weight, self.fit_intercept, negative=True)
        eigen = np.sort(np.linalg.eigvalsh(m.gram))[::-1]
        top = max(float(eigen[0]), 0.0)
        rank = int(np.count_nonzero(eigen > _TOL**2 * top)) if top > 0 else 0
        coef = None
        if rank == rows.n_features:
            try:
                coef = scipy.linalg.cho_solve(scipy.linalg.cho_factor(m.gram), m.xy)
            except np.linalg.LinAlgError:
                coef = None
        if coef is None:
            coef = scipy.linalg.lstsq(m.gram, m.xy, cond=_TOL**2)[0] if top > 0 else m.xy * 0
        self.rank_ = rank
        self.singular_ = np.sqrt(np.clip(eigen, 0, None)).astype(rows.dtype)
        self._set(coef, m, rows, ravel_single=False)
        return self


class Ridge(_LinearModel):
    """Linear least squares with an L2 penalty (scikit-learn's ``Ridge``), fitted in place.

    ``alpha`` (a float, or one per target) is added to the diagonal of the all-reduced centred
    Gram matrix (never to the intercept, which comes from the means, as in scikit-learn) and
    the system solved by Cholesky (``scipy.linalg.cho_factor``); should it not be positive
    definite (``alpha=0`` on rank-deficient data) ``scipy.linalg.lstsq`` solves it
    (``solver_`` says which). ``solver``: ``'auto'`` or ``'cholesky'`` (the same path).
    """

    _SOLVERS = ("auto", "cholesky")

    def __init__(
        self,
        alpha: Any = 1.0,
        fit_intercept: bool = True,
        solver: str = "auto",
        output_type: str = "input",
    ) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.output_type = output_type

    def _alphas(self, targets: int) -> np.ndarray:
        try:
            alpha = np.asarray(self.alpha, dtype=np.float64).ravel()
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"alpha: expected a float or an array of floats, found {self.alpha!r}"
            ) from exc
        if alpha.size == 0 or np.any(alpha < 0) or not np.all(np.isfinite(alpha)):
            raise ValueError(
                f"alpha: expected a float >= 0 (or one per target), found {self.alpha!r}"
            )
        if alpha.size not in (1, targets):
            raise ValueError(
                "Number of targets and number of penalties do not correspond:"
                f" {targets} != {alpha.size} (alpha)"
            )
        return np.broadcast_to(alpha, (targets,))

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Ridge:
        """Fit on distributed ``X`` and ``y`` (collective: two all-reduces)."""
        if self.solver not in self._SOLVERS:
            raise ValueError(
                f"solver: expected one of {', '.join(map(repr, self._SOLVERS))} (a Cholesky"
                f" solve of the all-reduced Gram matrix), found {self.solver!r}"
            )
        if self.alpha is None or isinstance(self.alpha, str):
            raise TypeError(f"alpha: expected a float or an array of floats, found {self.alpha!r}")
        self._require_y(y)
        rows = self._fit_rows(X)
        m = _Moments(rows, y, sample_weight, self.fit_intercept, negative=False)
        alphas = self._alphas(m.targets)
        p = rows.n_features
        coef = np.empty((p, m.targets))
        self.solver_ = "cholesky"
        groups = (
            [(alphas[0], slice(None))]
            if np.all(alphas == alphas[0])
            else [(a, slice(j, j + 1)) for j, a in enumerate(alphas)]
        )
        for alpha, cols in groups:
            a = m.gram + alpha * np.eye(p)
            try:
                coef[:, cols] = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a), m.xy[:, cols])
            except np.linalg.LinAlgError:
                coef[:, cols] = scipy.linalg.lstsq(a, m.xy[:, cols])[0]
                self.solver_ = "lstsq"
        self.n_iter_ = None
        self._set(coef, m, rows, ravel_single=True)
        return self
