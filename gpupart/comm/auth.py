"""Proof of job membership on every control message: a MAC over the tag, receiver and bytes.

A rank's UCX worker accepts endpoints from anyone who can reach it, and a UCX tag says
whatever its sender writes. So every message a rank acts on without having asked for it
(fetch requests, error replies, collective payloads, aborts: the kinds the progress engine
probes for) carries, after its payload, a 16-byte keyed BLAKE2b (a MAC by construction, at a
third of HMAC-SHA256's cost on the small messages that set a fetch's latency) of ``u64 tag |
u32 receiver | payload``. Its key is derived from the job's secret token (which every rank
proved to the coordinator to join). The receiver checks
it before anything reads the payload: a message from outside the job, one whose tag (kind,
sender, sequence) was changed, or one meant for another rank is dropped and logged.

Tile bytes (``DATA`` messages) carry no MAC: they land only in receives a consumer posted for
exact tags it chose (numbered from a random start per process), so an outsider cannot aim at
them without seeing the job's traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import numpy as np

from gpupart.errors import AuthenticationError

__all__ = ["MAC_BYTES", "MessageSeal", "job_key"]

#: Bytes of MAC after each control message's payload.
MAC_BYTES = 16
_HEAD = struct.Struct("<QI")


def job_key(token: bytes, job_id: str) -> bytes:
    """Derive the data-plane key of a job from its token (never the token itself)."""
    return hmac.digest(token, b"gpupart data plane\0" + job_id.encode(), "sha256")


class MessageSeal:
    """Seals control messages this rank sends, and checks those it receives."""

    def __init__(self, key: bytes, rank: int) -> None:
        if len(key) < 16:
            raise ValueError("key: expected at least 16 bytes")
        self._key = key
        self.rank = rank

    def _mac(self, tag: int, receiver: int, payload: Any) -> bytes:
        mac = hashlib.blake2b(_HEAD.pack(tag, receiver), key=self._key, digest_size=MAC_BYTES)
        mac.update(payload)
        return mac.digest()

    def seal(self, receiver: int, tag: int, payload: bytes) -> bytes:
        """Return ``payload`` followed by its MAC for ``receiver``."""
        return b"".join((payload, self._mac(tag, receiver, payload)))

    def open(self, tag: int, message: np.ndarray) -> np.ndarray:
        """Check a received message; return its payload (a view) or raise.

        Raises :class:`~gpupart.AuthenticationError` when the MAC is missing or wrong.
        """
        n = message.shape[0] - MAC_BYTES
        if n < 0:
            raise AuthenticationError(
                f"a message of {message.shape[0]} bytes is too short to carry a MAC"
            )
        payload = message[:n]
        expected = self._mac(tag, self.rank, payload)
        if not hmac.compare_digest(expected, message[n:].tobytes()):
            raise AuthenticationError("a message failed its MAC check")
        return payload
