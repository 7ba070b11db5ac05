"""The 64-bit UCX tag layout every gpupart message uses.

``kind:4 | sender rank:24 | sequence:36``. The *kind* says which protocol the message
belongs to (kinds with the top bit set arrive unannounced and are found with one probe of
:data:`UNEXPECTED_MASK`; the others land in receives posted for them, possibly after they
arrive: UCX holds them until then), the *sender* lets a worker-level receive tell peers
apart, and the *sequence* is chosen by whoever expects the message (a consumer's fetch
batch, a collective's number), so every (kind, sender, sequence) triple in flight is unique.
"""

from __future__ import annotations

import enum

__all__ = [
    "KIND_MASK",
    "MAX_RANKS",
    "SEQ_MASK",
    "UNEXPECTED_MASK",
    "Kind",
    "make_tag",
    "split_tag",
]

_KIND_SHIFT = 60
_RANK_SHIFT = 36
SEQ_MASK = (1 << _RANK_SHIFT) - 1
MAX_RANKS = 1 << 24
KIND_MASK = 0xF << _KIND_SHIFT
#: Tag bit shared by every kind that arrives without a posted receive.
UNEXPECTED_MASK = 0x8 << _KIND_SHIFT


class Kind(enum.IntEnum):
    """Message kinds (the top four bits of a tag)."""

    DATA = 1  #: owner -> consumer: tile bytes (one tile, or a pack), into a posted receive
    REQUEST = 8  #: consumer -> owner: a batch of tile requests
    RESPONSE = 9  #: owner -> consumer: per-item status of a batch
    COLLECTIVE = 10  #: collective operation payloads
    FINALIZE = 11  #: the closing barrier (kept apart from user collectives)
    ABORT = 12  #: a collective failed on its sender: every rank raises


def make_tag(kind: Kind, sender: int, seq: int) -> int:
    """Build a tag; ``seq`` wraps modulo 2**36."""
    return (int(kind) << _KIND_SHIFT) | (sender << _RANK_SHIFT) | (seq & SEQ_MASK)


def split_tag(tag: int) -> tuple[int, int, int]:
    """Return ``(kind, sender, seq)`` of a tag (``kind`` as a plain int: it may be unknown)."""
    return tag >> _KIND_SHIFT, (tag >> _RANK_SHIFT) & (MAX_RANKS - 1), tag & SEQ_MASK
