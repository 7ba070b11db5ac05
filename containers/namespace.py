"""The array-API namespace of distributed arrays: ``gpupart.array_api``.

Functions follow the 2024.12 standard's signatures and work on :class:`DistArray` operands
(and Python scalars, and small NumPy/CuPy arrays that broadcast against them). They are
collective: every rank calls them in the same order. A function the standard names but
this namespace does not provide raises :class:`NotProvidedError` naming it (both an
``AttributeError`` and a ``NotImplementedError``), never a wrong result.
"""

from __future__ import annotations

import inspect
from typing import NoReturn

from gpupart.containers.creation import (  # noqa: F401 (the namespace's creation functions)
    arange,
    asarray,
    empty,
    empty_like,
    eye,
    from_local,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    zeros,
    zeros_like,
)
from gpupart.containers.darray import runs_on_operand_stream
from gpupart.containers.dtypes import *  # noqa: F403
from gpupart.containers.dtypes import __all__ as _dtypes_all
from gpupart.containers.elementwise import *  # noqa: F403
from gpupart.containers.elementwise import __all__ as _elementwise_all
from gpupart.containers.indexing import *  # noqa: F403
from gpupart.containers.indexing import __all__ as _indexing_all
from gpupart.containers.linalg import *  # noqa: F403
from gpupart.containers.linalg import __all__ as _linalg_all
from gpupart.containers.manipulation import *  # noqa: F403
from gpupart.containers.manipulation import __all__ as _manipulation_all
from gpupart.containers.reductions import *  # noqa: F403
from gpupart.containers.reductions import __all__ as _reductions_all
from gpupart.containers.sorting import *  # noqa: F403
from gpupart.containers.sorting import __all__ as _sorting_all
from gpupart.containers.structure import *  # noqa: F403
from gpupart.containers.structure import __all__ as _structure_all

__all__ = sorted(
    {
        "arange",
        "asarray",
        "empty",
        "empty_like",
        "eye",
        "from_local",
        "full",
        "full_like",
        "linspace",
        "ones",
        "ones_like",
        "zeros",
        "zeros_like",
        *_dtypes_all,
        *_elementwise_all,
        *_indexing_all,
        *_linalg_all,
        *_manipulation_all,
        *_reductions_all,
        *_sorting_all,
        *_structure_all,
    }
)


# every function runs on its first array operand's stream (see darray.operand_stream)
globals().update(
    {
        name: runs_on_operand_stream(fn)
        for name, fn in list(globals().items())
        if name in __all__ and inspect.isfunction(fn)
    }
)


class NotProvidedError(AttributeError, NotImplementedError):
    """A name of the standard this namespace does not provide (yet).

    An ``AttributeError`` (so ``hasattr`` and feature detection work) and a
    ``NotImplementedError`` (what it means).
    """


def __getattr__(name: str) -> NoReturn:
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotProvidedError(
        f"gpupart.array_api.{name} is not provided for distributed arrays (yet); gather with"
        " x.to_numpy() and use NumPy, or open an issue"
    )


def __dir__() -> list[str]:
    return list(__all__)
