"""Job rendezvous and liveness over TCP: who is in the job, where to reach them, who died.

One :class:`Coordinator` per job (hosted by ``gpupart run``, or by rank 0 under Slurm/MPI)
collects every rank's join record (UCX worker address, :class:`~gpupart.Location`, ...),
sends the full table to all ranks once everyone has joined, then stays up as the job's
liveness service: a rank whose control connection drops without saying goodbye is reported
to every other rank as lost, at once (the kernel closes a dead process's sockets) or within
about 12 s when a whole host vanishes (TCP keepalive).

Wire format (all integers big-endian). Every message is a frame ``u32 length | payload``.

Handshake, before anything is trusted (frames limited to 256 bytes, 10 s to complete)::

    client -> server  b"GPJ1" | client_nonce[32] | u32 rank
    server -> client  b"GPJ1" | server_nonce[32] | HMAC(token, b"server" | client_nonce | job)
    client -> server  HMAC(token, b"client" | server_nonce | u32 rank)
    server -> client  b"OK" or b"NO" | reason

Both sides prove they hold the job token without sending it; the coordinator never
unpickles anything from a connection that has not proven it, and logs refused joins.
After the handshake the payloads are pickles: the client sends its join record (a dict),
the server answers ``("table", [records by rank])`` once all ranks joined, then may send
``("lost", rank, reason)`` at any time; the client sends ``("bye",)`` when it leaves, and
once every rank has said it (or is lost) the server sends ``("all_left",)``: ranks wait for
that before tearing UCX down (:meth:`CoordinatorClient.leave`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import pickle
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpupart.errors import AuthenticationError, BootstrapError, CommTimeoutError, PeerLostError

__all__ = ["COORDINATOR_RANK", "LEFT_REASON", "Coordinator", "CoordinatorClient"]

logger = logging.getLogger("gpupart.coordinator")

_MAGIC = b"GPJ1"
_NONCE = 32
_PREAUTH_LIMIT = 256
_FRAME_LIMIT = 256 << 20
_HANDSHAKE_TIMEOUT = 10.0
#: Rank reported as lost when the coordinator itself disappears (rank 0 or the launcher).
COORDINATOR_RANK = -1
#: The reason given for a rank that said goodbye (a clean leave, not a crash).
LEFT_REASON = "it closed its runtime"


def _mac(token: bytes, *parts: bytes) -> bytes:
    return hmac.new(token, b"".join(parts), hashlib.sha256).digest()


def _set_keepalive(sock: socket.socket) -> None:
    """Detect a vanished host within ~12 s: probe after 6 s idle, every 2 s, 3 misses."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, val in (("TCP_KEEPIDLE", 6), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


@dataclass(eq=False)
class _Conn:
    """Server-side state of one control connection."""

    sock: socket.socket
    peer: str
    opened: float
    inbuf: bytearray = field(default_factory=bytearray)
    stage: str = "hello"  # hello -> proof -> record -> joined -> closed
    rank: int = -1
    server_nonce: bytes = b""
    said_bye: bool = False


