"""The runtime in one process: options, lifetime, local tiles, argument errors, UCX tags, and
the coordinator's handshake and liveness with real sockets and threads.

Multi-process behaviour lives in ``test_cluster_mp.py``; the fetch layer's pieces in
``test_fetch_units.py``, ``test_transfer.py`` and ``test_fetch_bulk.py``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import pickle
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import gpupart
from gpupart.comm import tags
from gpupart.comm.tags import Kind
from gpupart.job.coordinator import COORDINATOR_RANK, Coordinator, CoordinatorClient
from gpupart.options import RuntimeOptions

_LAUNCH_PREFIXES = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_")
WAIT = 20.0  # generous bound for a thread or socket event on a loaded machine


@pytest.fixture
def single_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No launcher variables: ``gpupart.init()`` makes a world of one."""
    for name in list(os.environ):
        if name.startswith(_LAUNCH_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
def rt(single_env: None) -> Iterator[Any]:
    before = set(threading.enumerate())
    runtime = gpupart.init(device="cpu")
    yield runtime
    runtime.close()
    assert set(threading.enumerate()) == before, "the runtime left threads behind"


# -- options ----------------------------------------------------------------------------------


def test_options_defaults_and_environment():
    opts = RuntimeOptions.resolve({}, environ={})
    assert opts == RuntimeOptions()
    assert opts.timeout == 120.0 and opts.pack_threshold == 64 << 10 and opts.device is None
    env = {
        "GPUPART_TIMEOUT": "7.5",
        "GPUPART_PACK_LIMIT": "4096",
        "GPUPART_BIND_GPU": "off",
        "GPUPART_PIN_CPUS": "Yes",
        "GPUPART_DEVICE": "auto",
        "GPUPART_UCX_CONFIG": "ignored: not settable from the environment",
    }
    opts = RuntimeOptions.resolve({"pack_limit": 8192}, environ=env)
    assert opts.timeout == 7.5
    assert opts.pack_limit == 8192  # keyword arguments win
    assert opts.bind_gpu is False and opts.pin_cpus is True and opts.device is None
    assert opts.ucx_config == {}
    assert RuntimeOptions.resolve({}, {"GPUPART_RECEIVE_POOL_BYTES": "0"}).receive_pool_bytes == 0
    opts = RuntimeOptions.resolve({"ucx_config": {"TLS": "tcp"}, "device": "cpu"}, environ={})
    assert opts.ucx_config == {"TLS": "tcp"} and opts.device == "cpu"


@pytest.mark.parametrize(
    ("options", "needle", "error"),
    [
        ({"timeout": 0}, "timeout: expected a positive float", ValueError),
        ({"timeout": -1.0}, "timeout", ValueError),
        ({"fetch_timeout": "soon"}, "fetch_timeout: expected a float", ValueError),
        ({"close_timeout": True}, "close_timeout", TypeError),
        ({"pack_threshold": None}, "pack_threshold", TypeError),
        ({"pack_threshold": 1.5}, "pack_threshold: expected a int", ValueError),
        ({"device": "gpu"}, "device: expected 'cpu', 'cuda' or None", ValueError),
        ({"bind_gpu": "maybe"}, "bind_gpu: expected a boolean", ValueError),
        ({"pin_cpus": 1}, "pin_cpus: expected a bool", TypeError),
        ({"ucx_config": "TLS=tcp"}, "ucx_config: expected a mapping", TypeError),
        ({"ucx_config": {"TLS": 1}}, "ucx_config", TypeError),
        ({"receive_pool_bytes": -1}, "receive_pool_bytes: expected a positive int", ValueError),
        ({"pack_limit": 0}, "pack_limit: expected a positive int", ValueError),
    ],
)
def test_bad_option_values_name_the_option(options, needle, error):
    with pytest.raises(error) as info:
        RuntimeOptions.resolve(options, environ={})
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [("GPUPART_TIMEOUT", "abc"), ("GPUPART_PACK_LIMIT", "-5"), ("GPUPART_PIN_CPUS", "maybe")],
)
def test_bad_environment_values_name_the_variable(var, value):
    with pytest.raises(ValueError, match=var):
        RuntimeOptions.resolve({}, environ={var: value})


def test_init_rejects_bad_options_and_starts_nothing(single_env, monkeypatch):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['bogus'\]"):
        gpupart.init(bogus=1, device="cpu")
    monkeypatch.setenv("GPUPART_FETCH_TIMEOUT", "never")
    with pytest.raises(ValueError, match="GPUPART_FETCH_TIMEOUT"):
        gpupart.init(device="cpu")
    with pytest.raises(gpupart.NotInitializedError, match=r"gpupart\.init"):
        gpupart.runtime()


