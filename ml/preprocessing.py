"""Standardisation of distributed features: scikit-learn's ``StandardScaler``, fitted in place.

``fit`` makes two passes over this rank's rows, each ending in one packed all-reduce: the
(weighted) count and sum of every feature (the global mean), then the sums of squared and
plain deviations from that mean (scikit-learn's two-pass variance with its correction
term, so ``var_`` matches to rounding). NaN is ignored in ``fit`` and kept by ``transform``,
as scikit-learn does; infinity is refused on every rank. Sums run on each block's device in
float64; ``mean_``/``var_``/``scale_`` are float64 NumPy arrays on every rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gpupart.ml._data import Rows, check_X, check_y, row_chunks, rows_like
from gpupart.ml._reduce import packed_sum, to_host
from gpupart.ml.base import Estimator
from sklearn.base import OneToOneFeatureMixin, TransformerMixin

__all__ = ["StandardScaler"]


class StandardScaler(OneToOneFeatureMixin, TransformerMixin, Estimator):
    """Centre and scale features by their global mean and standard deviation.

    ``n_samples_seen_``, ``mean_``, ``var_`` and ``scale_`` are scikit-learn's (``scale_`` is
    1 for a feature that is constant up to rounding). ``transform``/``inverse_transform``
    return a result lined up with ``X`` (no message; never in place, so ``copy`` is accepted
    for compatibility only). ``partial_fit`` is not offered.
    """

    _fitted_attributes = ("n_samples_seen_", "n_features_in_")

    def __init__(
        self,
        with_mean: bool = True,
        with_std: bool = True,
        copy: bool = True,
        output_type: str = "input",
    ) -> None:
        self.with_mean = with_mean
        self.with_std = with_std
        self.copy = copy
        self.output_type = output_type

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- input ---------------------------------------------------------------------------

    def _rows(self, X: Any, *, fitting: bool) -> Rows:
        """``X`` checked as scikit-learn's scaler does: NaN allowed, infinity refused."""
        if not fitting:
            self._check_fitted()
        self._check_output_type()
        rows = check_X(X, finite=False)
        xp, flags = rows.array.xp, 0
        for _, b in rows.blocks:
            if b.size:
                flags += int(bool(xp.any(xp.isinf(b))))
        if rows.runtime.allreduce(np.array([flags], dtype=np.int64), op="max")[0]:
            raise ValueError(f"Input X contains infinity or a value too large for {rows.dtype!r}.")
        if fitting:
            self.n_features_in_ = rows.n_features
            if rows.feature_names is not None:
                self.feature_names_in_ = rows.feature_names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif rows.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {rows.n_features} features, but StandardScaler is expecting"
                f" {self.n_features_in_} features as input."
            )
        return rows

    # -- fitting -------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StandardScaler:
        """Compute the global mean and variance of every feature (collective)."""
        rows = self._rows(X, fitting=True)
        self._fit(rows, sample_weight)
        return self

    def _fit(self, rows: Rows, sample_weight: Any) -> None:
        xp, rt, p = rows.array.xp, rows.runtime, rows.n_features
        ws = None
        if sample_weight is not None:
            # scikit-learn rounds the weights to X's dtype first
            ws = check_y(sample_weight, rows, what="sample_weight", dtype=rows.dtype)
            ws = [w.astype(np.float64) for w in ws]
        # each block in chunks of rows, upcast chunk by chunk: temporaries stay bounded
        chunks = [(b, sl) for _, b in rows.blocks for sl in row_chunks(b.shape[0], p)]
        if ws is not None:
            ws = [
                w[sl]
                for w, (_, b) in zip(ws, rows.blocks, strict=True)
                for sl in row_chunks(b.shape[0], p)
            ]

        def pieces() -> Any:
            for b, sl in chunks:
                xb = b[sl].astype(np.float64, copy=False)
                yield xb, xp.isnan(xb)

        count, plain, sums = np.zeros(p), np.zeros(p), np.zeros(p)
        for i, (xb, nan) in enumerate(pieces()):
            valid = (~nan).astype(np.float64)
            filled = xp.where(nan, 0.0, xb)
            plain = plain + to_host(valid.sum(0))
            if ws is None:
                count, sums = count + to_host(valid.sum(0)), sums + to_host(filled.sum(0))
            else:
                count, sums = count + to_host(ws[i] @ valid), sums + to_host(ws[i] @ filled)
        count, plain, sums = packed_sum(rt, [count, plain, sums])
        if ws is not None and not count.any() and plain.any():
            raise ValueError("Sample weights must contain at least one non-zero number.")
        if not self.with_mean and not self.with_std:
            dtype = np.int64 if ws is None else rows.dtype
            self.mean_ = self.var_ = self.scale_ = None
            self.n_samples_seen_ = _one_if_equal(plain.astype(dtype))
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = sums / count
        self.mean_ = mean
        self.n_samples_seen_ = _one_if_equal(count)
        if not self.with_std:
            self.var_ = self.scale_ = None
            return
        sq, corr = np.zeros(p), np.zeros(p)
        m = xp.asarray(mean)
        for i, (xb, nan) in enumerate(pieces()):
            dev = xp.where(nan, 0.0, xb - m)
            if ws is None:
                sq, corr = sq + to_host((dev * dev).sum(0)), corr + to_host(dev.sum(0))
            else:
                sq, corr = sq + to_host(ws[i] @ (dev * dev)), corr + to_host(ws[i] @ dev)
        sq, corr = packed_sum(rt, [sq, corr])
        with np.errstate(divide="ignore", invalid="ignore"):
            var = (sq - corr**2 / count) / count
        self.var_ = var
        eps = np.finfo(np.float64).eps
        n = self.n_samples_seen_
        constant = var <= n * eps * var + (n * mean * eps) ** 2
        with np.errstate(invalid="ignore"):  # a constant feature's var may round below 0
            scale = np.sqrt(var)
        scale[constant] = 1.0
        self.scale_ = scale

    # -- transforming --------------------------------------------------------------------

    def _apply(self, rows: Rows, inverse: bool) -> Any:
        xp, dtype = rows.array.xp, rows.dtype
        mean = xp.asarray(self.mean_.astype(dtype)) if self.with_mean else None
        scale = xp.asarray(self.scale_.astype(dtype)) if self.with_std else None
        pieces = []
        for _, b in rows.blocks:
            out = b.copy()
            if inverse:
                if scale is not None:
                    out *= scale
                if mean is not None:
                    out += mean
            else:
                if mean is not None:
                    out -= mean
                if scale is not None:
                    out /= scale
            pieces.append(out)
        return self._output(rows_like(rows, pieces, dtype), rows)

    def transform(self, X: Any, copy: bool | None = None) -> Any:
        """``(X - mean_) / scale_``, lined up with ``X`` (no message beyond the input checks)."""
        return self._apply(self._rows(X, fitting=False), inverse=False)

    def inverse_transform(self, X: Any, copy: bool | None = None) -> Any:
        """``X * scale_ + mean_``, lined up with ``X``."""
        return self._apply(self._rows(X, fitting=False), inverse=True)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """``fit`` then ``transform`` of the same rows (``X`` checked once)."""
        rows = self._rows(X, fitting=True)
        self._fit(rows, sample_weight)
        return self._apply(rows, inverse=False)


def _one_if_equal(counts: np.ndarray) -> Any:
    """scikit-learn's ``n_samples_seen_``: one number when every feature saw the same count."""
    return counts[0] if counts.max() == counts.min() else counts
