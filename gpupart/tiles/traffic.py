"""Per-peer byte counters for the transfer summary (``GPUPART_TRANSFER_SUMMARY``).

One :class:`Traffic` counts one direction: the fetcher counts what this rank asks each owner
for and times it (from posting a request to its last tile landing), the tile server counts
what it sends each consumer (its sends complete when the progress thread next looks, so it
does not time them; the consumer's time is the transfer's). Both count once per request (a
batch of tiles), never per tile, and only when the summary is asked for; otherwise they
hold None.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Traffic"]


class Traffic:
    """Bytes moved between this rank and each peer in one direction, and for how long.

    :meth:`begin` when a request carrying ``nbytes`` starts, :meth:`end` once it has
    settled (delivered, failed or withdrawn). A peer's ``busy`` seconds are the time at
    least one request with it was in flight (the union of the requests' intervals), so
    ``bytes / busy`` is the rate that peer's transfers ran at, overlapping requests counted
    once. Thread-safe: callers begin, the progress thread usually ends.
    """

    def __init__(self, size: int) -> None:
        self.bytes = [0] * size
        self.requests = [0] * size
        self.busy = [0.0] * size
        self._active = [0] * size
        self._since = [0.0] * size
        self._lock = threading.Lock()

    def count(self, peer: int, nbytes: int) -> None:
        """Count a request of ``nbytes`` with ``peer``, untimed."""
        with self._lock:
            self.bytes[peer] += nbytes
            self.requests[peer] += 1

    def begin(self, peer: int, nbytes: int) -> None:
        """Count a request of ``nbytes`` with ``peer`` that starts now (:meth:`end` it)."""
        with self._lock:
            self.bytes[peer] += nbytes
            self.requests[peer] += 1
            if not self._active[peer]:
                self._since[peer] = time.perf_counter()
            self._active[peer] += 1

    def end(self, peer: int) -> None:
        """Mark one of ``peer``'s requests settled."""
        with self._lock:
            self._active[peer] -= 1
            if not self._active[peer]:
                self.busy[peer] += time.perf_counter() - self._since[peer]

    def snapshot(self) -> list[tuple[int, int, int, float]]:
        """``(peer, bytes, requests, busy seconds)`` of every peer with traffic so far.

        Requests still in flight count up to now.
        """
        now = time.perf_counter()
        with self._lock:
            return [
                (
                    peer,
                    self.bytes[peer],
                    self.requests[peer],
                    self.busy[peer] + (now - self._since[peer] if self._active[peer] else 0.0),
                )
                for peer in range(len(self.bytes))
                if self.requests[peer]
            ]