# -- lifetime ---------------------------------------------------------------------------------


def test_world_of_one(rt):
    assert isinstance(rt, gpupart.Runtime)
    assert (rt.rank, rt.size, rt.local_rank, rt.local_size) == (0, 1, 0, 1)
    assert rt.launcher == "single" and rt.job_id == f"single-{os.getpid()}"
    assert rt.device is None and rt.backend.memory_kind == "host"
    assert rt.peers == [rt.location] and rt.location.rank == 0
    assert rt.location.pid == os.getpid() and rt.location.host == rt.host
    assert "rank=0/1" in repr(rt) and "open" in repr(rt)


def test_init_and_runtime_are_idempotent(rt, caplog):
    assert gpupart.runtime() is rt
    with caplog.at_level(logging.WARNING, logger="gpupart.runtime"):
        assert gpupart.init(timeout=5) is rt
    assert "already running" in caplog.text and "timeout" in caplog.text
    assert rt.options.timeout == 120.0  # the running runtime's options are kept


def test_close_is_idempotent_and_init_starts_afresh(single_env):
    before = set(threading.enumerate())
    first = gpupart.init(device="cpu")
    h = first.put(np.arange(3))
    first.close()
    assert first.closed and "closed" in repr(first)
    first.close()  # no-op
    assert set(threading.enumerate()) == before
    with pytest.raises(gpupart.NotInitializedError, match=r"gpupart\.init"):
        gpupart.runtime()
    for call in (
        lambda: first.put(np.arange(3)),
        lambda: first.get(h),
        lambda: first.fetch([h]),
        lambda: first.free(h),
        first.barrier,
        lambda: first.allgather(1),
    ):
        with pytest.raises(gpupart.NotInitializedError, match="closed"):
            call()
    with gpupart.init(device="cpu") as second:
        assert second is not first and gpupart.runtime() is second
    assert second.closed
    with pytest.raises(gpupart.NotInitializedError):
        gpupart.runtime()


# -- local tiles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.array(2.5),
        np.zeros((0,), np.int8),
        np.arange(17) % 3 == 0,
        np.arange(12, dtype=np.complex128).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    ],
    ids=["0-d", "empty", "bool", "C", "F"],
)
def test_put_get_local_is_no_copy(rt, array):
    h = rt.put(array)
    assert h.owner == 0 and h.job == rt.job_id
    assert h.shape == array.shape and np.dtype(h.dtype) == array.dtype
    assert h.nbytes == array.nbytes
    assert h.order == ("F" if array.ndim > 1 and not array.flags.c_contiguous else "C")
    assert rt.get(h) is array
    both = rt.get([h, h])
    assert isinstance(both, list) and len(both) == 2 and all(a is array for a in both)
    (future,) = rt.fetch(h)
    assert future.done() and future.result() is array
    (bridged,) = rt.fetch(h).futures()
    assert isinstance(bridged, concurrent.futures.Future) and bridged.result(timeout=0) is array


def test_put_copies_non_contiguous_only(rt):
    base = np.arange(40, dtype=np.int32).reshape(8, 5)
    view = base[::2, 1:]
    h = rt.put(view)
    got = rt.get(h)
    assert got is not view and not np.shares_memory(got, base)
    assert np.array_equal(got, view) and got.flags.c_contiguous and h.order == "C"
    base[0, 1] = -1  # the tile is a copy: changing the input does not change it
    assert got[0, 0] == 1


@pytest.mark.parametrize(
    ("array", "error"),
    [
        ([1, 2, 3], TypeError),
        (np.array([object(), 1], dtype=object), TypeError),
        (np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]), TypeError),
        (b"abc", TypeError),
        (np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]), TypeError),
    ],
    ids=["list", "object", "structured", "bytes", "masked"],
)
def test_put_rejects_what_cannot_be_sent(rt, array, error):
    with pytest.raises(error, match="array: expected"):
        rt.put(array)
    assert len(rt._store) == 0


def test_get_with_out_copies_a_local_tile(rt):
    tile = np.arange(6, dtype=np.float64).reshape(2, 3)
    h = rt.put(tile)
    out = np.empty((2, 3))
    assert rt.get(h, out=out) is out
    assert np.array_equal(out, tile) and not np.shares_memory(out, tile)
    outs = [None, np.empty((2, 3))]
    got = rt.get([h, h], out=outs)
    assert got[0] is tile and got[1] is outs[1]


