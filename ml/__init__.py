"""``gpupart.ml``: scikit-learn-style estimators that fit where distributed data lives.

Every estimator takes a :class:`~gpupart.DistArray`, a :class:`~gpupart.DistFrame`, any
object with ``__partitioned__`` (Heat, Dask via the interop adapter, an SPMD dict), or, in
a world of one process, a NumPy/CuPy array or a pandas frame. Each rank computes on its own
rows; only statistics are all-reduced. Needs scikit-learn (``pip install gpupart[ml]``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PCA",
    "KMeans",
    "LinearRegression",
    "LogisticRegression",
    "NotFittedError",
    "Ridge",
    "StandardScaler",
    "metrics",
    "train_test_split",
]

_LAZY = {
    "NotFittedError": ("gpupart.ml.base", "NotFittedError"),
    "LinearRegression": ("gpupart.ml.linear_model", "LinearRegression"),
    "Ridge": ("gpupart.ml.linear_model", "Ridge"),
    "LogisticRegression": ("gpupart.ml.logistic", "LogisticRegression"),
    "KMeans": ("gpupart.ml.cluster", "KMeans"),
    "PCA": ("gpupart.ml.decomposition", "PCA"),
    "StandardScaler": ("gpupart.ml.preprocessing", "StandardScaler"),
    "train_test_split": ("gpupart.ml.model_selection", "train_test_split"),
    "metrics": ("gpupart.ml.metrics", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gpupart.ml' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("sklearn", "scipy"):
            raise
        raise ModuleNotFoundError(
            f"gpupart.ml.{name} needs scikit-learn, which is not installed: pip install"
            " 'gpupart[ml]'",
            name=exc.name,
        ) from exc
    return module if attr is None else getattr(module, attr)


def __dir__() -> list[str]:
    return sorted(__all__)
