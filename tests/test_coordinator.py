"""The job coordinator and its client: the handshake spoken by hand, failures, limits.

The handshake is written out here from the wire format in the coordinator's docstring (not
borrowed from the module), so a test of the token check sends exactly what an intruder
could send. Coordinators run in this process; the descriptor-limit test runs one in a
subprocess with a lowered ``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import pickle
import secrets
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import gpupart
from gpupart.job.coordinator import (
    FAILURE_TEXT_LIMIT,
    LEFT_REASON,
    Coordinator,
    CoordinatorClient,
)

PY = sys.executable
SCRIPTS = Path(__file__).parent / "launcher_scripts"
WAIT = 20.0  # generous bound for a thread or socket event on a loaded machine
PROMPT = 1.0  # "at once": a lost rank is heard, a reply comes, within this
JOB = "job-c"


# -- the wire format, by hand ----------------------------------------------------------


def mac(token: bytes, *parts: bytes) -> bytes:
    return hmac.new(token, b"".join(parts), hashlib.sha256).digest()


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(frame(payload))


def frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_frame(sock: socket.socket) -> bytes:
    (length,) = struct.unpack("!I", recv_exact(sock, 4))
    return recv_exact(sock, length)


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the coordinator still sends until it hangs up (fails if it does not)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def hello(sock: socket.socket, rank: int, token: bytes) -> bytes:
    """Send the hello, check the server's proof of ``token``; return the server nonce."""
    client_nonce = os.urandom(32)
    send_frame(sock, b"GPJ1" + client_nonce + struct.pack("!I", rank))
    reply = recv_frame(sock)
    assert reply[:4] == b"GPJ1" and len(reply) == 4 + 32 + 32
    server_nonce, proof = reply[4:36], reply[36:]
    assert proof == mac(token, b"server", client_nonce, JOB.encode())
    return server_nonce


def client_proof(token: bytes, server_nonce: bytes, rank: int) -> bytes:
    return mac(token, b"client", server_nonce, struct.pack("!I", rank))


class Events:
    """A thread-safe log of callback calls with a wait for a matching one."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self._cond = threading.Condition()

    def __call__(self, *event: Any) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[tuple], bool], timeout: float = WAIT) -> tuple:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.items:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no matching event within {timeout} s; got {self.items}"
                self._cond.wait(remaining)


def wait_for_log(caplog: pytest.LogCaptureFixture, needle: str) -> None:
    deadline = time.monotonic() + WAIT
    while needle not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert needle in caplog.text, caplog.text


@pytest.fixture
def token() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def job(token: bytes) -> Iterator[dict[str, Any]]:
    """A running 3-rank coordinator with an event log; clients made by ``client`` are closed."""
    events = Events()
    coordinator = Coordinator(3, token, job_id=JOB, join_timeout=60, on_event=events).start()
    clients: list[CoordinatorClient] = []

    def client(rank: int, timeout: float = WAIT) -> CoordinatorClient:
        made = CoordinatorClient(coordinator.address, token, job_id=JOB, rank=rank, timeout=timeout)
        clients.append(made)
        return made

    yield {"coordinator": coordinator, "events": events, "client": client}
    for made in clients:
        made.close(bye=False)
    coordinator.close()


def join_all(clients: dict[int, CoordinatorClient]) -> dict[int, Any]:
    """Join every client from its own thread; returns rank -> table (or the exception)."""
    results: dict[int, Any] = {}

    def run(rank: int, made: CoordinatorClient) -> None:
        try:
            results[rank] = made.join({"rank": rank})
        except Exception as exc:
            results[rank] = exc

    threads = [threading.Thread(target=run, args=item) for item in clients.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "a join did not finish"
    return results


def joined_and_watched(job: dict[str, Any]) -> tuple[dict[int, CoordinatorClient], dict]:
    clients = {r: job["client"](r) for r in range(3)}
    tables = join_all(clients)
    assert all(isinstance(t, list) for t in tables.values()), tables
    heard = {r: Events() for r in range(3)}
    for r, made in clients.items():
        made.watch(heard[r])
    return clients, heard


# -- the token check -------------------------------------------------------------------


class _Trap:
    """Unpickling this creates a directory: proof that the coordinator unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def test_a_forged_proof_is_refused_logged_and_nothing_after_it_unpickled(token, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="gpupart.coordinator")
    trap = tmp_path / "unpickled"
    wrong = secrets.token_bytes(32)
    with Coordinator(1, token, job_id=JOB, join_timeout=60).start() as coordinator:
        with socket.create_connection(coordinator.address, timeout=WAIT) as sock:
            server_nonce = hello(sock, 0, token)
            # The forged proof, then a pickle in the same write: a coordinator that let the
            # proof through would read the pickle as the join record.
            forged = client_proof(wrong, server_nonce, 0)
            sock.sendall(frame(forged) + frame(pickle.dumps(_Trap(trap))))
            verdict = recv_frame(sock)
            rest = read_to_end(sock)
        assert verdict == b"NO" + b"rank 0 did not prove the job token", verdict
        assert rest == b"", "the coordinator kept talking to a peer it refused"
        assert not trap.exists(), "the coordinator unpickled data from an unproven peer"
        wait_for_log(caplog, "refused a join from 127.0.0.1")
        assert "rank 0 did not prove the job token" in caplog.text
        # The refusal took nothing from rank 0: the real rank 0 joins.
        real = CoordinatorClient(coordinator.address, token, job_id=JOB, rank=0, timeout=WAIT)
        try:
            assert real.join({"rank": 0, "real": True}) == [{"rank": 0, "real": True}]
        finally:
            real.close()


