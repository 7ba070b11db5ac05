"""One rank's part of a collective step of an adapter, reported to every rank.

Another system's call (a scatter, a publish, a ``ray.put``) can fail on one rank only; the
other ranks would then wait for it in the next collective. :func:`step` runs the rank's part,
all-gathers how it went and raises the same :class:`~gpupart.CollectiveError` on every rank
when any failed, naming the ranks and their errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from gpupart.errors import CollectiveError

__all__ = ["step"]

T = TypeVar("T")


def step(rt: Any, what: str, timeout: float, fn: Callable[[], T]) -> T:
    """Run ``fn`` on this rank; if it failed on any rank, raise on every rank (collective)."""
    result, problem = None, None
    try:
        result = fn()
    except Exception as exc:  # a foreign failure: reported to every rank
        problem = f"{type(exc).__name__}: {exc}"
    reports = rt.allgather(problem, timeout=timeout)
    bad = [(r, p) for r, p in enumerate(reports) if p is not None]
    if bad:
        detail = "; ".join(f"rank {r}: {p}" for r, p in bad)
        raise CollectiveError(f"{what} failed ({detail})")
    return result  # type: ignore[return-value]
