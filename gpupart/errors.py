"""One exception hierarchy for gpupart, rooted at :class:`GpupartError`.

Every error pickles (so it crosses process boundaries intact: a rank's error can be shown by
the launcher or by another rank) and carries its structured fields as attributes, while the
message says what was expected and what was found.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "BootstrapError",
    "CollectiveError",
    "CommTimeoutError",
    "FetchError",
    "GpupartError",
    "InteropError",
    "LaunchError",
    "NotInitializedError",
    "PartitionedError",
    "PartitionedTypeError",
    "PeerLostError",
    "ProtocolViolationError",
    "TileNotFoundError",
    "TransportError",
    "UCXLibraryError",
]


def _rebuild(cls: type[BaseException], args: tuple, state: dict) -> BaseException:
    """Recreate an error without calling its ``__init__`` (whose signature may differ)."""
    err = cls.__new__(cls)
    BaseException.__init__(err, *args)
    err.__dict__.update(state)
    return err


class GpupartError(Exception):
    """Base class of every error gpupart raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class PartitionedError(GpupartError, ValueError):
    """A ``__partitioned__`` structure breaks a rule of the protocol.

    ``path`` names the offending item, e.g. ``partitions[(1, 0)]['shape']``; ``expected`` and
    ``found`` say what the rule wants and what the structure holds.
    """

    def __init__(self, path: str, expected: str, found: str) -> None:
        self.path = path
        self.expected = expected
        self.found = found
        super().__init__(f"{path}: expected {expected}, found {found}")


class PartitionedTypeError(PartitionedError, TypeError):
    """A ``__partitioned__`` item has the wrong *type* (also a :class:`TypeError`)."""


class InteropError(GpupartError, RuntimeError):
    """Another system (Dask, Ray, Modin, MPI, ...) is not set up the way an adapter needs.

    The message names the system, what the adapter expected and what it found.
    """


class NotInitializedError(GpupartError, RuntimeError):
    """An operation needs a runtime (``gpupart.init()``) and none is active, or it is closed."""


class BootstrapError(GpupartError, RuntimeError):
    """Joining the job failed: bad launcher/Slurm/MPI variables, or rendezvous failed."""


class AuthenticationError(BootstrapError):
    """A process tried to join the job without proving the job's secret."""


class LaunchError(GpupartError, RuntimeError):
    """``gpupart run`` could not start the job, or a rank failed."""


class TransportError(GpupartError, ConnectionError):
    """The UCX transport failed underneath an operation."""


class UCXLibraryError(TransportError):
    """Two copies of UCX meet in one process (e.g. an MPI's own and the one ucxx uses).

    ``loaded`` is the copy found first, ``wanted`` the one gpupart would load (both described
    as text: directory, version, owner); the message says how to end up with one.
    """

    def __init__(self, loaded: object, wanted: object, fix: str, detail: str = "") -> None:
        self.loaded = str(loaded)
        self.wanted = str(wanted) if wanted is not None else "none found"
        self.fix = fix
        found = f"{self.loaded}, loaded before gpupart's"
        if detail:
            found += f" (loading gpupart's failed: {detail})"
        super().__init__(
            f"UCX: expected one UCX in this process, {self.wanted}; found {found}. Fix: {fix}"
        )


class PeerLostError(TransportError):
    """A peer rank died or left; operations that need it cannot complete."""

    def __init__(self, rank: int, reason: str = "its process exited") -> None:
        self.rank = rank
        self.reason = reason
        who = "the job coordinator" if rank < 0 else f"rank {rank}"
        super().__init__(f"{who} was lost: {reason}")


class CommTimeoutError(GpupartError, TimeoutError):
    """A wait ran past its timeout (``what`` names the wait, ``timeout`` its limit)."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        super().__init__(f"{what}: no answer within {timeout:g} s")


class CollectiveError(GpupartError, ValueError):
    """A collective could not complete because ranks disagreed (same error on every rank)."""


class FetchError(GpupartError):
    """A tile could not be fetched; the owner reported why."""


class TileNotFoundError(FetchError, LookupError):
    """The owner has no tile with that id (never registered, or freed)."""

    def __init__(self, owner: int, tile_id: int, detail: str = "") -> None:
        self.owner = owner
        self.tile_id = tile_id
        msg = f"rank {owner} has no tile {tile_id} (never put, or already freed)"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class ProtocolViolationError(GpupartError, ValueError):
    """A peer sent a malformed or truncated wire message (rejected, never crashes the owner)."""