def _outs(n: int, bad: object, at: int = 70) -> list:
    """``n`` fitting int16 buffers of 10 elements with ``bad`` at index ``at``."""
    outs: list = [np.empty(10, np.int16) for _ in range(n)]
    outs[at] = bad
    return outs


def test_get_and_fetch_argument_errors_name_the_item(rt):
    h = rt.put(np.arange(10, dtype=np.int16))
    f = rt.put(np.asfortranarray(np.ones((3, 4))))
    readonly = np.empty(10, np.int16)
    readonly.setflags(write=False)
    cases = [
        (TypeError, dict(handles=[h, 42]), "handles[1]"),
        (ValueError, dict(handles=[dataclasses.replace(h, job="other")]), "handles[0]"),
        (ValueError, dict(handles=[h, dataclasses.replace(h, owner=1)]), "handles[1].owner"),
        (ValueError, dict(handles=[h, h], out=[None]), "out: expected 2 buffers"),
        (ValueError, dict(handles=[h, h], out=[None, np.empty(9, np.int16)]), "out[1]"),
        (ValueError, dict(handles=[h], out=[np.empty(10, np.int32)]), "out[0]: expected shape"),
        (ValueError, dict(handles=[h, f], out=[None, np.empty((3, 4))]), "out[1]: expected a F"),
        (ValueError, dict(handles=[h], out=[readonly]), "out[0]: expected a writable"),
        (ValueError, dict(handles=[h], out=[np.empty(20, np.int16)[::2]]), "non-contiguous"),
        (TypeError, dict(handles=[h], out=["buffer"]), "out[0]"),
        # Fields that fit no handle, in a short list and in a bulk one (checked as arrays).
        (ValueError, dict(handles=[dataclasses.replace(h, tile_id=-1)]), "handles[0].tile_id"),
        (ValueError, dict(handles=[h] * 70 + [dataclasses.replace(h, tile_id=2**64)]), "[70]"),
        (ValueError, dict(handles=[h, dataclasses.replace(h, nbytes="20")]), "[1].nbytes"),
        (ValueError, dict(handles=[h] * 80 + [dataclasses.replace(h, shape=[10])]), "[80]: exp"),
        (TypeError, dict(handles=[h] * 80 + [42]), "handles[80]"),
        (ValueError, dict(handles=[h] * 80 + [dataclasses.replace(h, job="x")]), "handles[80]"),
        (ValueError, dict(handles=[h] * 80 + [dataclasses.replace(h, owner=-1)]), "[80].owner"),
        # out= for a bulk list: checked a list at a time, the culprit still named.
        (ValueError, dict(handles=[h] * 80, out=_outs(80, readonly)), "out[70]: expected a w"),
        (ValueError, dict(handles=[h] * 80, out=_outs(80, np.empty(10, np.int32))), "out[70]"),
        (ValueError, dict(handles=[h] * 80, out=_outs(80, np.empty(20, np.int16)[::2])), "non-c"),
        (TypeError, dict(handles=[h] * 80, out=_outs(80, "buffer")), "out[70]"),
    ]
    for error, kwargs, needle in cases:
        for method in (rt.get, rt.fetch):
            with pytest.raises(error) as info:
                method(**kwargs)
            assert needle in str(info.value), (method.__name__, kwargs)


def test_free(rt):
    h = rt.put(np.arange(4))
    with pytest.raises(TypeError, match="handle"):
        rt.free("not a handle")
    with pytest.raises(ValueError, match="owned by rank 3"):
        rt.free(dataclasses.replace(h, owner=3))
    rt.free(h)
    with pytest.raises(gpupart.TileNotFoundError, match="rank 0 has no tile") as info:
        rt.free(h)
    assert (info.value.owner, info.value.tile_id) == (0, h.tile_id)
    with pytest.raises(gpupart.TileNotFoundError):
        rt.get(h)
    (future,) = rt.fetch([h])
    assert isinstance(future.exception(timeout=WAIT), gpupart.TileNotFoundError)
    unknown = dataclasses.replace(h, tile_id=10**9)
    with pytest.raises(gpupart.TileNotFoundError, match=str(10**9)):
        rt.get(unknown)


def test_collectives_in_a_world_of_one(rt):
    rt.barrier(timeout=5)
    assert rt.broadcast({"a": 1}) == {"a": 1}
    assert rt.allgather(("x", 1)) == [("x", 1)]
    assert np.array_equal(rt.allreduce(np.arange(3), op="max"), np.arange(3))
    assert rt.allreduce(4, op="prod") == 4
    with pytest.raises(ValueError, match="op"):
        rt.allreduce(np.arange(3), op="avg")
    with pytest.raises(ValueError, match="root"):
        rt.broadcast(1, root=1)


