"""An outsider who can reach a rank's UCX worker, but has no job token, gets nowhere.

Also unit tests of the MAC itself (gpupart/comm/auth.py).
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
from conftest import records, run_job

from gpupart.comm.auth import MAC_BYTES, MessageSeal, job_key
from gpupart.comm.collectives import Mailbox
from gpupart.comm.tags import Kind, make_tag
from gpupart.errors import AuthenticationError, CollectiveError


def test_a_sealed_message_opens_only_for_its_receiver_tag_and_key():
    key = job_key(b"t" * 32, "job")
    sender, receiver, stranger = MessageSeal(key, 1), MessageSeal(key, 0), MessageSeal(key, 2)
    tag = make_tag(Kind.COLLECTIVE, 1, 7)
    sealed = np.frombuffer(sender.seal(0, tag, b"payload"), np.uint8)
    assert len(sealed) == len(b"payload") + MAC_BYTES
    assert receiver.open(tag, sealed).tobytes() == b"payload"
    with pytest.raises(AuthenticationError):
        stranger.open(tag, sealed)  # meant for rank 0, replayed to rank 2
    with pytest.raises(AuthenticationError):
        receiver.open(make_tag(Kind.COLLECTIVE, 3, 7), sealed)  # another claimed sender
    with pytest.raises(AuthenticationError):
        receiver.open(make_tag(Kind.COLLECTIVE, 1, 8), sealed)  # another sequence
    with pytest.raises(AuthenticationError):
        MessageSeal(job_key(b"u" * 32, "job"), 0).open(tag, sealed)  # another token
    with pytest.raises(AuthenticationError):
        MessageSeal(job_key(b"t" * 32, "other"), 0).open(tag, sealed)  # another job
    flipped = sealed.copy()
    flipped[0] ^= 1
    with pytest.raises(AuthenticationError):
        receiver.open(tag, flipped)
    with pytest.raises(AuthenticationError):
        receiver.open(tag, sealed[:5])  # shorter than a MAC


class _Trap:
    """Unpickling this creates a directory: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.path,))


def test_a_pickle_behind_a_valid_mac_is_never_unpickled(tmp_path):
    # A job member (or a MAC check gone wrong) sends a pickle as a collective payload and
    # as an abort: the typed decoder refuses both, nothing runs, the collective fails.
    trap = tmp_path / "unpickled"
    payload = np.frombuffer(pickle.dumps(_Trap(str(trap))), np.uint8)
    mailbox = Mailbox()
    mailbox.put(int(Kind.COLLECTIVE), 1, 0, payload)
    signature, status, value = mailbox.take(
        int(Kind.COLLECTIVE),
        1,
        0,
        signature=("barrier",),
        rank=0,
        deadline=time.monotonic() + 5,
        what="barrier()",
        lost=lambda rank: None,
    )
    assert (signature, status) == ((), "error") and "rank 1 sent a malformed" in value, value
    mailbox.put_abort(1, 1, payload)
    with pytest.raises(CollectiveError, match="rank 1 sent a malformed abort"):
        mailbox.take(
            int(Kind.COLLECTIVE),
            1,
            2,
            signature=("barrier",),
            rank=0,
            deadline=time.monotonic() + 5,
            what="barrier()",
            lost=lambda rank: None,
        )
    assert not trap.exists(), "a collective payload was unpickled"


@pytest.mark.multiprocess
def test_an_outsider_without_the_token_cannot_inject_or_fetch(tmp_path):
    rc, out, err = run_job(2, "auth_victim.py", str(tmp_path), timeout=120)
    assert rc == 0, f"{rc}\n{out}\n{err}"
    (outsider,) = records(out, "outsider")
    assert outsider["sent"] > 40
    assert not outsider["tile_bytes_received"], "the owner served a request without a MAC"
    (entered,) = records(out, "entered")
    (passed,) = records(out, "passed")
    assert not passed["pwned"] and not (tmp_path / "pwned").exists(), "code ran from a pickle"
    assert passed["at"] >= entered["at"], "rank 0's barrier passed before rank 1 entered it"
    assert "dropped a message" in err and "MAC" in err, err  # refused, and logged
    assert f"over {(64 << 20) + MAC_BYTES} bytes" in err, err  # too long: discarded unread
    assert sorted(d["rank"] for d in records(out, "done")) == [0, 1]
    # A one-machine job's UCX listens on loopback only (127.0.0.1 is 0100007F in /proc).
    (listening,) = records(out, "listening")
    loopback = {"0100007F", "00000000000000000000000001000000"}
    assert set(listening["addresses"]) <= loopback, listening
