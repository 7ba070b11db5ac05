"""NVTX ranges for profilers: ``with annotate("fetch.get"): ...`` shows up in Nsight Systems.

The ranges go to the NVTX domain ``gpupart`` through the ``nvtx`` package. Without that
package, or without a profiler attached (``nvtx`` then hands out a dummy domain), every
range is one shared no-op context manager: a cached lookup and an empty ``with``, about
0.2 µs, cheap enough for the fetch hot path (``bench/RESULTS.md``). Whether ranges are
live is decided once per process, at the first range: a profiler attaches when the process
starts.

Range names are fixed strings (``fetch.get``, ``exchange``, ``compute.reduce``, ...): each
is registered once with NVTX and its event attributes are reused, so a live range costs a
push and a pop.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DOMAIN", "annotate", "nvtx_domain", "ranged"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The NVTX domain every gpupart range belongs to.
DOMAIN = "gpupart"


class _NoRange:
    """The range when nothing records it: enters and exits, nothing else (no state)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        return None


_OFF = _NoRange()  # stateless: one instance serves every range


class _Range:
    """A live NVTX range: pushes on enter, pops on exit (reentrant, reusable)."""

    __slots__ = ("_attributes", "_domain")

    def __init__(self, domain: Any, attributes: Any) -> None:
        self._domain = domain
        self._attributes = attributes

    def __enter__(self) -> None:
        self._domain.push_range(self._attributes)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._domain.pop_range()


@functools.cache
def nvtx_domain() -> Any:
    """Return the ``gpupart`` NVTX domain, or None without ``nvtx`` or without a profiler."""
    try:
        import nvtx
    except ImportError:
        return None
    domain = nvtx.get_domain(DOMAIN)
    return domain if isinstance(domain, nvtx.Domain) else None


@functools.cache
def annotate(name: str) -> contextlib.AbstractContextManager[Any]:
    """Return the context manager of the range ``name`` (a no-op when nothing records it)."""
    domain = nvtx_domain()
    if domain is None:
        return _OFF
    return _Range(domain, domain.get_event_attributes(message=name))


def ranged(name: str) -> Callable[[_F], _F]:
    """Decorate a function to run inside the range ``name`` (decided at each call, not here)."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with annotate(name):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
