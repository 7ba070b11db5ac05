"""The progress engine: one background thread that drives UCX and completes operations.

The engine owns no protocol. It progresses the worker, receives unexpected messages and
hands them to the handler registered for their kind (tile requests, responses, collective
payloads), and polls in-flight :class:`Operation` objects until they finish. Callers post
sends and receives from their own thread (the transport is thread-safe) and
:meth:`ProgressEngine.submit` the operation; the owner of a tile never has to call anything
for its tiles to be served.

Scheduling: while there is traffic the thread spins (progress, probe, poll) so a request is
answered in microseconds; after ``spin`` seconds without activity it arms the worker and
sleeps in ``select`` until UCX or a submitter wakes it, bounded by a short timeout while
operations are in flight (some UCX wake-ups arrive late on shared memory)
and a longer one when idle.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from gpupart.comm.auth import MAC_BYTES, MessageSeal
from gpupart.comm.tags import Kind, split_tag
from gpupart.comm.transport import Transport
from gpupart.errors import AuthenticationError, CommTimeoutError, PeerLostError

__all__ = ["Operation", "ProgressEngine", "SendOperation"]

logger = logging.getLogger("gpupart.engine")

Handler = Callable[[int, int, np.ndarray], None]


class Operation:
    """Something in flight that the engine polls until it reports completion.

    Subclasses implement :meth:`poll` (return ``True`` once finished, never block) and
    :meth:`fail`. ``peer`` is the rank the operation depends on (it fails if that rank is
    lost); ``deadline`` a ``time.monotonic()`` value after which it fails with a timeout.
    """

    peer: int | None = None
    deadline: float | None = None
    what: str = "operation"
    timeout: float = 0.0

    def poll(self) -> bool:
        """Advance; return True once the operation is finished (successfully or not)."""
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        """Finish the operation with ``exc``."""
        raise NotImplementedError


class SendOperation(Operation):
    """Keeps a send's buffer alive until the transport is done with it, then checks it."""

    def __init__(
        self,
        transport: Transport,
        peer: int,
        request: Any,
        buffer: Any,
        what: str = "sending a message",
    ):
        self.transport = transport
        self.peer = peer
        self.request = request
        self.buffer = buffer
        self.what = what

    def poll(self) -> bool:
        """Return True once the send completed (raising if it failed)."""
        if not self.request.completed:
            return False
        self.transport.check(self.request)
        return True

    def fail(self, exc: BaseException) -> None:
        """Drop the request (cancelling the send) and the buffer."""
        self.request = None
        self.buffer = None


class _Incoming(Operation):
    """An unexpected message being received: checked, then handed to its kind's handler."""

    what = "receiving a message"

    def __init__(
        self,
        engine: ProgressEngine,
        tag: int,
        request: object,
        buffer: np.ndarray,
        handler: Handler,
    ):
        self.engine = engine
        self.tag = tag
        self.request = request
        self.buffer = buffer
        _, self.peer, self.seq = split_tag(tag)
        self.handler = handler
        self.handled = False  # the handler was called (it owns the outcome then)

    def poll(self) -> bool:
        if not self.request.completed:  # type: ignore[attr-defined]
            return False
        engine = self.engine
        engine.transport.check(self.request)
        self.request = None
        payload = self.buffer
        if engine.seal is not None:
            try:
                payload = engine.seal.open(self.tag, payload)
            except AuthenticationError as exc:
                self.fail(exc)
                return True
        self.handled = True
        self.handler(self.peer, self.seq, payload)  # type: ignore[arg-type]
        return True

    def fail(self, exc: BaseException) -> None:
        self.request = None
        self.engine._dropped(self.tag, exc, announced=not self.handled)


class _Helping:
    """Context manager counting threads that progress the engine themselves (hot path)."""

    __slots__ = ("_engine",)

    def __init__(self, engine: ProgressEngine) -> None:
        self._engine = engine

    def __enter__(self) -> None:
        engine = self._engine
        with engine._lock:  # callers on several threads: no lost updates
            engine._helpers += 1

    def __exit__(self, *exc: object) -> None:
        engine = self._engine
        with engine._lock:
            engine._helpers -= 1


