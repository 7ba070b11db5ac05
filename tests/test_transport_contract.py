"""The transport contract (gpupart/comm/transport.py), checked once against every transport.

UCX transports are real ucxx workers in this process (shared memory / TCP between them, as
between processes); in-process transports are threads' ends of one hub.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gpupart.comm.inprocess import InProcessHub
from gpupart.comm.tags import Kind, make_tag
from gpupart.errors import TransportError

DEADLINE = 20.0


def _ucx_world(n):
    from gpupart.comm.ucx import UCXTransport

    return [UCXTransport() for _ in range(n)]


def _inprocess_world(n):
    hub = InProcessHub()
    return [hub.transport() for _ in range(n)]


@pytest.fixture(params=["ucx", "inprocess"])
def world(request):
    """``make(n)`` -> n transports, each connected to every other one as its rank."""
    made = []

    def make(n=2):
        transports = (_ucx_world if request.param == "ucx" else _inprocess_world)(n)
        for i, t in enumerate(transports):
            for j, peer in enumerate(transports):
                if i != j:
                    t.connect(j, peer.address)
        made.extend(transports)
        return transports

    yield make
    for t in made:
        t.close()


def settle(transports, *requests, deadline=DEADLINE):
    """Progress every transport until every request has completed."""
    end = time.monotonic() + deadline
    while not all(r.completed for r in requests):
        assert time.monotonic() < end, "requests did not complete"
        for t in transports:
            t.progress()


def spin(transports, rounds=50):
    for _ in range(rounds):
        for t in transports:
            t.progress()


_ALIVE: list = []  # send buffers must outlive their requests (the contract)


@pytest.fixture(autouse=True)
def _keep_send_buffers():
    yield
    _ALIVE.clear()


def send(transport, rank, tag, buffer):
    _ALIVE.append(buffer)
    return transport.send(rank, tag, buffer)


def data(n, salt=0):
    return ((np.arange(n, dtype=np.int64) * 7 + salt) % 251).astype(np.uint8)


def tag(seq, sender=0, kind=Kind.DATA):
    return make_tag(kind, sender, seq)


@pytest.mark.parametrize("size", [0, 1, 100, 70_000, 8 << 20])
def test_send_then_receive_any_size(world, size):
    a, b = world()
    payload = data(size, salt=3)
    out = np.full(size, 9, dtype=np.uint8)
    sent = send(a, 1, tag(5), payload)
    got = b.recv(tag(5), out)
    settle([a, b], sent, got)
    a.check(sent)
    b.check(got)
    assert np.array_equal(out, payload)


def test_a_message_waits_for_its_receive(world):
    a, b = world()
    payload = data(1000)
    sent = send(a, 1, tag(1), payload)
    spin([a, b])  # arrives before anything is posted for it
    out = np.zeros(1000, np.uint8)
    got = b.recv(tag(1), out)
    settle([a, b], sent, got)
    assert np.array_equal(out, payload)


def test_receives_match_exact_tags_only(world):
    a, b = world()
    out1, out2 = np.zeros(10, np.uint8), np.zeros(10, np.uint8)
    r2 = b.recv(tag(2), out2)
    s1 = send(a, 1, tag(1), data(10, salt=1))
    spin([a, b])
    assert not r2.completed  # tag 1 must not land in the receive for tag 2
    r1 = b.recv(tag(1), out1)
    s2 = send(a, 1, tag(2), data(10, salt=2))
    settle([a, b], s1, s2, r1, r2)
    assert np.array_equal(out1, data(10, salt=1)) and np.array_equal(out2, data(10, salt=2))


def test_messages_of_one_sender_and_tag_match_in_order(world):
    a, b = world()
    payloads = [np.full(64, i, np.uint8) for i in range(20)]
    sends = [send(a, 1, tag(7), p) for p in payloads]
    outs = [np.zeros(64, np.uint8) for _ in range(20)]
    recvs = [b.recv(tag(7), out) for out in outs]
    settle([a, b], *sends, *recvs)
    assert [int(out[0]) for out in outs] == list(range(20))


def test_the_sender_is_in_the_tag(world):
    a, b, c = world(3)
    out_b, out_c = np.zeros(4, np.uint8), np.zeros(4, np.uint8)
    rb = a.recv(make_tag(Kind.DATA, 1, 9), out_b)
    rc = a.recv(make_tag(Kind.DATA, 2, 9), out_c)
    sc = send(c, 0, make_tag(Kind.DATA, 2, 9), np.full(4, 2, np.uint8))
    sb = send(b, 0, make_tag(Kind.DATA, 1, 9), np.full(4, 1, np.uint8))
    settle([a, b, c], rb, rc, sb, sc)
    assert out_b.tolist() == [1] * 4 and out_c.tolist() == [2] * 4


def test_unexpected_kinds_are_probed_others_are_not(world):
    a, b = world()
    plain = send(a, 1, tag(3), data(8))
    request = send(a, 1, make_tag(Kind.REQUEST, 0, 4), data(300, salt=5))
    probed = None
    end = time.monotonic() + DEADLINE
    while probed is None:
        assert time.monotonic() < end
        spin([a, b], 1)
        probed = b.probe()
    assert probed.tag == make_tag(Kind.REQUEST, 0, 4) and probed.length == 300
    assert b.probe() is None  # the DATA message is not unexpected: it waits for a receive
    buf = np.zeros(300, np.uint8)
    got = b.recv_probed(probed, buf)
    out = np.zeros(8, np.uint8)
    r = b.recv(tag(3), out)
    settle([a, b], got, r, plain, request)
    assert np.array_equal(buf, data(300, salt=5)) and np.array_equal(out, data(8))


def test_a_longer_message_fails_its_receive_and_the_next_one_flows(world):
    a, b = world()
    small = np.zeros(10, np.uint8)
    r = b.recv(tag(1), small)
    s = send(a, 1, tag(1), data(100))
    settle([a, b], r, s)
    with pytest.raises(TransportError):
        b.check(r)
    out = np.zeros(5, np.uint8)
    r2 = b.recv(tag(2), out)
    s2 = send(a, 1, tag(2), data(5, salt=1))
    settle([a, b], r2, s2)
    b.check(r2)
    assert np.array_equal(out, data(5, salt=1))


def test_a_shorter_message_fills_the_front(world):
    a, b = world()
    out = np.full(10, 77, np.uint8)
    r = b.recv(tag(1), out)
    s = send(a, 1, tag(1), data(4))
    settle([a, b], r, s)
    b.check(r)
    assert out[:4].tolist() == data(4).tolist() and out[4:].tolist() == [77] * 6


def test_a_cancelled_receive_is_never_written(world):
    a, b = world()
    if not b.can_cancel:
        pytest.skip("this ucxx cannot cancel one request")
    out = np.full(16, 5, np.uint8)
    r = b.recv(tag(1), out)
    b.cancel(r)
    settle([a, b], r)
    with pytest.raises(TransportError):
        b.check(r)
    s = send(a, 1, tag(1), data(16, salt=9))
    spin([a, b])
    assert out.tolist() == [5] * 16  # the message waits for a new receive
    again = np.zeros(16, np.uint8)
    r2 = b.recv(tag(1), again)
    settle([a, b], r2, s)
    assert np.array_equal(again, data(16, salt=9))
    b.cancel(r2)  # completed: nothing happens
    b.check(r2)


@pytest.mark.parametrize("size", [1, 8 << 20])
def test_a_tiny_receive_drains_a_message_and_its_send_completes(world, size):
    """What fetch does with a cancelled tile's late bytes: swallow them, free the sender."""
    a, b = world()
    s = send(a, 1, tag(1), data(size))
    drain = b.recv(tag(1), np.zeros(1, np.uint8))
    settle([a, b], s, drain)
    a.check(s)