# -- tags -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_tags_round_trip(kind):
    for sender in (0, 1, 12345, tags.MAX_RANKS - 1):
        for seq in (0, 1, 2**35 + 3, tags.SEQ_MASK):
            tag = tags.make_tag(kind, sender, seq)
            assert 0 <= tag < 2**64
            assert tags.split_tag(tag) == (int(kind), sender, seq)
            assert (tag & tags.KIND_MASK) >> 60 == int(kind)
    unexpected = bool(tags.make_tag(kind, 3, 4) & tags.UNEXPECTED_MASK)
    assert unexpected == (kind is not Kind.DATA)  # only DATA lands in posted receives


def test_tag_sequence_wraps():
    tag = tags.make_tag(Kind.COLLECTIVE, 7, tags.SEQ_MASK + 5)
    assert tags.split_tag(tag) == (int(Kind.COLLECTIVE), 7, 4)
    assert tags.split_tag(0xF << 60) == (15, 0, 0)  # an unknown kind is still split


# -- the coordinator --------------------------------------------------------------------------


class Events:
    """Thread-safe list of callback events with a waiting helper."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self._cond = threading.Condition()

    def __call__(self, *event: Any) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = WAIT) -> tuple:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.items:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no matching event within {timeout} s; got {self.items}"
                self._cond.wait(remaining)


@pytest.fixture
def job() -> Iterator[dict[str, Any]]:
    """A running 3-rank coordinator with an event log; clients made by ``client`` are closed."""
    events = Events()
    token = secrets.token_bytes(32)
    coordinator = Coordinator(3, token, job_id="job-x", join_timeout=60, on_event=events).start()
    clients: list[CoordinatorClient] = []

    def client(rank: int, *, token: bytes = token, job_id: str = "job-x") -> CoordinatorClient:
        made = CoordinatorClient(coordinator.address, token, job_id=job_id, rank=rank, timeout=30)
        clients.append(made)
        return made

    yield {"coordinator": coordinator, "events": events, "client": client, "token": token}
    for made in clients:
        made.close(bye=False)
    coordinator.close()


def join_in_threads(clients: dict[int, CoordinatorClient]) -> dict[int, Any]:
    """Join every client from its own thread; returns rank -> table or exception."""
    results: dict[int, Any] = {}

    def run(rank: int, made: CoordinatorClient) -> None:
        try:
            results[rank] = made.join({"rank": rank, "address": b"ucx-%d" % rank})
        except Exception as exc:
            results[rank] = exc

    threads = [threading.Thread(target=run, args=item) for item in clients.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "a join did not finish"
    return results


def test_coordinator_join_sends_the_table_to_everyone(job):
    results = join_in_threads({r: job["client"](r) for r in (2, 0, 1)})
    want = [{"rank": r, "address": b"ucx-%d" % r} for r in range(3)]
    assert results == {0: want, 1: want, 2: want}
    joined = sorted(e[1] for e in job["events"].items if e[0] == "joined")
    assert joined == [0, 1, 2]


@pytest.mark.parametrize("wrong", ["token", "job_id"])
def test_coordinator_refuses_a_wrong_token_and_logs_it(job, caplog, wrong):
    caplog.set_level(logging.WARNING, logger="gpupart.coordinator")
    kwargs = {"token": secrets.token_bytes(32)} if wrong == "token" else {"job_id": "other-job"}
    intruder = job["client"](1, **kwargs)
    with pytest.raises(gpupart.AuthenticationError, match="not this job's coordinator"):
        intruder.join({"rank": 1})
    deadline = time.monotonic() + WAIT
    while "refused a join" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "refused a join" in caplog.text and "rank 1 did not prove the job token" in caplog.text
    assert job["token"].hex() not in caplog.text  # the secret is never logged
    assert not [e for e in job["events"].items if e[0] == "joined"]
    # The refused attempt took no place: the real ranks (rank 1 included) still join.
    results = join_in_threads({r: job["client"](r) for r in range(3)})
    assert all(isinstance(t, list) and len(t) == 3 for t in results.values()), results


def test_coordinator_refuses_a_duplicate_and_an_out_of_range_rank(job, caplog):
    caplog.set_level(logging.WARNING, logger="gpupart.coordinator")
    first = job["client"](0)
    tables: dict[int, Any] = {}
    waiting = threading.Thread(target=lambda: tables.update({0: first.join({"rank": 0})}))
    waiting.start()  # blocks until all three ranks joined
    job["events"].wait_for(lambda e: e == ("joined", 0))
    with pytest.raises(gpupart.AuthenticationError, match="rank 0 already joined"):
        job["client"](0).join({"rank": 0})
    with pytest.raises(gpupart.AuthenticationError, match=r"outside the job's 0\.\.2"):
        job["client"](3).join({"rank": 3})
    assert "rank 0 already joined" in caplog.text and "rank 3 outside" in caplog.text
    results = join_in_threads({1: job["client"](1), 2: job["client"](2)})
    waiting.join(WAIT)
    assert not waiting.is_alive()
    assert [row["rank"] for row in tables[0]] == [0, 1, 2]
    assert [row["rank"] for row in results[1]] == [0, 1, 2]


def test_coordinator_reports_a_lost_rank_and_a_clean_leave(job):
    clients = {r: job["client"](r) for r in range(3)}
    results = join_in_threads(clients)
    assert all(isinstance(t, list) for t in results.values())
    heard = {r: Events() for r in range(3)}
    for r, made in clients.items():
        made.watch(heard[r])
    # Rank 1's connection closes without a goodbye (what the kernel does for a killed process).
    clients[1].close(bye=False)
    for r in (0, 2):
        _, reason = heard[r].wait_for(lambda e: e[0] == 1)
        assert "exited or its connection to the job broke" in reason
    job["events"].wait_for(lambda e: e[:2] == ("lost", 1))
    # Rank 2 leaves cleanly: rank 0 hears it closed its runtime, the coordinator says "left".
    clients[2].close(bye=True)
    _, reason = heard[0].wait_for(lambda e: e[0] == 2)
    assert reason == "it closed its runtime"
    job["events"].wait_for(lambda e: e == ("left", 2))
    assert not [e for e in job["events"].items if e[:2] == ("lost", 2)]
    # The coordinator going away is reported as the loss of COORDINATOR_RANK.
    job["coordinator"].close()
    _, reason = heard[0].wait_for(lambda e: e[0] == COORDINATOR_RANK)
    assert "coordinator broke" in reason
    assert not [e for e in heard[0].items if e[0] not in (1, 2, COORDINATOR_RANK)]


def test_leave_waits_until_every_rank_has_left_or_is_lost(job):
    clients = {r: job["client"](r) for r in range(3)}
    assert all(isinstance(t, list) for t in join_in_threads(clients).values())
    for made in clients.values():
        made.watch(lambda rank, reason: None)
    assert not clients[0].leave(0.3)  # ranks 1 and 2 are still working: times out
    left = {}
    waiter = threading.Thread(target=lambda: left.setdefault(2, clients[2].leave(WAIT)))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()  # rank 1 has neither left nor been lost
    clients[1].close(bye=False)  # lost: counts as gone
    waiter.join(WAIT)
    assert left == {2: True}
    assert clients[0].leave(1.0)  # already released: returns at once


def test_coordinator_gives_up_on_ranks_that_never_join():
    token = secrets.token_bytes(32)
    with Coordinator(2, token, job_id="j", join_timeout=0.5).start() as coordinator:
        made = CoordinatorClient(coordinator.address, token, job_id="j", rank=0, timeout=30)
        try:
            started = time.monotonic()
            with pytest.raises(gpupart.PeerLostError, match="did not join within") as info:
                made.join({"rank": 0})
            assert info.value.rank == 1
            assert time.monotonic() - started < WAIT
        finally:
            made.close(bye=False)


def test_coordinator_refuses_malformed_handshakes(job, caplog):
    caplog.set_level(logging.WARNING, logger="gpupart.coordinator")
    address = job["coordinator"].address

    def exchange(frame: bytes) -> bytes:
        with socket.create_connection(address, timeout=WAIT) as sock:
            sock.sendall(frame)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data

    reply = exchange(struct.pack("!I", 5) + b"hello")
    assert reply[4:6] == b"NO" and b"malformed hello" in reply
    reply = exchange(struct.pack("!I", 10**6))  # a huge frame before authentication
    assert reply[4:6] == b"NO" and b"exceeds" in reply
    # Nothing from an unauthenticated peer is unpickled: a pickle as the hello is refused.
    reply = exchange(struct.pack("!I", 40) + pickle.dumps(("bye",)).ljust(40, b"."))
    assert reply[4:6] == b"NO"
    assert caplog.text.count("refused a join") == 3
