"""The parts of scikit-learn's private modules gpupart.ml relies on, in one place.

Parameter constraints (what ``_validate_params`` checks, as scikit-learn's own estimators
declare them) and PCA's Minka MLE for ``n_components='mle'``. Should scikit-learn move them,
only this module changes.
"""

from __future__ import annotations

from typing import Any

from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions

__all__ = ["Interval", "RealNotInt", "StrOptions", "infer_dimension"]


def infer_dimension(spectrum: Any, n_samples: int) -> int:
    """Return the number of components Minka's MLE picks (scikit-learn's ``'mle'``)."""
    from sklearn.decomposition._pca import _infer_dimension

    return int(_infer_dimension(spectrum, n_samples))
