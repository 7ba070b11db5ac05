"""Collectives for metadata and small statistics, over the job's UCX endpoints.

Every collective is a binomial tree (``O(log size)`` steps, ``O(size)`` messages): gather
towards a root and/or broadcast from it. Payloads are pickles of Python objects and small
arrays; they come only from peers that joined through the authenticated coordinator.
Messages are tagged ``(COLLECTIVE, sender, seq)`` where ``seq`` counts collectives, which
every rank calls in the same order (the MPI rule); the closing barrier uses its own kind so
it can never be confused with a user's collective.

Wire format of one payload: ``pickle.dumps((status, value), protocol=5)`` where ``status``
is ``"ok"`` or ``"error"`` (``value`` then holds the message that every rank raises).
"""

from __future__ import annotations

import itertools
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gpupart import backend as backends
from gpupart.comm.engine import ProgressEngine, SendOperation
from gpupart.comm.tags import Kind, make_tag
from gpupart.comm.transport import Transport
from gpupart.errors import CollectiveError, CommTimeoutError, PeerLostError
from gpupart.job.coordinator import LEFT_REASON

__all__ = ["REDUCE_OPS", "Collectives", "Mailbox"]

#: Reduction operators accepted by :meth:`Collectives.allreduce`.
REDUCE_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "sum": np.add,
    "prod": np.multiply,
    "min": np.minimum,
    "max": np.maximum,
}


_LOST_GRACE = 0.5  # seconds to wait for a lost peer's last messages