def test_send_to_an_unknown_or_disconnected_rank_raises(world):
    a, _ = world()
    with pytest.raises(TransportError):
        send(a, 5, tag(1), data(4))
    a.disconnect(1)
    with pytest.raises(TransportError):
        send(a, 1, tag(1), data(4))


def test_wait_returns_on_wake_and_on_timeout(world):
    a, _ = world()
    spin([a])
    started = time.monotonic()
    a.wait(0.05)
    assert time.monotonic() - started < 5
    threading.Timer(0.05, a.wake).start()
    started = time.monotonic()
    a.wait(30)
    assert time.monotonic() - started < 20  # woken long before the timeout


def test_posting_from_one_thread_while_another_progresses(world):
    a, b = world()
    stop = threading.Event()

    def progress():
        while not stop.is_set():
            a.progress()
            b.progress()

    thread = threading.Thread(target=progress)
    thread.start()
    try:
        outs = [np.zeros(32, np.uint8) for _ in range(500)]
        recvs = [b.recv(tag(i), out) for i, out in enumerate(outs)]
        payloads = [np.full(32, i % 251, np.uint8) for i in range(500)]  # alive until sent
        sends = [send(a, 1, tag(i), p) for i, p in enumerate(payloads)]
        end = time.monotonic() + DEADLINE
        while not all(r.completed for r in recvs + sends):
            assert time.monotonic() < end
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join()
    assert all(int(out[0]) == i % 251 for i, out in enumerate(outs))


def test_close_is_idempotent(world):
    a, _ = world()
    a.close()
    a.close()