class ProgressEngine:
    """Drives one :class:`~gpupart.comm.transport.Transport` from a background thread."""

    def __init__(
        self,
        transport: Transport,
        *,
        rank: int,
        spin: float = 0.002,
        idle_wait: float = 0.05,
        busy_wait: float = 0.001,
        seal: MessageSeal | None = None,
        max_message: int = 64 << 20,
    ) -> None:
        self.transport = transport
        self.rank = rank
        #: Seals control messages and checks them on arrival (None: no checks, for tests).
        self.seal = seal
        self._max_message = max_message
        self._drops = 0
        self._spin = spin
        self._idle_wait = idle_wait
        self._busy_wait = busy_wait
        self._handlers: dict[Kind, Handler] = {}
        self._announcers: dict[Kind, Callable[[int, int, bool], None]] = {}
        self._new_ops: collections.deque[Operation] = collections.deque()
        self._ops: list[Operation] = []
        self._lost: dict[int, str] = {}
        self._new_lost: collections.deque[int] = collections.deque()
        self._lost_listeners: list[Callable[[int, str], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pump_lock = threading.Lock()
        self._helpers = 0  # threads progressing from help_until
        self._next_deadline_check = 0.0
        self._thread = threading.Thread(target=self._run, name="gpupart-progress", daemon=True)
        self._error: BaseException | None = None
        self._discard = np.zeros(1, dtype=np.uint8)

    # -- configuration (before start) -----------------------------------------------------

    def on(
        self,
        kind: Kind,
        handler: Handler,
        announce: Callable[[int, int, bool], None] | None = None,
    ) -> None:
        """Route unexpected messages of ``kind`` to ``handler(sender, seq, payload)``.

        ``payload`` is the message without its MAC, which was checked. ``announce(sender,
        seq, True)``, if given, is called as soon as such a message is taken off the
        transport's queue, before its bytes have arrived (in the same round, and before any
        operation is polled), so a protocol can wait for a message it knows is coming;
        ``announce(sender, seq, False)`` follows if the message is then dropped.
        """
        self._handlers[kind] = handler
        if announce is not None:
            self._announcers[kind] = announce

    def on_lost(self, listener: Callable[[int, str], None]) -> None:
        """Call ``listener(rank, reason)`` (from the engine thread) when a peer is lost."""
        self._lost_listeners.append(listener)

    def start(self) -> None:
        """Start the progress thread."""
        self._thread.start()

    # -- thread-safe entry points ---------------------------------------------------------

    def submit(self, op: Operation) -> None:
        """Hand an in-flight operation to the engine (it fails at once if its peer is lost).

        The engine thread is woken only when no caller is progressing (see :meth:`helping`):
        waking it costs a GIL hand-off that dominates small-message latency.
        """
        self._new_ops.append(op)
        if not self._helpers:
            self.transport.wake()

    def track(self, op: Operation) -> None:
        """Like :meth:`submit`, from inside a handler (already on a progressing thread)."""
        self._new_ops.append(op)

    @contextlib.contextmanager
    def exclusive(self, timeout: float = 10.0) -> Iterator[None]:
        """Hold off every other progressing thread (so operations can be changed safely)."""
        if not self._pump_lock.acquire(timeout=timeout):
            raise CommTimeoutError("waiting for the progress engine", timeout)
        try:
            yield
        finally:
            self._pump_lock.release()

    def helping(self) -> _Helping:
        """Mark the calling thread as one that will progress (via :meth:`help_until`)."""
        return _Helping(self)

    def mark_lost(self, rank: int, reason: str) -> None:
        """Record that ``rank`` is gone: its operations fail with :class:`PeerLostError`."""
        with self._lock:
            if rank in self._lost:
                return
            self._lost[rank] = reason
        self._new_lost.append(rank)
        self.transport.wake()

    @property
    def lost(self) -> Mapping[int, str]:
        """Ranks known to be gone, with the reason."""
        with self._lock:
            return dict(self._lost)

    def lost_error(self, rank: int) -> PeerLostError | None:
        """Return the error for an operation needing ``rank``, or None if it is alive."""
        with self._lock:
            reason = self._lost.get(rank)
        return None if reason is None else PeerLostError(rank, reason)

    @property
    def alive(self) -> bool:
        """Whether the progress thread is running."""
        return self._thread.is_alive()

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is in flight (e.g. last sends before closing); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and (self._ops or self._new_ops):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread and fail what is still in flight; idempotent.

        Returns whether the thread has stopped (if not, within ``timeout``, the transport
        must not be closed under it: it is left as it is, and logged).
        """
        self._stop.set()
        self.transport.wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("the progress thread did not stop within %.1f s", timeout)
            return False
        closing = PeerLostError(self.rank, "this rank's runtime was closed")
        for op in self._ops + list(self._new_ops):
            op.fail(closing)
        self._ops.clear()
        self._new_ops.clear()
        return True

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the thread must never die silently
            self._error = exc
            logger.exception("gpupart progress engine stopped by an error")
            for op in self._ops:
                op.fail(exc)

    def _loop(self) -> None:
        last_active = time.monotonic()
        while not self._stop.is_set():
            if self._helpers:
                # A caller is progressing while it waits: stay off the GIL and out of its way
                # (checking back every millisecond costs one GIL hand-off per millisecond).
                time.sleep(0.001)
                continue
            with self._pump_lock:
                did = self.pump()
            now = time.monotonic()
            if did:
                last_active = now
            elif now - last_active > self._spin:
                self.transport.wait(self._busy_wait if self._ops else self._idle_wait)

    def pump(self) -> bool:
        """One round: progress UCX, take new work, receive, poll; True if anything happened.

        Callers must hold ``_pump_lock`` (the engine thread and :meth:`help_until` do).
        """
        did = self.transport.progress()
        while self._new_ops:
            op = self._new_ops.popleft()
            err = self.lost_error(op.peer) if op.peer is not None else None
            if err is not None:
                op.fail(err)
            else:
                self._ops.append(op)
            did = True
        if self._new_lost:
            self._handle_lost()
            did = True
        did |= self._receive_unexpected()
        if self._ops:
            did |= self._poll_ops()
        now = time.monotonic()
        if now >= self._next_deadline_check:
            self._check_deadlines(now)
            self._next_deadline_check = now + 0.05
        return did

    def help_until(
        self, done: Callable[[], bool], deadline: float, what: str, timeout: float
    ) -> None:
        """Progress from the calling thread until ``done()``; the MPI way to wait with low latency.

        Raises :class:`~gpupart.CommTimeoutError` at ``deadline`` (a ``time.monotonic()``).
        """
        last_active = time.monotonic()
        self._check_running()
        with self.helping():
            while not done():
                now = time.monotonic()
                if now > deadline:
                    raise CommTimeoutError(what, timeout)
                if self._pump_lock.acquire(blocking=False):
                    try:
                        if self.pump():
                            last_active = now
                        elif now - last_active > self._spin:
                            # Nothing moving: sleep on UCX's event fd instead of burning a
                            # core other ranks on this host may need.
                            self._check_running()
                            self.transport.wait(self._busy_wait)
                    finally:
                        self._pump_lock.release()
                else:
                    self._check_running()
                    time.sleep(0)

    def _check_running(self) -> None:
        """Raise if the progress thread has stopped (closed, or died with an error)."""
        if not self._thread.is_alive():
            if self._error is not None:
                raise self._error
            raise PeerLostError(self.rank, "this rank's runtime was closed")

    def _receive_unexpected(self) -> bool:
        did = False
        transport = self.transport
        while (found := transport.probe()) is not None:
            did = True
            kind, sender, seq = split_tag(found.tag)
            handler = self._handlers.get(kind)  # type: ignore[call-overload]
            limit = self._max_message + MAC_BYTES
            if handler is None or found.length > limit:
                # Taken into one byte (the rest is discarded): never a large allocation.
                transport.recv_probed(found, self._discard)
                why = "an unknown kind" if handler is None else f"over {limit} bytes"
                self._dropped(found.tag, f"{why} ({found.length} bytes)", announced=False)
                continue
            announce = self._announcers.get(kind)  # type: ignore[call-overload]
            if announce is not None:
                announce(sender, seq, True)
            buffer = np.empty(max(found.length, 1), dtype=np.uint8)[: found.length]
            request = transport.recv_probed(found, buffer)
            incoming = _Incoming(self, found.tag, request, buffer, handler)
            try:
                finished = incoming.poll()  # eager messages are already complete
            except Exception as exc:
                incoming.fail(exc)
                continue
            if not finished:
                self._ops.append(incoming)
        return did

    def _dropped(self, tag: int, why: object, *, announced: bool) -> None:
        """Log a message that was not acted on (the first ones, then every thousandth)."""
        kind, sender, seq = split_tag(tag)
        announce = self._announcers.get(kind)  # type: ignore[call-overload]
        if announce is not None and announced:
            announce(sender, seq, False)
        self._drops += 1
        if self._drops <= 10 or self._drops % 1000 == 0:
            logger.warning(
                "rank %d dropped a message (kind %d, claimed sender %d): %s (%d dropped so far)",
                self.rank,
                kind,
                sender,
                why,
                self._drops,
            )

    def send_control(self, rank: int, tag: int, payload: bytes, what: str) -> Any:
        """Send a message of an unexpected kind, sealed (with its MAC); returns the request."""
        sealed = payload if self.seal is None else self.seal.seal(rank, tag, payload)
        request = self.transport.send(rank, tag, sealed)
        self.submit(SendOperation(self.transport, rank, request, sealed, what))
        return request

    def _poll_ops(self) -> bool:
        keep: list[Operation] = []
        done_any = False
        for op in self._ops:
            try:
                done = op.poll()
            except Exception as exc:
                op.fail(exc)
                done = True
            if done:
                done_any = True
            else:
                keep.append(op)
        self._ops = keep
        return done_any

    def _check_deadlines(self, now: float) -> None:
        keep: list[Operation] = []
        for op in self._ops:
            if op.deadline is not None and now > op.deadline:
                op.fail(CommTimeoutError(op.what, op.timeout))
            else:
                keep.append(op)
        self._ops = keep

    def _handle_lost(self) -> None:
        while self._new_lost:
            rank = self._new_lost.popleft()
            reason = self._lost[rank]
            self.transport.disconnect(rank)
            keep = []
            for op in self._ops:
                if op.peer == rank:
                    op.fail(PeerLostError(rank, reason))
                else:
                    keep.append(op)
            self._ops = keep
            for listener in self._lost_listeners:
                listener(rank, reason)
