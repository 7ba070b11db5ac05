"""Collectives for metadata and small statistics, over the job's transport.

Every rank calls the same collectives in the same order (the MPI rule); the ``n``-th
collective of a kind uses sequence numbers ``2n`` and ``2n + 1``. Barrier, broadcast,
allgather and allreduce are one reduction to rank 0 along a binomial tree and one broadcast
back (``2 log2(size)`` steps; a broadcast's value travels up from its root first);
alltoall is one message to every other rank. The closing barrier uses a kind of its own
so it can never be confused with a user's collective.

Payloads are encoded with :mod:`gpupart.comm.codec`, never pickled: ``(signature, status,
value)``. The *signature* says what the sender called, with the arguments every rank must
agree on (root, op, dtype and shape); ``status`` is ``"ok"`` or ``"error"`` (``value`` then
says why, and every rank raises it). A contribution whose signature differs from the
receiver's own becomes such an error, naming both calls. A rank that sees a collective go
wrong in a way the others cannot learn from the tree (a message of another collective with
this number, a peer that did not answer in time) sends an *abort* to every rank, tag
``(ABORT, sender, n)`` with payload ``(kind, reason)``: each rank raises
:class:`~gpupart.CollectiveError` with that reason in (or on reaching) collective ``n``.
Waits nest: a rank with more tree levels below it waits a little longer, so the rank that
first times out is the one closest to whoever is stuck, and names it (in an abort); a rank
whose wait for the result times out waits up to two seconds more for that abort, and one
whose wait for a child with children of its own, one second more (so a child that entered
the collective up to a second later, and times out later, still names the stuck rank below
it; the result's wait is the longer, so it outlasts that one).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gpupart import backend as backends
from gpupart.comm import codec
from gpupart.comm.engine import ProgressEngine
from gpupart.comm.tags import Kind, make_tag
from gpupart.comm.transport import Transport
from gpupart.errors import (
    CollectiveError,
    CommTimeoutError,
    GpupartError,
    PeerLostError,
    ProtocolViolationError,
    TransportError,
)
from gpupart.job.coordinator import LEFT_REASON
from gpupart.trace import annotate

__all__ = ["REDUCE_OPS", "Collectives", "Mailbox"]

logger = logging.getLogger("gpupart.collectives")

#: Reduction operators accepted by :meth:`Collectives.allreduce`.
REDUCE_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "sum": np.add,
    "prod": np.multiply,
    "min": np.minimum,
    "max": np.maximum,
}

_LOST_GRACE = 0.5  # seconds to wait for a lost peer's last messages
#: After a wait for a collective's result times out, how long to wait for the abort of the
#: rank that gathers it, which names the rank that did not answer (at most the timeout).
_ABORT_GRACE = 2.0
#: After a wait for a child that gathers from ranks of its own times out, how long to wait
#: for an abort from that subtree naming the rank that is stuck (less than _ABORT_GRACE).
_SUBTREE_GRACE = 1.0
_KEPT_AHEAD = 4  # collectives ahead of this rank whose messages are kept

Signature = tuple[Any, ...]
Value = tuple[str, Any]


class Mailbox:
    """Collective messages that have arrived, waiting for the collective that expects them.

    Messages are decoded as they arrive (on the progressing thread). A message of a
    collective this rank has finished, or of one too far ahead, is dropped.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[int, int, int], tuple[Signature, str, Any]] = {}
        self._aborts: dict[tuple[int, int], str] = {}
        self._current: dict[int, int] = {}  # kind -> number of the collective under way
        self._cond = threading.Condition()

    def put(self, kind: int, sender: int, seq: int, payload: np.ndarray) -> None:
        """Store a message (called from the progressing thread)."""
        number = seq // 2
        with self._cond:
            current = self._current.get(kind, 0)
        if not current <= number < current + _KEPT_AHEAD:
            logger.warning(
                "dropped collective message %d of kind %d from rank %d", seq, kind, sender
            )
            return
        try:
            message = codec.decode(payload)
        except ProtocolViolationError as exc:
            message = exc
        if not (isinstance(message, tuple) and len(message) == 3):
            problem = (
                message if isinstance(message, Exception) else "not (signature, status, value)"
            )
            message = ((), "error", f"rank {sender} sent a malformed collective message: {problem}")
        with self._cond:
            self._items[(kind, sender, seq)] = message
            self._cond.notify_all()

    def put_abort(self, sender: int, number: int, payload: np.ndarray) -> None:
        """Store an abort of collective ``number`` (called from the progressing thread)."""
        try:
            kind, reason = codec.decode(payload)
            kind, reason = int(kind), str(reason)
        except (ProtocolViolationError, TypeError, ValueError) as exc:
            kind, reason = int(Kind.COLLECTIVE), f"rank {sender} sent a malformed abort: {exc}"
        with self._cond:
            self._aborts.setdefault((kind, number), reason)
            self._cond.notify_all()

    def wait_abort(self, kind: int, number: int, timeout: float) -> str | None:
        """Wait up to ``timeout`` for an abort of collective ``number``; return its reason."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (reason := self._aborts.get((kind, number))) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return reason

    def wake(self) -> None:
        """Wake every waiter so it re-checks for lost peers."""
        with self._cond:
            self._cond.notify_all()

    def begin(self, kind: int, number: int) -> None:
        """Start collective ``number`` of ``kind``: drop what is left of earlier ones."""
        with self._cond:
            self._current[kind] = number
            for key in [k for k in self._items if k[0] == kind and k[2] // 2 < number]:
                del self._items[key]

    def take(
        self,
        kind: int,
        sender: int,
        seq: int,
        *,
        signature: Signature,
        rank: int,
        deadline: float,
        what: str,
        lost: Callable[[int], PeerLostError | None],
    ) -> tuple[Signature, str, Any]:
        """Wait for and remove one message.

        Raises :class:`~gpupart.CollectiveError` for an abort of this collective or for a
        message of it with another signature (which this rank cannot fold in),
        :class:`~gpupart.PeerLostError` if ``sender`` is lost, and
        :class:`~gpupart.CommTimeoutError` (naming ``sender``) at ``deadline``.
        """
        key = (kind, sender, seq)
        number = seq // 2
        lost_at = None
        with self._cond:
            while key not in self._items:
                reason = self._aborts.get((kind, number))
                if reason is not None:
                    raise CollectiveError(reason)
                for (k, other, s), (theirs, _, _) in self._items.items():
                    if k == kind and s // 2 == number and theirs != signature and theirs:
                        raise CollectiveError(_disagree(rank, signature, other, theirs))
                err = lost(sender)
                if err is not None:
                    # What a peer sent before it left may still be in flight: a short grace.
                    now = time.monotonic()
                    lost_at = lost_at or now
                    if now - lost_at > _LOST_GRACE:
                        raise err
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommTimeoutError(f"{what}: rank {sender} did not answer", _NOT_KNOWN)
                self._cond.wait(min(remaining, 0.25))
            return self._items.pop(key)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


_NOT_KNOWN = 0.0  # CommTimeoutError's timeout when the message says enough


class Collectives:
    """Barrier, broadcast, allgather, allreduce and alltoall (see the module docstring)."""

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
        self._numbers = {Kind.COLLECTIVE: itertools.count(), Kind.FINALIZE: itertools.count()}
        self._lock = threading.Lock()  # one collective at a time per process, like MPI
        self._levels = _levels_below(rank, size)
        if engine is not None:  # a world of one needs no messages
            for kind in (Kind.COLLECTIVE, Kind.FINALIZE):
                engine.on(kind, self._deliver(kind))
            engine.on(Kind.ABORT, self._mailbox.put_abort)
            engine.on_lost(lambda rank, reason: self._mailbox.wake())

    def _deliver(self, kind: Kind) -> Callable[[int, int, np.ndarray], None]:
        return lambda sender, seq, payload: self._mailbox.put(kind, sender, seq, payload)

    # -- public collectives ---------------------------------------------------------------

    def barrier(self, timeout: float | None = None, *, kind: Kind = Kind.COLLECTIVE) -> None:
        """Return once every rank has entered the barrier."""
        self._tree(("barrier",), ("ok", None), _keep_first, timeout, kind)

    def broadcast(self, obj: Any, root: int = 0, timeout: float | None = None) -> Any:
        """Return ``root``'s ``obj`` on every rank."""
        self._check_root(root)
        value = (
            _encodable(obj, f"rank {root} could not send its object")
            if self.rank == root
            else ("ok", None)
        )

        def from_root(a: Value, b: Value, child: int) -> Value:
            if a[0] == "error" or b[0] == "error":
                return a if a[0] == "error" else b
            return b if _subtree_holds(child, root, self.size) else a

        return self._tree(("broadcast", root), value, from_root, timeout, root=root)

    def allgather(self, obj: Any, timeout: float | None = None) -> list[Any]:
        """Return every rank's ``obj``, as a list indexed by rank."""

        def merge(a: Value, b: Value, _child: int) -> Value:
            if a[0] == "error" or b[0] == "error":
                return a if a[0] == "error" else b
            return ("ok", {**a[1], **b[1]})

        mine = _encodable(obj, f"rank {self.rank} could not send its object")
        value = mine if mine[0] == "error" else ("ok", {self.rank: obj})
        gathered = self._tree(("allgather",), value, merge, timeout)
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

        def combine(a: Value, b: Value, _child: int) -> Value:
            if a[0] == "error" or b[0] == "error":
                return a if a[0] == "error" else b
            return ("ok", ufunc(a[1], b[1]))

        signature = ("allreduce", op, host.dtype.str, tuple(host.shape))
        return restore(self._tree(signature, ("ok", host), combine, timeout))

    def alltoall(self, objs: Any, timeout: float | None = None) -> list[Any]:
        """Send ``objs[d]`` to rank ``d``; return what every rank sent here, by rank.

        One message to each other rank (``O(size)`` per rank). A rank that passes the wrong
        number of objects, or one that cannot be sent, makes every rank raise
        :class:`~gpupart.CollectiveError` naming it.
        """
        try:
            count = len(objs)
        except TypeError:
            count = None
        if count != self.size:
            found = "an object without a length" if count is None else f"{count}"
            problem = (
                f"rank {self.rank} passed {found} objects, expected {self.size} (one per rank)"
            )
            outgoing: list[Value] = [("error", problem)] * self.size
        else:
            outgoing = [("ok", obj) for obj in objs]
            for dst, obj in enumerate(objs):
                sent = _encodable(obj, f"rank {self.rank} could not send objs[{dst}]")
                if sent[0] == "error":
                    outgoing = [sent] * self.size
                    break
        signature = ("alltoall",)
        kind = Kind.COLLECTIVE
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with annotate("collective.alltoall"), self._lock:
            number = self._begin(kind)
            seq = 2 * number
            try:
                for step in range(1, self.size):  # pairwise order spreads the load
                    dst = (self.rank + step) % self.size
                    self._send(kind, dst, seq, signature, outgoing[dst])
                received = [outgoing[self.rank]] * self.size
                for step in range(1, self.size):
                    src = (self.rank - step) % self.size
                    received[src] = self._recv(
                        kind, src, seq, signature, deadline, timeout, "alltoall"
                    )
            except GpupartError as exc:
                self._abort_all(kind, number, exc)
                raise
        problems = sorted({value for status, value in received if status == "error"})
        if problems:
            raise CollectiveError(f"alltoall: {'; '.join(problems)}")
        return [value for _, value in received]

    # -- the tree -------------------------------------------------------------------------

    def _tree(
        self,
        signature: Signature,
        value: Value,
        combine: Callable[[Value, Value, int], Value],
        timeout: float | None,
        kind: Kind = Kind.COLLECTIVE,
        root: int = 0,
    ) -> Any:
        """Reduce ``value`` to rank 0 with ``combine``, then broadcast the result back."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with annotate("collective." + signature[0]), self._lock:
            number = self._begin(kind)
            if self.size == 1:
                result = value
            else:
                try:
                    reduced = self._reduce(
                        kind, number, signature, value, combine, deadline, timeout
                    )
                    result = self._bcast(kind, number, signature, reduced, deadline, timeout)
                except GpupartError as exc:
                    self._abort_all(kind, number, exc)
                    raise
        status, payload = result
        if status == "error":  # the same words on every rank
            raise CollectiveError(f"{signature[0]}: {payload}")
        return payload

    def _reduce(
        self,
        kind: Kind,
        number: int,
        signature: Signature,
        value: Value,
        combine: Callable[[Value, Value, int], Value],
        deadline: float,
        timeout: float,
    ) -> Value | None:
        """Binomial-tree reduction to rank 0; the result on rank 0, None elsewhere.

        A rank waits for its children until a little before ``deadline``, the less the
        more levels are below it (see the module docstring).
        """
        seq = 2 * number
        margin = min(1.0, 0.05 * timeout)
        mine = deadline - margin * (_levels_below(0, self.size) - self._levels)
        mask = 1
        while mask < self.size:
            if self.rank & mask:
                self._send(kind, self.rank - mask, seq, signature, value)
                return None
            child = self.rank + mask
            if child < self.size:
                theirs = self._recv(
                    kind,
                    child,
                    seq,
                    signature,
                    mine,
                    timeout,
                    _call(signature),
                    subtree=_levels_below(child, self.size) > 0,
                )
                value = combine(value, theirs, child)
            mask <<= 1
        return value

    def _bcast(
        self,
        kind: Kind,
        number: int,
        signature: Signature,
        value: Value | None,
        deadline: float,
        timeout: float,
    ) -> Value:
        """Binomial-tree broadcast of ``value`` (meaningful on rank 0) to every rank."""
        seq = 2 * number + 1
        mask = 1
        while mask < self.size:
            if self.rank & mask:
                value = self._recv(
                    kind, self.rank - mask, seq, signature, deadline, timeout, _call(signature)
                )
                break
            mask <<= 1
        if value is None:
            raise CollectiveError(f"{_call(signature)}: no value reached rank {self.rank}")
        mask >>= 1
        while mask > 0:
            if self.rank + mask < self.size:
                self._send(kind, self.rank + mask, seq, signature, value)
            mask >>= 1
        return value

    # -- messages -------------------------------------------------------------------------

    def _begin(self, kind: Kind) -> int:
        number = next(self._numbers[kind])
        self._mailbox.begin(kind, number)
        return number

    def _send(self, kind: Kind, dst: int, seq: int, signature: Signature, value: Value) -> None:
        try:
            payload = codec.encode((signature, *value))
        except (TypeError, ValueError) as exc:  # checked by the caller; a last guard
            payload = codec.encode((signature, "error", f"rank {self.rank}: {exc}"))
        lost = self._any_crashed if kind is Kind.FINALIZE else self._any_lost
        err = lost(dst)
        if err is not None:  # a lost peer is every rank's news: not a send error of this one
            raise err
        try:
            self._engine.send_control(
                dst, make_tag(kind, self.rank, seq), payload, _call(signature)
            )
        except TransportError as exc:
            err = lost(dst)
            if err is not None:
                raise err from exc
            raise

    def _recv(
        self,
        kind: Kind,
        src: int,
        seq: int,
        signature: Signature,
        deadline: float,
        timeout: float,
        what: str,
        *,
        subtree: bool = False,
    ) -> Value:
        """Take ``src``'s message; ``subtree``: ``src`` gathers from ranks of its own."""
        try:
            theirs, status, value = self._mailbox.take(
                kind,
                src,
                seq,
                signature=signature,
                rank=self.rank,
                deadline=deadline,
                what=what,
                lost=self._any_crashed if kind is Kind.FINALIZE else self._any_lost,
            )
        except CommTimeoutError as exc:
            # The result did not come down, or a child that gathers did not answer: the rank
            # nearest the one that is stuck may say who it is.
            if seq % 2 or subtree:
                grace = _ABORT_GRACE if seq % 2 else _SUBTREE_GRACE
                reason = self._mailbox.wait_abort(kind, seq // 2, min(grace, timeout))
                if reason is not None:
                    raise CollectiveError(reason) from exc
            raise CommTimeoutError(f"{what}: rank {src} did not answer", timeout) from exc
        if theirs != signature and status != "error":  # an error already says what went wrong
            return ("error", _disagree(self.rank, signature, src, theirs))
        return (status, value)

    def _abort_all(self, kind: Kind, number: int, error: GpupartError) -> None:
        """Tell every rank that collective ``number`` failed here, and why."""
        if isinstance(error, PeerLostError) or self._engine is None:
            return  # every rank hears of a lost peer from the coordinator
        reason = str(error) if isinstance(error, CollectiveError) else f"rank {self.rank}: {error}"
        payload = codec.encode((int(kind), reason))
        for dst in range(self.size):
            if dst == self.rank or self._engine.lost_error(dst) is not None:
                continue
            with contextlib.suppress(GpupartError):  # a peer gone meanwhile
                tag = make_tag(Kind.ABORT, self.rank, number)
                self._engine.send_control(dst, tag, payload, "an abort")

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
        """Return the first rank lost, if any: a collective needs every rank of the job."""
        lost = self._engine.lost  # in the order the losses were reported
        if not lost:
            return None
        rank = next(iter(lost))
        return PeerLostError(rank, lost[rank])

    def _check_root(self, root: int) -> None:
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self.size:
            raise ValueError(f"root: expected a rank in 0..{self.size - 1}, found {root!r}")


def _encodable(obj: Any, what: str) -> Value:
    """``("ok", obj)`` if ``obj`` can be sent, else ``("error", why)``."""
    try:
        codec.encode(obj)
    except (TypeError, ValueError) as exc:
        return ("error", f"{what}: {exc}")
    return ("ok", obj)


def _levels_below(rank: int, size: int) -> int:
    """Tree levels below ``rank`` in the binomial reduction to rank 0."""
    levels, mask = 0, 1
    while mask < size and not rank & mask:
        if rank + mask < size:
            levels += 1
        mask <<= 1
    return levels


def _subtree_holds(child: int, rank: int, size: int) -> bool:
    """Whether ``rank`` is in the subtree that ``child`` reduces (child .. child + span)."""
    span = (child & -child) if child else size
    return child <= rank < child + span


def _disagree(rank: int, mine: Signature, other: int, theirs: Signature) -> str:
    """Describe two ranks in different collectives (or with different arguments)."""
    low, high = sorted([(rank, mine), (other, theirs)])
    calls = f"rank {low[0]} called {_call(low[1])}, rank {high[0]} called {_call(high[1])}"
    if mine and theirs and mine[:2] == theirs[:2] == ("allreduce", mine[1]):
        return f"every rank must pass the same shape and dtype: {calls}"
    return f"ranks called different collectives: {calls}"


def _call(signature: Signature) -> str:
    """How a signature reads in an error: ``allreduce(op='sum', dtype=<f8, shape=(3,))``."""
    if not signature:
        return "an unknown collective"
    name, *args = signature
    if name == "broadcast":
        return f"broadcast(root={args[0]})"
    if name == "allreduce":
        op, dtype, shape = args
        return f"allreduce(op={op!r}, dtype={np.dtype(dtype)}, shape={tuple(shape)})"
    return f"{name}()"


def _keep_first(a: Value, b: Value, _child: int) -> Value:
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
