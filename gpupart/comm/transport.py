"""The transport interface: tagged messages between the ranks of one job.

A transport moves whole messages, each carrying a 64-bit tag (:mod:`gpupart.comm.tags`), from
one rank to another, straight between the caller's buffers (host or device). Everything
above it (the progress engine, fetch, exchange, collectives) speaks only this interface, so
the same protocol code runs over UCX between processes (:mod:`gpupart.comm.ucx`) and over an
in-process hub between threads (:mod:`gpupart.comm.inprocess`, for contract tests).

The contract, which ``tests/test_transport_contract.py`` checks against every
implementation:

* ``send(rank, tag, buffer)`` and ``recv(tag, buffer)`` post an operation and return a
  :class:`Request` at once; the buffer must stay alive and unchanged until the request
  completes. A receive matches a message by its exact tag. Messages from one sender are
  matched in the order they were sent.
* A message whose tag has the :data:`~gpupart.comm.tags.UNEXPECTED_MASK` bit arrives
  unannounced and is taken with :meth:`Transport.probe` and :meth:`Transport.recv_probed`;
  other messages wait (in the transport) until a receive is posted for them.
* A message longer than its receive buffer completes the receive with an error (the
  message is consumed); a shorter one fills the front of the buffer.
* Requests complete during :meth:`Transport.progress` (possibly already when posted);
  :meth:`Transport.check` raises :class:`~gpupart.TransportError` for a completed request
  that failed (cancelled, truncated, peer unreachable).
* :meth:`Transport.cancel` withdraws a receive that no message has matched yet: it then
  completes as failed and its buffer is never written. A receive already matched completes
  normally. Cancelling a completed request does nothing. A transport that cannot withdraw
  receives says so (:attr:`Transport.can_cancel` is False) and raises
  :class:`~gpupart.TransportError` from ``cancel``; fetch then receives into its own buffers
  only.
* All methods are thread-safe: one thread may progress while others post.
"""

from __future__ import annotations

import abc
from typing import Any, Protocol

__all__ = ["Probed", "Request", "Transport"]


class Request(Protocol):
    """A posted send or receive; ``completed`` turns true once it is finished either way."""

    @property
    def completed(self) -> bool:
        """Whether the operation has finished (successfully or not)."""
        ...


class Probed(Protocol):
    """An unexpected message taken off the queue by :meth:`Transport.probe`."""

    tag: int
    length: int


class Transport(abc.ABC):
    """Tagged messages to and from the peers of one rank (see the module docstring)."""

    @property
    @abc.abstractmethod
    def address(self) -> bytes:
        """What a peer needs to :meth:`connect` to this rank (exchanged at rendezvous)."""

    @abc.abstractmethod
    def connect(self, rank: int, address: bytes) -> None:
        """Make ``rank`` (whose :attr:`address` is given) reachable by :meth:`send`."""

    @abc.abstractmethod
    def disconnect(self, rank: int) -> None:
        """Forget a lost peer without waiting on it; sends to it fail from now on."""

    @abc.abstractmethod
    def send(self, rank: int, tag: int, buffer: Any) -> Request:
        """Post a send of a contiguous host or device buffer to ``rank``."""

    @abc.abstractmethod
    def recv(self, tag: int, buffer: Any) -> Request:
        """Post a receive of the message tagged exactly ``tag`` into ``buffer``."""

    @abc.abstractmethod
    def probe(self) -> Probed | None:
        """Take the next unexpected message off the queue, or return None."""

    @abc.abstractmethod
    def recv_probed(self, probed: Probed, buffer: Any) -> Request:
        """Receive a message taken by :meth:`probe` into ``buffer`` (at least its length)."""

    @property
    def can_cancel(self) -> bool:
        """Whether :meth:`cancel` can withdraw a posted receive."""
        return True

    def lanes(self) -> dict[int, list[str]] | None:
        """Return the transports reaching each peer (``'tcp/eth0'``...), None if unknown."""
        return None

    def settings(self) -> dict[str, str]:
        """Return the configuration worth reporting (UCX: ``TLS``, ``NET_DEVICES``)."""
        return {}

    @abc.abstractmethod
    def cancel(self, request: Request) -> None:
        """Withdraw a receive no message has matched yet (see the module docstring)."""

    @abc.abstractmethod
    def check(self, request: Request) -> None:
        """Raise :class:`~gpupart.TransportError` if a completed ``request`` failed."""

    @abc.abstractmethod
    def progress(self) -> bool:
        """Move messages along; True if anything happened."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> None:
        """Sleep until there may be progress to make, :meth:`wake` is called, or ``timeout``."""

    @abc.abstractmethod
    def wake(self) -> None:
        """Interrupt :meth:`wait` from another thread."""

    @abc.abstractmethod
    def close_endpoints(self) -> list[Request]:
        """Start closing every peer connection gracefully; returns requests to progress."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything; idempotent. Call only after progress has stopped."""