def test_a_proof_for_another_rank_is_refused(token, caplog):
    caplog.set_level(logging.WARNING, logger="gpupart.coordinator")
    with Coordinator(2, token, job_id=JOB, join_timeout=60).start() as coordinator:
        with socket.create_connection(coordinator.address, timeout=WAIT) as sock:
            server_nonce = hello(sock, 1, token)
            send_frame(sock, client_proof(token, server_nonce, 0))  # right token, rank 0
            assert recv_frame(sock) == b"NOrank 1 did not prove the job token"
            assert read_to_end(sock) == b""
        wait_for_log(caplog, "rank 1 did not prove the job token")


def test_a_replayed_proof_is_refused(token, caplog):
    caplog.set_level(logging.WARNING, logger="gpupart.coordinator")
    with Coordinator(2, token, job_id=JOB, join_timeout=60).start() as coordinator:
        with socket.create_connection(coordinator.address, timeout=WAIT) as first:
            server_nonce = hello(first, 0, token)
            seen = client_proof(token, server_nonce, 0)  # what an eavesdropper records
            send_frame(first, seen)
            assert recv_frame(first) == b"OK"
            with socket.create_connection(coordinator.address, timeout=WAIT) as second:
                hello(second, 1, token)
                send_frame(second, seen)  # replayed on a new connection, for another rank
                assert recv_frame(second) == b"NOrank 1 did not prove the job token"
            with socket.create_connection(coordinator.address, timeout=WAIT) as third:
                hello(third, 0, token)
                send_frame(third, seen)  # for the same rank: refused for the proof itself
                assert recv_frame(third) == b"NOrank 0 did not prove the job token"
        assert caplog.text.count("did not prove the job token") >= 2


def test_a_client_that_gives_up_during_the_handshake_is_logged(token, caplog):
    caplog.set_level(logging.WARNING, logger="gpupart.coordinator")
    with Coordinator(1, token, job_id=JOB, join_timeout=60).start() as coordinator:
        intruder = CoordinatorClient(
            coordinator.address, secrets.token_bytes(32), job_id=JOB, rank=0, timeout=WAIT
        )
        with pytest.raises(gpupart.AuthenticationError, match="not this job's coordinator"):
            intruder.join({"rank": 0})
        wait_for_log(caplog, "it closed the connection during the handshake")


# -- a failing rank ----------------------------------------------------------------------


def test_a_reported_failure_reaches_every_rank_at_once(job):
    clients, heard = joined_and_watched(job)
    started = time.monotonic()
    assert clients[1].report_failure("ValueError: bad input") is True
    for r in (0, 2):
        rank, reason = heard[r].wait_for(lambda e: e[0] == 1)
        assert time.monotonic() - started < PROMPT
        assert reason == "it failed: ValueError: bad input"
        error = gpupart.PeerLostError(rank, reason)
        assert str(error) == "rank 1 was lost: it failed: ValueError: bad input"
    job["events"].wait_for(lambda e: e == ("failed", 1, "ValueError: bad input"))
    assert not [e for e in job["events"].items if e[0] in ("lost", "left") and e[1] == 1]
    assert not heard[1].items  # the failing rank hears nothing of itself


def test_a_failed_rank_counts_as_gone_for_the_leave_barrier(job):
    clients, _ = joined_and_watched(job)
    coordinator = job["coordinator"]
    assert clients[1].report_failure("RuntimeError: boom")
    left: dict[int, bool] = {}
    leaving = [
        threading.Thread(target=lambda r=r: left.setdefault(r, clients[r].leave(WAIT)))
        for r in (0, 2)
    ]
    started = time.monotonic()
    for t in leaving:
        t.start()
    for t in leaving:
        t.join(WAIT)
    assert left == {0: True, 2: True}  # released without rank 1's goodbye
    assert time.monotonic() - started < PROMPT
    clients[0].close()
    clients[2].close()
    # Rank 1 is still connected, but it failed: the coordinator does not wait for it.
    assert coordinator.wait_all_left(PROMPT)
    # Its goodbye and its hang-up later change nothing: still "failed", never "left".
    clients[1].close(bye=True)
    time.sleep(0.2)
    assert [e for e in job["events"].items if len(e) > 1 and e[1] == 1 and e[0] != "joined"] == [
        ("failed", 1, "RuntimeError: boom")
    ]