class Coordinator:
    """The job's rendezvous and liveness service (one per job, runs a background thread).

    ``host`` is the interface the job uses (``127.0.0.1`` for a one-machine job, the first
    node's address under Slurm); the coordinator never listens on every interface.
    ``on_event`` (optional) is called from the service thread with ``("joined", rank)``,
    ``("lost", rank, reason)`` or ``("left", rank)``.
    """

    def __init__(
        self,
        size: int,
        token: bytes,
        *,
        job_id: str,
        host: str = "127.0.0.1",
        port: int = 0,
        join_timeout: float = 120.0,
        on_event: Callable[..., None] | None = None,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise BootstrapError(f"size: expected an int >= 1, found {size!r}")
        if not isinstance(token, bytes) or len(token) < 16:
            raise BootstrapError("token: expected at least 16 random bytes")
        self.size = size
        self.job_id = job_id
        self._token = token
        self._join_timeout = join_timeout
        self._on_event = on_event
        self._sel = selectors.DefaultSelector()
        self._listener = socket.create_server((host, port), reuse_port=False)
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._conns: dict[socket.socket, _Conn] = {}
        self._records: dict[int, dict[str, Any]] = {}
        self._by_rank: dict[int, _Conn] = {}
        self._gone: dict[int, str] = {}
        self._table_sent = False
        self._released = False  # "all_left" was sent
        self._lock = threading.Lock()
        self._pending_reports: list[tuple[int, str]] = []
        self._closing = False
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="gpupart-coordinator", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the coordinator listens on."""
        host, port = self._listener.getsockname()[:2]
        return host, port

    def start(self) -> Coordinator:
        """Start serving in a background thread; returns ``self``."""
        self._thread.start()
        return self

    def report_lost(self, rank: int, reason: str) -> None:
        """Tell every other rank that ``rank`` is gone (called by the launcher on child exit)."""
        with self._lock:
            self._pending_reports.append((rank, reason))
        self._wake()

    def wait_all_left(self, timeout: float) -> bool:
        """Wait until every joined rank has said goodbye or was lost; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and self._by_rank:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and close every connection; idempotent."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for sock in list(self._conns):
            self._drop(sock, quiet=True)
        with contextlib.suppress(OSError):
            self._sel.unregister(self._listener)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- service thread -------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _emit(self, *event: Any) -> None:
        if self._on_event is not None:
            try:
                self._on_event(*event)
            except Exception:
                logger.exception("coordinator event callback failed")

    def _serve(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select(timeout=1.0):
                sock = key.fileobj
                if sock is self._listener:
                    self._accept()
                elif sock is self._wake_r:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                else:
                    self._read(sock)  # type: ignore[arg-type]
            self._flush_reports()
            self._expire()

    def _accept(self) -> None:
        try:
            sock, addr = self._listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        _set_keepalive(sock)
        conn = _Conn(sock=sock, peer=f"{addr[0]}:{addr[1]}", opened=time.monotonic())
        self._conns[sock] = conn
        self._sel.register(sock, selectors.EVENT_READ, None)

    def _send(self, conn: _Conn, payload: bytes) -> None:
        # Control messages are small; a blocking send with a deadline keeps framing intact.
        conn.sock.settimeout(10.0)
        try:
            conn.sock.sendall(_frame(payload))
        except OSError:
            self._drop(conn.sock)
        else:
            conn.sock.setblocking(False)

    def _read(self, sock: socket.socket) -> None:
        conn = self._conns.get(sock)
        if conn is None:
            return
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(sock)
            return
        conn.inbuf += chunk
        while len(conn.inbuf) >= 4 and conn.stage != "closed":
            (length,) = struct.unpack("!I", conn.inbuf[:4])
            limit = _PREAUTH_LIMIT if conn.stage in ("hello", "proof") else _FRAME_LIMIT
            if length > limit:
                self._refuse(conn, f"frame of {length} bytes exceeds {limit}")
                return
            if len(conn.inbuf) < 4 + length:
                return
            payload = bytes(conn.inbuf[4 : 4 + length])
            del conn.inbuf[: 4 + length]
            self._handle(conn, payload)

    def _refuse(self, conn: _Conn, why: str) -> None:
        logger.warning("coordinator refused a join from %s: %s", conn.peer, why)
        with contextlib.suppress(OSError):
            conn.sock.setblocking(True)
            conn.sock.settimeout(1.0)
            conn.sock.sendall(_frame(b"NO" + why.encode()[:200]))
        self._drop(conn.sock, quiet=True)

    def _handle(self, conn: _Conn, payload: bytes) -> None:
        if conn.stage == "hello":
            if len(payload) != 4 + _NONCE + 4 or payload[:4] != _MAGIC:
                self._refuse(conn, "malformed hello")
                return
            client_nonce = payload[4 : 4 + _NONCE]
            (conn.rank,) = struct.unpack("!I", payload[4 + _NONCE :])
            conn.server_nonce = os.urandom(_NONCE)
            proof = _mac(self._token, b"server", client_nonce, self.job_id.encode())
            conn.stage = "proof"
            self._send(conn, _MAGIC + conn.server_nonce + proof)
        elif conn.stage == "proof":
            want = _mac(self._token, b"client", conn.server_nonce, struct.pack("!I", conn.rank))
            if not hmac.compare_digest(payload, want):
                self._refuse(conn, f"rank {conn.rank} did not prove the job token")
                return
            if not 0 <= conn.rank < self.size:
                self._refuse(conn, f"rank {conn.rank} outside the job's 0..{self.size - 1}")
                return
            if conn.rank in self._by_rank or conn.rank in self._gone:
                self._refuse(conn, f"rank {conn.rank} already joined")
                return
            conn.stage = "record"
            self._send(conn, b"OK")
        elif conn.stage == "record":
            try:
                record = pickle.loads(payload)  # authenticated peer
            except Exception:
                self._refuse(conn, f"rank {conn.rank} sent an unreadable join record")
                return
            if not isinstance(record, dict) or record.get("rank") != conn.rank:
                self._refuse(conn, f"rank {conn.rank} sent a join record for another rank")
                return
            conn.stage = "joined"
            self._by_rank[conn.rank] = conn
            self._records[conn.rank] = record
            self._emit("joined", conn.rank)
            if len(self._records) == self.size and not self._table_sent:
                self._table_sent = True
                table = pickle.dumps(("table", [self._records[r] for r in range(self.size)]))
                for other in list(self._by_rank.values()):
                    self._send(other, table)
        elif conn.stage == "joined":
            try:
                msg = pickle.loads(payload)  # authenticated peer
            except Exception:
                logger.warning("coordinator: unreadable message from rank %d", conn.rank)
                return
            if isinstance(msg, tuple) and msg and msg[0] == "bye":
                conn.said_bye = True
                self._release_if_all_left()

    def _release_if_all_left(self) -> None:
        """Once every rank said goodbye or is gone, tell those still connected ("all_left").

        Ranks wait for it before tearing down UCX, so no rank destroys its worker while a
        peer is still closing an endpoint to it (which resets the peer's connection).
        """
        if self._released:
            return
        for rank in range(self.size):
            conn = self._by_rank.get(rank)
            if rank not in self._gone and (conn is None or not conn.said_bye):
                return
        self._released = True
        msg = pickle.dumps(("all_left",))
        for conn in list(self._by_rank.values()):
            self._send(conn, msg)

    def _drop(self, sock: socket.socket, *, quiet: bool = False) -> None:
        conn = self._conns.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()
        if conn is None or conn.stage not in ("joined", "record"):
            return
        conn.stage = "closed"
        if self._by_rank.get(conn.rank) is conn:
            del self._by_rank[conn.rank]
        if quiet or self._closing:
            return
        if conn.said_bye:
            self._gone[conn.rank] = LEFT_REASON
            self._emit("left", conn.rank)
            self._broadcast_lost(conn.rank, LEFT_REASON)
        else:
            self._mark_lost(conn.rank, "its process exited or its connection to the job broke")

    def _mark_lost(self, rank: int, reason: str) -> None:
        if rank in self._gone:
            return
        self._gone[rank] = reason
        self._emit("lost", rank, reason)
        self._broadcast_lost(rank, reason)
        self._release_if_all_left()

    def _broadcast_lost(self, rank: int, reason: str) -> None:
        msg = pickle.dumps(("lost", rank, reason))
        for other in list(self._by_rank.values()):
            if other.rank != rank:
                self._send(other, msg)

    def _flush_reports(self) -> None:
        with self._lock:
            reports, self._pending_reports = self._pending_reports, []
        for rank, reason in reports:
            conn = self._by_rank.get(rank)
            if conn is not None and conn.said_bye:
                continue
            self._mark_lost(rank, reason)
            if conn is not None:
                self._drop(conn.sock, quiet=True)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if conn.stage in ("hello", "proof") and now - conn.opened > _HANDSHAKE_TIMEOUT:
                self._refuse(conn, "handshake timed out")
        if not self._table_sent and now - self._started > self._join_timeout and self._records:
            missing = sorted(set(range(self.size)) - set(self._records))
            for rank in missing:
                self._mark_lost(rank, f"it did not join within {self._join_timeout:g} s")


class CoordinatorClient:
    """A rank's control connection: join the job, get the table, hear about lost peers.

    ``on_lost(rank, reason)`` is called from a background reader thread; a dropped
    connection to the coordinator itself is reported as rank :data:`COORDINATOR_RANK`.
    """

    def __init__(
        self,
        address: tuple[str, int],
        token: bytes,
        *,
        job_id: str,
        rank: int,
        timeout: float = 120.0,
    ) -> None:
        self._address = address
        self._token = token
        self._job_id = job_id
        self._rank = rank
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._closing = False
        self._on_lost: Callable[[int, str], None] | None = None
        self._all_left = threading.Event()

    def connect(self) -> str:
        """Reach the coordinator (retrying until the timeout); returns our local IP address.

        That address is on the network the job uses by construction, so it is the right IP
        to publish in this rank's :class:`~gpupart.Location`.
        """
        deadline = time.monotonic() + self._timeout
        while self._sock is None:
            try:
                self._sock = socket.create_connection(self._address, timeout=5.0)
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise BootstrapError(
                        "could not reach the job coordinator at"
                        f" {self._address[0]}:{self._address[1]} within {self._timeout:g} s: {exc}"
                    ) from exc
                time.sleep(0.1)
        return str(self._sock.getsockname()[0])

    def join(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Connect if needed, prove the token, send ``record``, wait for the table."""
        deadline = time.monotonic() + self._timeout
        self.connect()
        assert self._sock is not None  # noqa: S101 - connect() set it or raised
        sock = self._sock
        _set_keepalive(sock)
        sock.settimeout(_HANDSHAKE_TIMEOUT)
        try:
            self._handshake(sock)
            sock.sendall(_frame(pickle.dumps(record)))
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            msg = pickle.loads(self._recv_frame(_FRAME_LIMIT))  # proven coordinator
        except TimeoutError as exc:
            self.close()
            raise CommTimeoutError(f"rank {self._rank} joining the job", self._timeout) from exc
        except AuthenticationError:
            self.close()  # no half-open handshake left behind; the coordinator logs the refusal
            raise
        except (OSError, EOFError) as exc:
            self.close()
            raise BootstrapError(
                f"rank {self._rank} lost the coordinator while joining: {exc}"
            ) from exc
        if msg[0] == "lost":
            self.close()
            raise PeerLostError(msg[1], f"{msg[2]} (before the job started)")
        if msg[0] != "table":
            self.close()
            raise BootstrapError(f"unexpected coordinator message {msg[0]!r} while joining")
        return msg[1]

    def _handshake(self, sock: socket.socket) -> None:
        """Prove the token to the coordinator and check that it proves it too."""
        client_nonce = os.urandom(_NONCE)
        sock.sendall(_frame(_MAGIC + client_nonce + struct.pack("!I", self._rank)))
        reply = self._recv_frame(_PREAUTH_LIMIT)
        if reply[:2] == b"NO":
            raise AuthenticationError(
                f"the coordinator refused rank {self._rank}: {reply[2:].decode(errors='replace')}"
            )
        server_nonce, proof = reply[4 : 4 + _NONCE], reply[4 + _NONCE :]
        if reply[:4] != _MAGIC or not hmac.compare_digest(
            proof, _mac(self._token, b"server", client_nonce, self._job_id.encode())
        ):
            raise AuthenticationError(
                f"the process at {self._address[0]}:{self._address[1]} is not this job's"
                " coordinator (it could not prove the job token)"
            )
        rank = struct.pack("!I", self._rank)
        sock.sendall(_frame(_mac(self._token, b"client", server_nonce, rank)))
        verdict = self._recv_frame(_PREAUTH_LIMIT)
        if verdict != b"OK":
            raise AuthenticationError(
                f"the coordinator refused rank {self._rank}: {verdict[2:].decode(errors='replace')}"
            )

    def watch(self, on_lost: Callable[[int, str], None]) -> None:
        """Start the background reader that reports lost ranks to ``on_lost``."""
        self._on_lost = on_lost
        self._reader = threading.Thread(target=self._read_loop, name="gpupart-control", daemon=True)
        self._reader.start()

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return bytes(buf)

    def _recv_frame(self, limit: int, sock: socket.socket | None = None) -> bytes:
        sock = sock or self._sock
        if sock is None:
            raise EOFError("connection closed")
        (length,) = struct.unpack("!I", self._recv_exact(sock, 4))
        if length > limit:
            raise BootstrapError(f"coordinator frame of {length} bytes exceeds {limit}")
        return self._recv_exact(sock, length)

    def _read_loop(self) -> None:
        sock = self._sock
        if sock is None:
            return
        # Blocking reads: close() shuts the socket down, which ends the read with EOF.
        sock.settimeout(None)
        while not self._closing:
            try:
                msg = pickle.loads(self._recv_frame(_FRAME_LIMIT, sock))
            except (OSError, EOFError, pickle.UnpicklingError, BootstrapError, struct.error):
                if not self._closing and self._on_lost is not None:
                    self._on_lost(COORDINATOR_RANK, "the connection to the job coordinator broke")
                return
            if isinstance(msg, tuple) and len(msg) == 3 and msg[0] == "lost" and self._on_lost:
                self._on_lost(int(msg[1]), str(msg[2]))
            elif msg == ("all_left",):
                self._all_left.set()

    def leave(self, timeout: float) -> bool:
        """Say goodbye and wait (at most ``timeout`` s) until every rank has said it or is gone.

        A barrier over the control connection for the end of the job, when UCX endpoints
        are already closed; returns False on timeout (or without a running reader).
        """
        sock = self._sock
        if sock is None or self._closing:
            return False
        try:
            sock.sendall(_frame(pickle.dumps(("bye",))))
        except OSError:
            return False
        return self._reader is not None and self._all_left.wait(timeout)

    def close(self, *, bye: bool = True) -> None:
        """Say goodbye (a clean leave, not a failure) and close; idempotent."""
        if self._closing:
            return
        self._closing = True
        sock, self._sock = self._sock, None
        if sock is not None:
            if bye:
                with contextlib.suppress(OSError):
                    sock.settimeout(2.0)
                    sock.sendall(_frame(pickle.dumps(("bye",))))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(2.0)
