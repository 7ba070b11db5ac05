"""PCA of distributed rows: a small all-reduced (or all-gathered) matrix, factored on every rank.

``'covariance_eigh'``: the mean (one all-reduce), then each rank's centred Gram matrix
(one all-reduce of ``n_features^2`` values) and ``eigh`` of the covariance on every rank:
fast for tall, skinny data, but it squares the condition number. ``'tsqr'`` (also ``'full'``):
each rank QR-factors its centred rows (keeping only ``R``), the small ``R`` factors are
all-gathered, and every rank takes the QR of their stack and the SVD of the final ``R``,
which are the singular values and right singular vectors of the centred data, as accurate
as scikit-learn's full SVD. Signs follow scikit-learn's ``svd_flip(u_based_decision=False)``.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from gpupart.ml._data import CHUNK_ELEMENTS, Rows, check_X, rows_like
from gpupart.ml._reduce import allreduce_host, local_sum, to_host
from gpupart.ml._sklearn import Interval, RealNotInt, StrOptions, infer_dimension
from gpupart.ml.base import OUTPUT_TYPES, Estimator
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.extmath import svd_flip

__all__ = ["PCA"]

SOLVERS = ("auto", "covariance_eigh", "tsqr", "full")


class PCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, Estimator):
    """Principal component analysis of distributed rows (see ``docs/ml.md``).

    ``svd_solver='auto'`` takes ``'covariance_eigh'`` when ``n_features <= 1000`` and
    ``n_samples >= 10 * n_features`` (scikit-learn's rule), else ``'tsqr'``; ``'full'`` is
    ``'tsqr'`` (an exact SVD of the centred data). ``random_state`` is accepted for
    scikit-learn's API and unused: both solvers are deterministic.
    """

    _fitted_attributes = ("components_", "explained_variance_", "mean_", "n_components_")
    _parameter_constraints: dict = {
        "n_components": [
            Interval(Integral, 0, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="neither"),
            StrOptions({"mle"}),
            None,
        ],
        "whiten": ["boolean"],
        "svd_solver": [StrOptions(set(SOLVERS))],
        "random_state": ["random_state"],
        "output_type": [StrOptions(set(OUTPUT_TYPES))],
    }

    def __init__(
        self,
        n_components: int | float | str | None = None,
        *,
        whiten: bool = False,
        svd_solver: str = "auto",
        random_state: Any = None,
        output_type: str = "input",
    ) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.random_state = random_state
        self.output_type = output_type

    @property
    def _n_features_out(self) -> int:
        return self.components_.shape[0]

    def fit(self, X: Any, y: Any = None) -> PCA:
        """Fit the principal axes of ``X`` (collective)."""
        self._validate_params()
        rows = self._fit_rows(X)
        n, m = rows.n_samples, rows.n_features
        solver = self._solver(n, m)
        wanted = self._check_components(n, m, solver)
        rt, xp = rows.runtime, rows.array.xp
        mean = allreduce_host(rt, [local_sum(xp, [b.sum(axis=0) for _, b in rows.blocks], (m,))])
        mean /= n
        dev_mean = xp.asarray(mean.astype(rows.dtype))
        if solver == "covariance_eigh":
            variance, vt = _covariance_eigh(rows, dev_mean, n)
        else:
            variance, vt = _tsqr(rows, dev_mean, n)
        _, vt = svd_flip(None, vt, u_based_decision=False)
        total = variance.sum()
        ratio = variance / total
        count = self._count(wanted, variance, ratio, n)
        dtype = rows.dtype
        self._fit_svd_solver = solver
        self.mean_ = mean.astype(dtype)
        self.n_samples_ = n
        self.n_components_ = count
        self.components_ = vt[:count].astype(dtype)
        self.explained_variance_ = variance[:count].astype(dtype)
        self.explained_variance_ratio_ = ratio[:count].astype(dtype)
        self.singular_values_ = np.sqrt(variance[:count] * (n - 1)).astype(dtype)
        if count < min(n, m):
            self.noise_variance_ = dtype.type(variance[count:].mean())
        else:
            self.noise_variance_ = 0.0
        return self

    def _solver(self, n: int, m: int) -> str:
        if self.svd_solver == "auto":
            return "covariance_eigh" if m <= 1000 and n >= 10 * m else "tsqr"
        return "tsqr" if self.svd_solver == "full" else self.svd_solver

    def _check_components(self, n: int, m: int, solver: str) -> Any:
        wanted = min(n, m) if self.n_components is None else self.n_components
        if wanted == "mle":
            if n < m:
                raise ValueError("n_components='mle' is only supported if n_samples >= n_features")
        elif not 0 <= wanted <= min(n, m):
            raise ValueError(
                f"n_components={wanted} must be between 0 and min(n_samples, n_features)="
                f"{min(n, m)} with svd_solver={solver!r}"
            )
        return wanted

    @staticmethod
    def _count(wanted: Any, variance: np.ndarray, ratio: np.ndarray, n: int) -> int:
        """How many components to keep (scikit-learn's rules for 'mle' and fractions)."""
        if wanted == "mle":
            return infer_dimension(variance, n)
        if isinstance(wanted, Real) and not isinstance(wanted, Integral) and 0 < wanted < 1:
            return int(np.searchsorted(np.cumsum(ratio), wanted, side="right") + 1)
        return int(wanted)

    # -- transforms ---------------------------------------------------------------------------

    def transform(self, X: Any) -> Any:
        """Project ``X`` on the components (rows x n_components_), lined up with ``X``."""
        rows = self._rows_for(X)
        xp = rows.array.xp
        dtype = np.result_type(rows.dtype, self.components_.dtype)
        comp = xp.asarray(self.components_.astype(dtype))
        shift = xp.asarray(self.mean_.astype(dtype) @ self.components_.T.astype(dtype))
        scale = None
        if self.whiten:
            s = np.sqrt(self.explained_variance_.astype(dtype))
            s[s < np.finfo(dtype).eps] = np.finfo(dtype).eps
            scale = xp.asarray(s)
        pieces = []
        for _, block in rows.blocks:
            out = block.astype(dtype, copy=False) @ comp.T
            out -= shift
            if scale is not None:
                out /= scale
            pieces.append(out)
        return self._output(rows_like(rows, pieces, dtype), rows)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit, then project ``X``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, X: Any) -> Any:
        """Map projected rows back to feature space (rows x n_features), lined up with ``X``."""
        self._check_fitted()
        self._check_output_type()
        rows = check_X(X)
        if rows.n_features != self.n_components_:
            raise ValueError(
                f"X has {rows.n_features} features, but PCA.inverse_transform is expecting"
                f" {self.n_components_} features (n_components_) as input."
            )
        xp = rows.array.xp
        dtype = np.result_type(rows.dtype, self.components_.dtype)
        comp = self.components_.astype(dtype)
        if self.whiten:
            comp = np.sqrt(self.explained_variance_.astype(dtype))[:, None] * comp
        comp, mean = xp.asarray(comp), xp.asarray(self.mean_.astype(dtype))
        pieces = [block.astype(dtype, copy=False) @ comp + mean for _, block in rows.blocks]
        return self._output(rows_like(rows, pieces, dtype), rows)


def _centred_chunks(rows: Rows, mean: Any) -> Any:
    step = max(1, CHUNK_ELEMENTS // max(rows.n_features, 1))
    for _, block in rows.blocks:
        for lo in range(0, block.shape[0], step):
            yield block[lo : lo + step] - mean


def _covariance_eigh(rows: Rows, mean: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors (rows) of the covariance."""
    xp, m = rows.array.xp, rows.n_features
    gram = local_sum(xp, [c.T @ c for c in _centred_chunks(rows, mean)], (m, m))
    cov = allreduce_host(rows.runtime, [gram]).reshape(m, m) / (n - 1)
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1].copy(), vectors[:, ::-1]
    values[values < 0] = 0.0
    return values, vectors.T.copy()


def _tsqr(rows: Rows, mean: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Variances (``S^2 / (n - 1)``) and right singular vectors of the centred rows (TSQR)."""
    xp = rows.array.xp
    r = None
    for chunk in _centred_chunks(rows, mean):
        stacked = chunk if r is None else xp.concatenate([r, chunk])
        r = xp.linalg.qr(stacked, mode="r")
    mine = None if r is None else to_host(r).astype(np.float64)
    parts = [p for p in rows.runtime.allgather(mine) if p is not None and p.shape[0]]
    r = np.linalg.qr(np.concatenate(parts), mode="r")
    _, s, vt = np.linalg.svd(r, full_matrices=False)
    k = min(n, rows.n_features)  # the stacked R has at least k rows: as many values as a full SVD
    return s[:k] ** 2 / (n - 1), vt[:k]
