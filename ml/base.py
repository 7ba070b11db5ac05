"""What every ``gpupart.ml`` estimator shares: scikit-learn's API, fitted checks, ``output_type``.

Estimators derive from :class:`Estimator` (scikit-learn's ``BaseEstimator``: parameters only in
the constructor, ``get_params``/``set_params``, the repr) and call :meth:`Estimator._fit_rows`
(input checks, ``n_features_in_``, ``feature_names_in_``) and :meth:`Estimator._rows_for`
(``predict``/``transform`` input, checked against what ``fit`` saw). Fitted attributes end in
``_`` and are NumPy arrays on the host (small: coefficients, centres, components).

``output_type`` (cuML's): what ``predict``/``transform`` return. ``'input'`` (default): a
:class:`~gpupart.DistArray` lined up with ``X`` for distributed input, a NumPy array for a
NumPy array in a one-process run, a pandas object for a pandas frame; ``'numpy'``/``'cupy'``:
the whole result gathered on every rank (collective; only when asked); ``'pandas'``: the
same as a pandas object; ``'gpupart'``: always the DistArray.
"""

from __future__ import annotations

from typing import Any

from gpupart.ml._data import Rows, check_X
from gpupart.ml._reduce import to_host
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as _SklearnNotFitted

from gpupart.errors import GpupartError

__all__ = ["OUTPUT_TYPES", "Estimator", "NotFittedError"]

OUTPUT_TYPES = ("input", "gpupart", "numpy", "cupy", "pandas")


class NotFittedError(GpupartError, _SklearnNotFitted):
    """``predict``/``transform``/``score`` before ``fit`` (also scikit-learn's NotFittedError)."""


class Estimator(BaseEstimator):
    """Base of the estimators (see the module docstring)."""

    #: attributes ``fit`` sets; the first tells whether the estimator is fitted
    _fitted_attributes: tuple[str, ...] = ()

    def _check_output_type(self) -> None:
        value = getattr(self, "output_type", "input")
        if value not in OUTPUT_TYPES:
            raise ValueError(
                f"output_type: expected one of {', '.join(map(repr, OUTPUT_TYPES))}, found"
                f" {value!r}"
            )

    def _fit_rows(self, X: Any, *, keep_float32: bool = True) -> Rows:
        """Check ``X`` for ``fit`` (collective) and record what scikit-learn records."""
        self._check_output_type()
        rows = check_X(X, keep_float32=keep_float32)
        self.n_features_in_ = rows.n_features
        if rows.feature_names is not None:
            self.feature_names_in_ = rows.feature_names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return rows

    def _check_fitted(self) -> None:
        name = self._fitted_attributes[0] if self._fitted_attributes else "n_features_in_"
        if not hasattr(self, name):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with"
                " appropriate arguments before using this estimator."
            )

    def _rows_for(self, X: Any, *, keep_float32: bool = True) -> Rows:
        """Check ``X`` for ``predict``/``transform``: fitted, the same number of features."""
        self._check_fitted()
        self._check_output_type()
        rows = check_X(X, keep_float32=keep_float32)
        if rows.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {rows.n_features} features, but {type(self).__name__} is expecting"
                f" {self.n_features_in_} features as input."
            )
        return rows

    def _output(self, result: Any, rows: Rows) -> Any:
        """Return a distributed ``result`` (a DistArray lined up with X) as ``output_type`` says."""
        kind = getattr(self, "output_type", "input")
        if kind == "input":
            kind = "gpupart" if rows.kind != "local" else "numpy"
        if kind == "gpupart":
            return result
        whole = result.to_numpy()
        if kind == "numpy":
            return to_host(whole)
        if kind == "cupy":
            import cupy

            return cupy.asarray(whole)
        import pandas as pd

        host = to_host(whole)
        return pd.Series(host) if host.ndim == 1 else pd.DataFrame(host)