def test_wait_all_left_waits_for_ranks_still_connected(job):
    clients, _ = joined_and_watched(job)
    coordinator = job["coordinator"]
    assert not coordinator.wait_all_left(0.2)
    clients[0].close()
    clients[2].close(bye=False)
    assert not coordinator.wait_all_left(0.2)  # rank 1 is still connected and has not failed
    clients[1].close()
    assert coordinator.wait_all_left(WAIT)


def test_report_failure_bounds_the_text_and_checks_its_type(job):
    clients, heard = joined_and_watched(job)
    with pytest.raises(TypeError, match="text: expected str, found int"):
        clients[2].report_failure(42)  # type: ignore[arg-type]
    assert clients[2].report_failure("E" * 10_000)
    _, reason = heard[0].wait_for(lambda e: e[0] == 2)
    assert reason == "it failed: " + "E" * (FAILURE_TEXT_LIMIT - 3) + "..."
    assert clients[2].report_failure("a second report")  # noted again, changes nothing
    time.sleep(0.2)
    assert [e for e in heard[0].items if e[0] == 2] == [(2, reason)]


def test_report_failure_without_a_reader_and_before_joining(job):
    clients = {r: job["client"](r) for r in range(3)}
    early = job["client"](0)
    started = time.monotonic()
    assert early.report_failure("ValueError: too early") is False  # not joined: nothing sent
    assert time.monotonic() - started < PROMPT
    early.close()
    join_all(clients)
    clients[0].watch(Events())
    assert clients[2].report_failure("KeyError: 'x'")  # no watch(): it reads the answer itself
    job["events"].wait_for(lambda e: e == ("failed", 2, "KeyError: 'x'"))
    clients[2].close()
    assert clients[2].report_failure("after close") is False


# -- limits: time and descriptors ------------------------------------------------------


class FakeCoordinator:
    """One connection served by hand: the handshake, then (``table``) a table, then silence.

    Speaks for a job of one rank. With ``handshake=False`` it never answers the hello; with
    ``table=False`` it stops reading after the handshake; otherwise it reads the record,
    sends the table and hangs then.
    """

    def __init__(self, token: bytes, *, handshake: bool = True, table: bool = True) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.conn: socket.socket | None = None
        self._token, self._handshake, self._table = token, handshake, table
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError, EOFError):  # the client gave up: nothing to serve
            self._serve_one()

    def _serve_one(self) -> None:
        self.conn, _ = self.listener.accept()
        if not self._handshake:
            return
        hello_ = recv_frame(self.conn)
        server_nonce = os.urandom(32)
        proof = mac(self._token, b"server", hello_[4:36], JOB.encode())
        send_frame(self.conn, b"GPJ1" + server_nonce + proof)
        if recv_frame(self.conn) != client_proof(self._token, server_nonce, 0):
            return
        send_frame(self.conn, b"OK")
        if self._table:
            record = pickle.loads(recv_frame(self.conn))
            send_frame(self.conn, pickle.dumps(("table", [record])))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        self._thread.join(WAIT)


