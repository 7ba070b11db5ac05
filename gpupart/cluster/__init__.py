"""The job runtime: joining, tiles and fetch over UCX, collectives, liveness.

Names resolve lazily so that the launcher (which only needs the coordinator and bootstrap)
never imports the runtime; UCX (ucxx) is imported only when a multi-process runtime starts.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Handle", "Runtime", "RuntimeOptions", "current", "init"]

_LAZY = {
    "Handle": "gpupart.cluster.tiles",
    "Runtime": "gpupart.cluster.runtime",
    "RuntimeOptions": "gpupart.cluster.options",
    "current": "gpupart.cluster.runtime",
    "init": "gpupart.cluster.runtime",
}


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gpupart.cluster' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
