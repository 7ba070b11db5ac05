"""An in-process transport: ranks are threads of one process, messages are copies.

:class:`InProcessHub` makes transports that reach each other; each behaves like the UCX one
(the contract in :mod:`gpupart.comm.transport`): a send keeps a reference to its buffer and
completes when the message is copied into a receive, which happens when the receiving side
progresses; messages wait in the receiver's queue until a receive is posted; unexpected
kinds are probed. It exists so that the protocol code above the transport (engine, fetch,
exchange, collectives) can be tested without processes, and it is checked by the same
contract tests as UCX.
"""

from __future__ import annotations

import collections
import itertools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpupart.comm.tags import UNEXPECTED_MASK
from gpupart.comm.transport import Transport
from gpupart.errors import TransportError

__all__ = ["InProcessHub", "InProcessTransport"]


@dataclass(eq=False)
class _Request:
    """A posted operation; ``error`` says why a completed one failed."""

    completed: bool = False
    error: str | None = None

    def finish(self, error: str | None = None) -> None:
        self.error = error
        self.completed = True


@dataclass(eq=False)
class _Message:
    tag: int
    data: Any  # flat uint8 view of the sender's buffer (host or device)
    sent: _Request

    @property
    def length(self) -> int:
        return int(self.data.shape[0])


@dataclass(eq=False)
class _Receive:
    tag: int
    buffer: Any  # flat uint8 view of the receiver's buffer
    request: _Request