@pytest.mark.parametrize("stage", ["handshake", "record"])
def test_join_gives_up_within_its_timeout_on_a_coordinator_that_hangs(token, stage):
    # It hangs before answering the hello, or stops reading while a large record is sent.
    fake = FakeCoordinator(token, handshake=stage != "handshake", table=False)
    made = CoordinatorClient(fake.address, token, job_id=JOB, rank=0, timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(gpupart.CommTimeoutError, match="rank 0 joining the job"):
            made.join({"rank": 0, "blob": bytes(64 << 20)})
        assert time.monotonic() - started < 1.0 + 0.5
    finally:
        made.close()
        fake.close()


def test_report_failure_leave_and_close_keep_their_timeouts(token):
    fake = FakeCoordinator(token)  # answers the join, then never again
    made = CoordinatorClient(fake.address, token, job_id=JOB, rank=0, timeout=WAIT)
    try:
        assert made.join({"rank": 0}) == [{"rank": 0}]
        made.watch(Events())
        for call in [
            lambda: made.report_failure("X: y", timeout=0.5),
            lambda: made.leave(0.5),
            lambda: made.close(timeout=0.5),
        ]:
            started = time.monotonic()
            assert not call()
            assert time.monotonic() - started < 0.5 + 0.3
    finally:
        made.close()
        fake.close()


def test_a_rank_that_stops_reading_does_not_stall_the_others(token):
    # Rank 0 joins by hand with a large record and never reads: the table to it cannot be
    # sent at once. Rank 1 must still get its table promptly, and close() must not wait.
    coordinator = Coordinator(2, token, job_id=JOB, join_timeout=60).start()
    stuck = socket.create_connection(coordinator.address, timeout=WAIT)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    made = CoordinatorClient(coordinator.address, token, job_id=JOB, rank=1, timeout=WAIT)
    try:
        send_frame(stuck, client_proof(token, hello(stuck, 0, token), 0))
        assert recv_frame(stuck) == b"OK"
        send_frame(stuck, pickle.dumps({"rank": 0, "blob": bytes(16 << 20)}))
        started = time.monotonic()
        table = made.join({"rank": 1})
        assert [row["rank"] for row in table] == [0, 1]
        assert time.monotonic() - started < 3.0
        started = time.monotonic()
        coordinator.close(timeout=1.0)
        assert time.monotonic() - started < 1.0 + 0.5
        assert "gpupart-coordinator" not in [t.name for t in threading.enumerate()]
    finally:
        made.close()
        stuck.close()
        coordinator.close()


def test_close_keeps_its_timeout_while_an_event_callback_hangs(token, caplog):
    caplog.set_level(logging.WARNING, logger="gpupart.coordinator")
    release = threading.Event()
    coordinator = Coordinator(1, token, job_id=JOB, on_event=lambda *e: release.wait(WAIT))
    coordinator.start()
    made = CoordinatorClient(coordinator.address, token, job_id=JOB, rank=0, timeout=0.5)
    try:
        with pytest.raises(gpupart.CommTimeoutError):
            made.join({"rank": 0})  # the service thread is stuck in the "joined" callback
        started = time.monotonic()
        coordinator.close(timeout=0.5)
        assert time.monotonic() - started < 0.5 + 0.3
        assert "did not stop within 0.5 s" in caplog.text
    finally:
        release.set()
    # Released, the thread closes everything itself (nothing was closed under it).
    deadline = time.monotonic() + WAIT
    while "gpupart-coordinator" in [t.name for t in threading.enumerate()]:
        assert time.monotonic() < deadline, "the coordinator thread did not end"
        time.sleep(0.02)


def test_coordinator_at_its_descriptor_limit_idles_then_serves(token):
    # The coordinator runs in a subprocess with few descriptors; this process fills them.
    child = subprocess.Popen(
        [PY, str(SCRIPTS / "coordinator_at_fd_limit.py"), "64", token.hex(), JOB],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    conns: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None and child.stderr is not None
        port = int(read_line(child.stdout, "port"))
        for _ in range(100):  # ~55 accepted, the rest wait in the listen backlog (128)
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
        time.sleep(0.5)  # it accepts what it can, then runs out of descriptors
        child.stdin.write("cpu\n")
        child.stdin.flush()
        cpu = float(read_line(child.stdout, "cpu"))
        # Idle takes ~0.01 s; spinning on accept() takes 0.5-1 s (all a loaded core gives).
        assert cpu < 0.25, f"the coordinator used {cpu:.2f} s of CPU in 1 s at its fd limit"
        warning = read_line(child.stderr, "the job coordinator cannot accept connections")
        assert "EMFILE" in warning, warning
        for sock in conns:
            sock.close()
        conns.clear()
        made = CoordinatorClient(("127.0.0.1", port), token, job_id=JOB, rank=0, timeout=WAIT)
        started = time.monotonic()
        try:
            assert made.join({"rank": 0}) == [{"rank": 0}]
        finally:
            made.close()
        assert time.monotonic() - started < 3.0
        child.stdin.write("quit\n")
        child.stdin.flush()
        _, err = child.communicate(timeout=WAIT)
        assert child.returncode == 0, err
        assert "cannot accept connections" not in err, err  # logged once, read above
    finally:
        for sock in conns:
            sock.close()
        child.kill()
        child.communicate()


def read_line(stream: Any, prefix: str, within: float = WAIT) -> str:
    """The rest of the first line of ``stream`` that starts with ``prefix``."""
    deadline = time.monotonic() + within
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if prefix in line:
            return line.split(prefix, 1)[1].strip()
    raise AssertionError(f"no line with {prefix!r} within {within} s; got {seen}")


def test_left_reason_is_what_a_clean_leave_reports(job):
    clients, heard = joined_and_watched(job)
    clients[2].close()
    assert heard[0].wait_for(lambda e: e[0] == 2) == (2, LEFT_REASON)
    job["events"].wait_for(lambda e: e == ("left", 2))