class Mailbox:
    """Collective payloads that have arrived, waiting for the collective that expects them."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, int, int], bytes] = {}
        self._cond = threading.Condition()

    def put(self, kind: int, sender: int, seq: int, payload: np.ndarray) -> None:
        """Store a payload (called from the progress thread)."""
        with self._cond:
            self._items[(kind, sender, seq)] = payload.tobytes()
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every waiter so it re-checks for lost peers."""
        with self._cond:
            self._cond.notify_all()

    def take(
        self,
        kind: int,
        sender: int,
        seq: int,
        *,
        deadline: float,
        timeout: float,
        what: str,
        lost: Callable[[int], PeerLostError | None],
    ) -> bytes:
        """Wait for and remove one payload; raises if ``sender`` is lost or time runs out."""
        key = (kind, sender, seq)
        lost_at = None
        with self._cond:
            while key not in self._items:
                err = lost(sender)
                if err is not None:
                    # What a peer sent before it left may still be in flight: a short grace.
                    now = time.monotonic()
                    lost_at = lost_at or now
                    if now - lost_at > _LOST_GRACE:
                        raise err
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommTimeoutError(f"{what}: waiting for rank {sender}", timeout)
                self._cond.wait(min(remaining, 0.25))
            return self._items.pop(key)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Collectives:
    """Barrier, broadcast, allgather and allreduce among ``size`` ranks (see module docstring)."""

    def __init__(
        self,
        rank: int,
        size: int,
        transport: Transport | None,
        engine: ProgressEngine | None,
        *,
        timeout: float,
    ) -> None:
        self.rank = rank
        self.size = size
        self.timeout = timeout
        self._transport = transport
        self._engine = engine
        self._mailbox = Mailbox()
        self._seq = {Kind.COLLECTIVE: itertools.count(), Kind.FINALIZE: itertools.count()}
        self._lock = threading.Lock()  # one collective at a time per process, like MPI
        if engine is not None:  # a world of one needs no messages
            for kind in (Kind.COLLECTIVE, Kind.FINALIZE):
                engine.on(kind, self._deliver(kind))
            engine.on_lost(lambda rank, reason: self._mailbox.wake())

    def _deliver(self, kind: Kind) -> Callable[[int, int, np.ndarray], None]:
        return lambda sender, seq, payload: self._mailbox.put(kind, sender, seq, payload)

    # -- point to point -------------------------------------------------------------------

    def _send(self, kind: Kind, dst: int, seq: int, status: str, value: Any, what: str) -> None:
        payload = pickle.dumps((status, value), protocol=5)
        request = self._transport.send(dst, make_tag(kind, self.rank, seq), payload)
        self._engine.submit(SendOperation(self._transport, dst, request, payload, what))

    def _recv(self, kind: Kind, src: int, seq: int, deadline: float, timeout: float, what: str):
        raw = self._mailbox.take(
            kind,
            src,
            seq,
            deadline=deadline,
            timeout=timeout,
            what=what,
            lost=self._any_crashed if kind is Kind.FINALIZE else self._any_lost,
        )
        return pickle.loads(raw)  # from an authenticated member of the job

    def _any_crashed(self, src: int) -> PeerLostError | None:
        """For the closing barrier: ``src`` gone, or any rank gone without saying goodbye.

        Ranks that finished the closing barrier leave cleanly and must not fail the others;
        a rank that crashed during it must (instead of a wait until the close timeout).
        """
        err = self._engine.lost_error(src)
        if err is not None:
            return err
        for rank, reason in self._engine.lost.items():
            if reason != LEFT_REASON:
                return PeerLostError(rank, reason)
        return None

    def _any_lost(self, src: int) -> PeerLostError | None:
        """Return the first rank lost, if any: a collective needs every rank of the job.

        Checking only ``src`` would leave a rank whose tree neighbours are alive waiting until
        the timeout, or blaming a neighbour that left because of the first loss. Not used for
        the closing barrier, which ranks that finished it leave cleanly.
        """
        lost = self._engine.lost  # in the order the losses were reported
        if not lost:
            return None
        rank = next(iter(lost))
        return PeerLostError(rank, lost[rank])

    # -- trees ----------------------------------------------------------------------------

    def _reduce(
        self,
        kind: Kind,
        seq: int,
        value: tuple[str, Any],
        combine: Callable[[tuple[str, Any], tuple[str, Any], int], tuple[str, Any]],
        deadline: float,
        timeout: float,
        what: str,
    ) -> tuple[str, Any] | None:
        """Binomial-tree reduction to rank 0; returns the result on rank 0, None elsewhere."""
        mask = 1
        while mask < self.size:
            if self.rank & mask:
                self._send(kind, self.rank - mask, seq, value[0], value[1], what)
                return None
            child = self.rank + mask
            if child < self.size:
                value = combine(value, self._recv(kind, child, seq, deadline, timeout, what), child)
            mask <<= 1
        return value

    def _bcast(
        self,
        kind: Kind,
        seq: int,
        value: tuple[str, Any] | None,
        deadline: float,
        timeout: float,
        what: str,
        root: int = 0,
    ) -> tuple[str, Any]:
        """Binomial-tree broadcast of ``value`` (meaningful on ``root``) to every rank."""
        relative = (self.rank - root) % self.size
        mask = 1
        while mask < self.size:
            if relative & mask:
                src = (relative - mask + root) % self.size
                value = self._recv(kind, src, seq, deadline, timeout, what)
                break
            mask <<= 1
        if value is None:
            raise CollectiveError(f"{what}: no value reached rank {self.rank}")
        mask >>= 1
        while mask > 0:
            if relative + mask < self.size:
                dst = (relative + mask + root) % self.size
                self._send(kind, dst, seq, value[0], value[1], what)
            mask >>= 1
        return value

    def _run(
        self,
        what: str,
        value: tuple[str, Any],
        combine: Callable[[tuple[str, Any], tuple[str, Any], int], tuple[str, Any]],
        timeout: float | None,
        kind: Kind = Kind.COLLECTIVE,
    ) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            seq = next(self._seq[kind])
            if self.size == 1:
                result = value
            else:
                root_value = self._reduce(kind, 2 * seq, value, combine, deadline, timeout, what)
                result = self._bcast(kind, 2 * seq + 1, root_value, deadline, timeout, what)
        status, payload = result
        if status == "error":
            raise CollectiveError(f"{what}: {payload}")
        return payload

    # -- public collectives ---------------------------------------------------------------

    def barrier(self, timeout: float | None = None, *, kind: Kind = Kind.COLLECTIVE) -> None:
        """Return once every rank has entered the barrier."""
        self._run("barrier", ("ok", None), _keep_first, timeout, kind)

    def broadcast(self, obj: Any, root: int = 0, timeout: float | None = None) -> Any:
        """Return ``root``'s ``obj`` on every rank."""
        self._check_root(root)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        value: tuple[str, Any] | None = None
        if self.rank == root:
            try:
                pickle.dumps(obj, protocol=5)
                value = ("ok", obj)
            except Exception as exc:
                value = ("error", f"rank {root} could not serialise its object: {exc!r}")
        with self._lock:
            seq = next(self._seq[Kind.COLLECTIVE])
            if self.size > 1:
                value = self._bcast(
                    Kind.COLLECTIVE, 2 * seq + 1, value, deadline, timeout, "broadcast", root
                )
        assert value is not None  # noqa: S101 - root's own value when size == 1
        if value[0] == "error":
            raise CollectiveError(f"broadcast: {value[1]}")
        return value[1]

    def allgather(self, obj: Any, timeout: float | None = None) -> list[Any]:
        """Return every rank's ``obj``, as a list indexed by rank."""

        def merge(a: tuple[str, Any], b: tuple[str, Any], _child: int) -> tuple[str, Any]:
            if a[0] == "error" or b[0] == "error":
                return a if a[0] == "error" else b
            return ("ok", {**a[1], **b[1]})

        gathered = self._run("allgather", ("ok", {self.rank: obj}), merge, timeout)
        return [gathered[r] for r in range(self.size)]

    def allreduce(self, array: Any, op: str = "sum", timeout: float | None = None) -> Any:
        """Reduce a small array (or scalar) elementwise over all ranks with ``op``.

        Returns the same kind of object it was given (NumPy array, CuPy array or scalar).
        Ranks passing different shapes or dtypes all raise :class:`~gpupart.CollectiveError`.
        """
        if op not in REDUCE_OPS:
            raise ValueError(f"op: expected one of {sorted(REDUCE_OPS)}, found {op!r}")
        host, restore = _to_host(array)
        ufunc = REDUCE_OPS[op]
        rank = self.rank

        def combine(a: tuple[str, Any], b: tuple[str, Any], child: int) -> tuple[str, Any]:
            if a[0] == "error" or b[0] == "error":
                return a if a[0] == "error" else b
            x, y = a[1], b[1]
            if x.shape != y.shape or x.dtype != y.dtype:
                return (
                    "error",
                    f"every rank must pass the same shape and dtype: rank {rank} passed"
                    f" {x.shape} {x.dtype}, rank {child} passed {y.shape} {y.dtype}",
                )
            return ("ok", ufunc(x, y))

        return restore(self._run(f"allreduce(op={op!r})", ("ok", host), combine, timeout))

    def alltoall(self, objs: Any, timeout: float | None = None) -> list[Any]:
        """Send ``objs[d]`` to rank ``d``; return what every rank sent here, by rank.

        One message to each other rank (``O(size)`` per rank). A rank that passes the wrong
        number of objects, or one that cannot be sent, makes every rank raise
        :class:`~gpupart.CollectiveError` naming it.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        outgoing: list[tuple[str, Any]]
        try:
            count = len(objs)
        except TypeError:
            count = None
        if count != self.size:
            found = "an object without a length" if count is None else f"{count}"
            problem = (
                f"rank {self.rank} passed {found} objects, expected {self.size} (one per rank)"
            )
            outgoing = [("error", problem)] * self.size
        else:
            outgoing = []
            for dst, obj in enumerate(objs):
                try:
                    if dst != self.rank:
                        pickle.dumps(obj, protocol=5)
                    outgoing.append(("ok", obj))
                except Exception as exc:
                    problem = f"rank {self.rank} could not send objs[{dst}]: {exc!r}"
                    outgoing = [("error", problem)] * self.size
                    break
        with self._lock:
            seq = 2 * next(self._seq[Kind.COLLECTIVE])
            for step in range(1, self.size):  # pairwise order spreads the load
                dst = (self.rank + step) % self.size
                status, value = outgoing[dst]
                self._send(Kind.COLLECTIVE, dst, seq, status, value, "alltoall")
            received = [outgoing[self.rank]] * self.size
            for step in range(1, self.size):
                src = (self.rank - step) % self.size
                received[src] = self._recv(Kind.COLLECTIVE, src, seq, deadline, timeout, "alltoall")
        problems = sorted({value for status, value in received if status == "error"})
        if problems:
            raise CollectiveError(f"alltoall: {'; '.join(problems)}")
        return [value for _, value in received]

    def _check_root(self, root: int) -> None:
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self.size:
            raise ValueError(f"root: expected a rank in 0..{self.size - 1}, found {root!r}")


def _keep_first(a: tuple[str, Any], b: tuple[str, Any], _child: int) -> tuple[str, Any]:
    return a if a[0] == "error" or b[0] != "error" else b


def _to_host(array: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Return a NumPy copy of ``array`` and a function turning a result back into its kind."""
    if isinstance(array, np.ndarray):
        return array, lambda r: r
    if isinstance(array, (int, float, complex, np.generic)) and not isinstance(array, bool):
        return np.asarray(
            array
        ), lambda r: r[()].item() if not isinstance(array, np.generic) else r[()]
    try:
        xp = backends.backend_for_array(array).xp  # CuPy: the only other array we accept
    except TypeError:
        pass
    else:
        return array.get(), xp.asarray
    raise TypeError(f"array: expected a NumPy/CuPy array or a number, found {type(array).__name__}")