class InProcessHub:
    """Makes :class:`InProcessTransport` objects that can reach each other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[bytes, InProcessTransport] = {}
        self._ids = itertools.count()

    def transport(self, *, can_cancel: bool = True) -> InProcessTransport:
        """Return a new transport of this hub (connect peers with their ``address``).

        ``can_cancel=False`` makes one that cannot withdraw receives, as a ucxx build without
        single-request cancellation (to test what fetch does then).
        """
        with self._lock:
            address = f"inprocess:{id(self):x}:{next(self._ids)}".encode()
            member = InProcessTransport(self, address, can_cancel=can_cancel)
            self._members[address] = member
        return member

    def _find(self, address: bytes) -> InProcessTransport | None:
        with self._lock:
            return self._members.get(address)


class InProcessTransport(Transport):
    """One rank's end of an :class:`InProcessHub` (make it with :meth:`InProcessHub.transport`)."""

    def __init__(self, hub: InProcessHub, address: bytes, *, can_cancel: bool = True) -> None:
        self._hub = hub
        self._address = address
        self._can_cancel = can_cancel
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._inbox: collections.deque[_Message] = collections.deque()  # not yet matched
        self._unexpected: list[_Message] = []  # matched no receive (in arrival order)
        self._posted: list[_Receive] = []
        self._endpoints: dict[int, InProcessTransport] = {}
        self._woken = False
        self._closed = False

    @property
    def address(self) -> bytes:
        """The name peers connect to."""
        return self._address

    def connect(self, rank: int, address: bytes) -> None:
        """Reach the hub member with ``address`` as ``rank``."""
        peer = self._hub._find(address)
        if peer is None:
            raise TransportError(f"could not reach rank {rank}: no transport at {address!r}")
        with self._lock:
            self._endpoints[rank] = peer

    def disconnect(self, rank: int) -> None:
        """Forget ``rank``."""
        with self._lock:
            self._endpoints.pop(rank, None)

    def send(self, rank: int, tag: int, buffer: Any) -> _Request:
        """Queue a message at ``rank``; it completes when ``rank`` matches it to a receive."""
        with self._lock:
            peer = None if self._closed else self._endpoints.get(rank)
        if peer is None:
            raise TransportError(f"no endpoint to rank {rank} (lost, closed, or not a peer)")
        request = _Request()
        peer._deliver(_Message(tag, _flat_bytes(buffer), request))
        return request

    def _deliver(self, message: _Message) -> None:
        with self._lock:
            if self._closed:
                message.sent.finish("the receiving transport is closed")
                return
            self._inbox.append(message)
            self._arrived.notify_all()

    def recv(self, tag: int, buffer: Any) -> _Request:
        """Post a receive; a message already waiting with ``tag`` is taken at once."""
        receive = _Receive(tag, _flat_bytes(buffer), _Request())
        with self._lock:
            for k, message in enumerate(self._unexpected):
                if message.tag == tag:
                    del self._unexpected[k]
                    _copy(message, receive)
                    return receive.request
            self._posted.append(receive)
        return receive.request

    def probe(self) -> _Message | None:
        """Take the first waiting message of an unexpected kind."""
        with self._lock:
            for k, message in enumerate(self._unexpected):
                if message.tag & UNEXPECTED_MASK == UNEXPECTED_MASK:
                    return self._unexpected.pop(k)
        return None

    def recv_probed(self, probed: _Message, buffer: Any) -> _Request:  # type: ignore[override]
        """Copy a probed message into ``buffer``."""
        receive = _Receive(probed.tag, _flat_bytes(buffer), _Request())
        _copy(probed, receive)
        return receive.request

    @property
    def can_cancel(self) -> bool:
        """Whether :meth:`cancel` can withdraw a posted receive."""
        return self._can_cancel

    def cancel(self, request: Any) -> None:
        """Withdraw a posted receive that nothing has matched yet."""
        if not self._can_cancel:
            raise TransportError("this in-process transport was made unable to cancel")
        with self._lock:
            for k, receive in enumerate(self._posted):
                if receive.request is request:
                    del self._posted[k]
                    request.finish("cancelled")
                    return

    def check(self, request: Any) -> None:
        """Raise :class:`~gpupart.TransportError` if ``request`` failed."""
        if request.error is not None:
            raise TransportError(f"in-process request failed: {request.error}")

    def progress(self) -> bool:
        """Match arrived messages to posted receives, in arrival order."""
        with self._lock:
            if not self._inbox:
                return False
            while self._inbox:
                message = self._inbox.popleft()
                for k, receive in enumerate(self._posted):
                    if receive.tag == message.tag:
                        del self._posted[k]
                        _copy(message, receive)
                        break
                else:
                    self._unexpected.append(message)
        return True

    def wait(self, timeout: float) -> None:
        """Sleep until a message arrives, :meth:`wake` is called, or ``timeout`` passes."""
        with self._lock:
            if not self._inbox and not self._woken:
                self._arrived.wait(timeout)
            self._woken = False

    def wake(self) -> None:
        """Interrupt :meth:`wait`."""
        with self._lock:
            self._woken = True
            self._arrived.notify_all()

    def close_endpoints(self) -> list[_Request]:
        """Nothing to flush: returns no requests."""
        return []

    def close(self) -> None:
        """Fail what is still posted or queued; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for receive in self._posted:
                receive.request.finish("the transport was closed")
            for message in [*self._inbox, *self._unexpected]:
                message.sent.finish("the receiving transport was closed")
            self._posted.clear()
            self._inbox.clear()
            self._unexpected.clear()
            self._endpoints.clear()


def _flat_bytes(buffer: Any) -> Any:
    """Return a flat ``uint8`` view of a contiguous host or device buffer (no copy)."""
    if hasattr(buffer, "__cuda_array_interface__"):
        import cupy  # a device buffer: CuPy is there

        array = cupy.asarray(buffer)
    elif isinstance(buffer, (bytes, bytearray, memoryview)):
        return np.frombuffer(buffer, dtype=np.uint8)
    else:
        array = np.asarray(buffer)
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        raise TransportError("expected a contiguous buffer, found a strided one")
    return array.ravel(order="A").view(np.uint8)


def _copy(message: _Message, receive: _Receive) -> None:
    """Copy a message into a receive and complete both (truncation fails the receive)."""
    n = message.length
    if n > receive.buffer.shape[0]:
        receive.request.finish(
            f"message truncated: {n} bytes into a buffer of {receive.buffer.shape[0]}"
        )
        message.sent.finish()
        return
    src, dst = message.data, receive.buffer[:n]
    if type(src) is type(dst):
        dst[...] = src
    elif isinstance(dst, np.ndarray):
        dst[...] = src.get()
    else:
        dst.set(np.ascontiguousarray(src))
    receive.request.finish()
    message.sent.finish()
