"""Job rendezvous and liveness over TCP: who is in the job, where to reach them, who died.

One :class:`Coordinator` per job (hosted by ``gpupart run``, or by rank 0 under Slurm/MPI)
collects every rank's join record (UCX worker address, :class:`~gpupart.Location`, ...),
sends the full table to all ranks once everyone has joined, then stays up as the job's
liveness service: a rank whose control connection drops without saying goodbye is reported
to every other rank as lost, at once (the kernel closes a dead process's sockets) or within
about 12 s when a whole host vanishes (TCP keepalive); a rank that fails says so first
(:meth:`CoordinatorClient.report_failure`), and the others hear why at once.

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
``("lost", rank, reason)`` at any time. The client sends ``("bye",)`` when it leaves, and
once every rank has said it (or is gone) the server sends ``("all_left",)``: ranks wait for
that before tearing UCX down (:meth:`CoordinatorClient.leave`). A rank that fails sends
``("failing", text)`` (the error, at most :data:`FAILURE_TEXT_LIMIT` characters); the
server answers it ``("failure_noted",)``, counts the rank as gone and tells the others
``("lost", rank, "it failed: <text>")``.

The service thread never blocks on a peer: replies wait in per-connection buffers, and a
peer that stops reading is dropped once its buffer passes a limit.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import os
import pickle
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpupart.errors import AuthenticationError, BootstrapError, CommTimeoutError, PeerLostError

__all__ = [
    "COORDINATOR_RANK",
    "FAILURE_TEXT_LIMIT",
    "LEFT_REASON",
    "Coordinator",
    "CoordinatorClient",
]

logger = logging.getLogger("gpupart.coordinator")

_MAGIC = b"GPJ1"
_NONCE = 32
_PREAUTH_LIMIT = 256
_FRAME_LIMIT = 256 << 20
_OUTBUF_LIMIT = 2 * _FRAME_LIMIT  # a peer that lets this much pile up is not reading
_HANDSHAKE_TIMEOUT = 10.0
_ACCEPT_PAUSE = 0.2  # how long new connections wait when accept() runs out of descriptors
_ACCEPT_LOG_EVERY = 60.0  # ... and how often that is logged, at most
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_READ = selectors.EVENT_READ
#: Rank reported as lost when the coordinator itself disappears (rank 0 or the launcher).
COORDINATOR_RANK = -1
#: The reason given for a rank that said goodbye (a clean leave, not a crash).
LEFT_REASON = "it closed its runtime"
#: Longest failure text a rank can report (longer text is cut, ending in ``...``).
FAILURE_TEXT_LIMIT = 500


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


def _bounded(text: str) -> str:
    """``text`` cut to :data:`FAILURE_TEXT_LIMIT` characters (marked with ``...``)."""
    if len(text) <= FAILURE_TEXT_LIMIT:
        return text
    return text[: FAILURE_TEXT_LIMIT - 3] + "..."


@dataclass(eq=False)
class _Conn:
    """Server-side state of one control connection."""

    sock: socket.socket
    peer: str
    opened: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    writing: bool = False  # registered for EVENT_WRITE (outbuf did not fit the socket)
    stage: str = "hello"  # hello -> proof -> record -> joined -> closed
    rank: int = -1
    server_nonce: bytes = b""
    said_bye: bool = False


class Coordinator:
    """The job's rendezvous and liveness service (one per job, runs a background thread).

    ``host`` is the interface the job uses (``127.0.0.1`` for a one-machine job, the first
    node's address under Slurm); the coordinator never listens on every interface.
    ``on_event`` (optional) is called from the service thread with ``("joined", rank)``,
    ``("lost", rank, reason)``, ``("left", rank)`` or ``("failed", rank, text)`` (the rank
    reported its own failure; ``text`` is its error, e.g. ``'ValueError: bad input'``).
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
        self._address: tuple[str, int] = self._listener.getsockname()[:2]
        self._accept_paused_until: float | None = None
        self._accept_trouble_logged = -_ACCEPT_LOG_EVERY  # when it was last logged
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._conns: dict[socket.socket, _Conn] = {}
        self._records: dict[int, dict[str, Any]] = {}
        self._by_rank: dict[int, _Conn] = {}
        self._claimed: set[int] = set()  # ranks that proved the token (one connection each)
        self._gone: dict[int, str] = {}  # rank -> why it is out of the job
        self._done: set[int] = set()  # ranks that said goodbye or are gone
        self._present: set[int] = set()  # joined ranks still connected and not gone
        self._all_gone = threading.Event()  # _present is empty
        self._all_gone.set()
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
        return self._address

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
        """Wait until every joined rank has disconnected or is gone; False on timeout.

        A rank that reported its failure counts as gone even while still connected.
        """
        return self._all_gone.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and close every connection (within ``timeout`` s); idempotent.

        The service thread closes the sockets itself on its way out, so nothing is closed
        under it; if it does not stop in time (an ``on_event`` callback that hangs), this
        returns anyway and the thread closes them when it gets there.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if self._thread.ident is None:  # never started
            self._shutdown()
            return
        self._wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("the job coordinator did not stop within %g s", timeout)

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
        try:
            while not self._closing:
                for key, mask in self._sel.select(timeout=self._select_timeout()):
                    sock = key.fileobj
                    if sock is self._listener:
                        self._accept()
                    elif sock is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        conn = self._conns.get(sock)  # type: ignore[call-overload]
                        if conn is not None and mask & selectors.EVENT_WRITE:
                            self._flush(conn)
                        if conn is not None and conn.stage != "closed" and mask & _READ:
                            self._read(conn)
                self._flush_reports()
                self._expire()
                self._resume_accepting()
        except Exception:
            logger.exception("the job coordinator stopped on an unexpected error")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Close every connection, the listener and the selector (the service thread's end)."""
        for sock in list(self._conns):
            self._drop(sock, quiet=True)
        for sock in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(sock)
            sock.close()
        self._sel.close()
        self._present.clear()
        self._all_gone.set()

    def _select_timeout(self) -> float:
        if self._accept_paused_until is None:
            return 1.0
        return min(1.0, max(0.0, self._accept_paused_until - time.monotonic()))

    # -- connections ----------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(64):  # what is queued, but not so much that reads starve
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                # Out of descriptors (EMFILE, ENFILE) or memory: the listener stays readable,
                # so stop watching it for a moment instead of spinning on accept().
                self._pause_accepting(exc)
                return
            try:
                sock.setblocking(False)
                _set_keepalive(sock)
            except OSError:
                sock.close()
                continue
            conn = _Conn(sock=sock, peer=f"{addr[0]}:{addr[1]}", opened=time.monotonic())
            self._conns[sock] = conn
            self._sel.register(sock, selectors.EVENT_READ, None)

    def _pause_accepting(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._accept_trouble_logged >= _ACCEPT_LOG_EVERY:
            self._accept_trouble_logged = now
            name = errno.errorcode.get(exc.errno or 0, "error")
            logger.warning(
                "the job coordinator cannot accept connections (%s: %s); new joins wait"
                " until it can (open connections: %d)",
                name,
                exc.strerror or exc,
                len(self._conns),
            )
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self._listener)
        self._accept_paused_until = now + _ACCEPT_PAUSE

    def _resume_accepting(self, *, now: bool = False) -> None:
        until = self._accept_paused_until
        if until is None or self._closing or not (now or time.monotonic() >= until):
            return
        self._accept_paused_until = None
        self._sel.register(self._listener, selectors.EVENT_READ, None)

    def _send(self, conn: _Conn, payload: bytes) -> None:
        """Queue one frame for ``conn`` and write what the socket takes now."""
        if conn.stage == "closed":
            return
        conn.outbuf += _frame(payload)
        if len(conn.outbuf) > _OUTBUF_LIMIT:
            logger.warning(
                "coordinator: %s stopped reading (%d bytes unsent); dropping it",
                conn.peer,
                len(conn.outbuf),
            )
            self._drop(conn.sock)
            return
        if not conn.writing:
            self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf, _SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn.sock)
            return
        del conn.outbuf[:sent]
        writing = bool(conn.outbuf)
        if writing != conn.writing:
            conn.writing = writing
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            self._sel.modify(conn.sock, events, None)

    def _read(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn.sock)
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
        """Log, answer ``NO`` + why (if the socket takes it now), close; nothing more is read."""
        logger.warning("coordinator refused a join from %s: %s", conn.peer, why)
        with contextlib.suppress(OSError):
            conn.sock.send(_frame(b"NO" + why.encode()[:200]), _SEND_FLAGS)
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
            if conn.rank in self._claimed:
                self._refuse(conn, f"rank {conn.rank} already joined")
                return
            self._claimed.add(conn.rank)
            conn.stage = "record"
            self._send(conn, b"OK")
        elif conn.stage == "record":
            self._handle_record(conn, payload)
        elif conn.stage == "joined":
            try:
                msg = pickle.loads(payload)  # authenticated peer
            except Exception:
                logger.warning("coordinator: unreadable message from rank %d", conn.rank)
                return
            if msg == ("bye",):
                conn.said_bye = True
                self._done.add(conn.rank)
                self._release_if_all_left()
            elif isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "failing":
                self._fail(conn, msg[1] if isinstance(msg[1], str) else repr(msg[1]))
            else:
                logger.warning("coordinator: unexpected message from rank %d", conn.rank)

    def _handle_record(self, conn: _Conn, payload: bytes) -> None:
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
        if conn.rank not in self._gone:
            self._present.add(conn.rank)
            self._all_gone.clear()
        self._emit("joined", conn.rank)
        if len(self._records) == self.size and not self._table_sent:
            self._table_sent = True
            table = pickle.dumps(("table", [self._records[r] for r in range(self.size)]))
            for other in list(self._by_rank.values()):
                self._send(other, table)

    def _fail(self, conn: _Conn, text: str) -> None:
        """``conn``'s rank reported its failure: it is gone; the others hear why at once."""
        text = _bounded(text)
        rank = conn.rank
        if rank not in self._gone:
            reason = f"it failed: {text}"
            self._set_gone(rank, reason)
            self._emit("failed", rank, text)  # before the ack: the launcher knows first
            self._broadcast_lost(rank, reason)
        self._send(conn, pickle.dumps(("failure_noted",)))
        self._release_if_all_left()

    def _set_gone(self, rank: int, reason: str) -> None:
        self._gone[rank] = reason
        self._done.add(rank)
        self._present.discard(rank)
        if not self._present:
            self._all_gone.set()

    def _release_if_all_left(self) -> None:
        """Once every rank said goodbye or is gone, tell those still connected ("all_left").

        Ranks wait for it before tearing down UCX, so no rank destroys its worker while a
        peer is still closing an endpoint to it (which resets the peer's connection).
        """
        if self._released or len(self._done) < self.size:
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
        self._resume_accepting(now=True)  # a descriptor came free
        if conn is None:
            return
        stage, conn.stage = conn.stage, "closed"
        if stage == "proof" and not (quiet or self._closing):
            logger.warning(
                "coordinator refused a join from %s: rank %d did not prove the job token"
                " (it closed the connection during the handshake)",
                conn.peer,
                conn.rank,
            )
        if stage not in ("joined", "record"):
            return
        if self._by_rank.get(conn.rank) is conn:
            del self._by_rank[conn.rank]
        if conn.rank not in self._gone:
            self._present.discard(conn.rank)
            if not self._present:
                self._all_gone.set()
        if quiet or self._closing or conn.rank in self._gone:
            return
        if conn.said_bye:
            self._set_gone(conn.rank, LEFT_REASON)
            self._emit("left", conn.rank)
            self._broadcast_lost(conn.rank, LEFT_REASON)
        else:
            self._mark_lost(conn.rank, "its process exited or its connection to the job broke")

    def _mark_lost(self, rank: int, reason: str) -> None:
        if rank in self._gone:
            return
        self._set_gone(rank, reason)
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
    Every call that waits takes its limit from ``timeout`` (:meth:`join`) or from its own
    argument, and returns or raises within it.
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
        self._joined = False  # the table arrived: the coordinator reads messages from us
        self._on_lost: Callable[[int, str], None] | None = None
        self._all_left = threading.Event()
        self._failure_noted = threading.Event()
        self._send_lock = threading.Lock()  # one frame at a time from any thread

    def connect(self) -> str:
        """Reach the coordinator (retrying until the timeout); returns our local IP address.

        That address is on the network the job uses by construction, so it is the right IP
        to publish in this rank's :class:`~gpupart.Location`.
        """
        return self._connect(time.monotonic() + self._timeout)

    def _connect(self, deadline: float) -> str:
        while self._sock is None:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError("timed out")
                self._sock = socket.create_connection(self._address, timeout=min(5.0, remaining))
            except OSError as exc:
                if time.monotonic() + 0.1 >= deadline:
                    raise BootstrapError(
                        "could not reach the job coordinator at"
                        f" {self._address[0]}:{self._address[1]} within {self._timeout:g} s: {exc}"
                    ) from exc
                time.sleep(0.1)
        return str(self._sock.getsockname()[0])

    def join(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Connect if needed, prove the token, send ``record``, wait for the table."""
        deadline = time.monotonic() + self._timeout
        self._connect(deadline)
        assert self._sock is not None  # noqa: S101 - _connect() set it or raised
        sock = self._sock
        try:
            _set_keepalive(sock)
            self._handshake(sock, min(deadline, time.monotonic() + _HANDSHAKE_TIMEOUT))
            self._send_frame(pickle.dumps(record), deadline)
            msg = pickle.loads(self._recv_frame(_FRAME_LIMIT, deadline))  # proven coordinator
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
        self._joined = True
        sock.settimeout(None)  # the reader blocks; senders poll with their own deadlines
        return msg[1]

    def _handshake(self, sock: socket.socket, deadline: float) -> None:
        """Prove the token to the coordinator and check that it proves it too."""
        client_nonce = os.urandom(_NONCE)
        self._send_frame(_MAGIC + client_nonce + struct.pack("!I", self._rank), deadline)
        reply = self._recv_frame(_PREAUTH_LIMIT, deadline)
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
        self._send_frame(_mac(self._token, b"client", server_nonce, rank), deadline)
        verdict = self._recv_frame(_PREAUTH_LIMIT, deadline)
        if verdict != b"OK":
            raise AuthenticationError(
                f"the coordinator refused rank {self._rank}: {verdict[2:].decode(errors='replace')}"
            )

    def watch(self, on_lost: Callable[[int, str], None]) -> None:
        """Start the background reader that reports lost ranks to ``on_lost``."""
        self._on_lost = on_lost
        self._reader = threading.Thread(target=self._read_loop, name="gpupart-control", daemon=True)
        self._reader.start()

    def report_failure(self, text: str, timeout: float = 2.0) -> bool:
        """Tell the job that this rank failed, and why; True once the coordinator noted it.

        ``text`` names the error, e.g. ``'ValueError: bad input'`` (cut to
        :data:`FAILURE_TEXT_LIMIT` characters). The coordinator counts this rank as gone
        at once (no :meth:`leave` barrier is needed, nor waited for by the others), tells
        every other rank ``PeerLostError(rank, 'it failed: <text>')`` and ``gpupart run``
        names this rank and ``text`` as the job's cause. Call it after :meth:`join`, with
        or without :meth:`watch`, then :meth:`close`. Returns within ``timeout`` seconds;
        False (never raises) when not joined, closed, or the coordinator did not answer.
        """
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, found {type(text).__name__}")
        if self._sock is None or self._closing or not self._joined:
            return False
        deadline = time.monotonic() + timeout
        try:
            self._send_frame(pickle.dumps(("failing", _bounded(text))), deadline)
        except OSError:
            return False
        return self._wait_for(self._failure_noted, deadline)

    def leave(self, timeout: float) -> bool:
        """Say goodbye and wait (at most ``timeout`` s) until every rank has said it or is gone.

        A barrier over the control connection for the end of the job, when UCX endpoints
        are already closed; returns False on timeout, or when not joined or closed.
        """
        deadline = time.monotonic() + timeout
        if self._sock is None or self._closing or not self._joined:
            return False
        try:
            self._send_frame(pickle.dumps(("bye",)), deadline)
        except OSError:
            return False
        return self._wait_for(self._all_left, deadline)

    def close(self, *, bye: bool = True, timeout: float = 2.0) -> None:
        """Say goodbye (when ``bye`` and joined: a clean leave) and close; idempotent.

        Returns within ``timeout`` seconds.
        """
        if self._closing:
            return
        deadline = time.monotonic() + timeout
        if bye and self._joined and self._sock is not None:
            with contextlib.suppress(OSError):
                self._send_frame(pickle.dumps(("bye",)), deadline)
        self._closing = True
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(max(0.0, deadline - time.monotonic()))

    # -- framing --------------------------------------------------------------------------

    def _send_frame(self, payload: bytes, deadline: float) -> None:
        """Send one frame by ``deadline`` (raises ``TimeoutError``, an ``OSError``).

        Never blocks past the deadline, whatever the socket's mode; a frame cut short
        leaves the stream unusable, so the connection is shut down then.
        """
        sock = self._sock
        if sock is None:
            raise OSError(errno.ENOTCONN, "not connected to the job coordinator")
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError("another thread is sending to the coordinator")
        try:
            view = memoryview(_frame(payload))
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            while view:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if len(view) < 4 + len(payload):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    raise TimeoutError("the coordinator is not reading")
                if not poller.poll(remaining * 1000):
                    continue
                try:
                    view = view[sock.send(view, socket.MSG_DONTWAIT | _SEND_FLAGS) :]
                except (BlockingIOError, InterruptedError):
                    continue
        finally:
            self._send_lock.release()

    def _recv_exact(self, sock: socket.socket, n: int, deadline: float | None) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                sock.settimeout(remaining)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return bytes(buf)

    def _recv_frame(
        self, limit: int, deadline: float | None, sock: socket.socket | None = None
    ) -> bytes:
        """One frame; ``deadline`` None blocks (the reader thread), else a time limit."""
        sock = sock or self._sock
        if sock is None:
            raise EOFError("connection closed")
        (length,) = struct.unpack("!I", self._recv_exact(sock, 4, deadline))
        if length > limit:
            raise BootstrapError(f"coordinator frame of {length} bytes exceeds {limit}")
        return self._recv_exact(sock, length, deadline)

    def _wait_for(self, event: threading.Event, deadline: float) -> bool:
        """Wait for ``event`` by ``deadline``: set by the reader, or read here without one."""
        reader = self._reader
        if reader is not None:
            # In slices: a reader that ended (the coordinator is gone) sets nothing more.
            while not event.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                if not reader.is_alive() or time.monotonic() >= deadline:
                    return event.is_set()
            return True
        sock = self._sock
        if sock is None:
            return False
        try:
            while not event.is_set():
                self._dispatch(pickle.loads(self._recv_frame(_FRAME_LIMIT, deadline, sock)))
        except (OSError, EOFError, pickle.UnpicklingError, BootstrapError, struct.error):
            return event.is_set()
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(None)
        return True

    def _dispatch(self, msg: Any) -> None:
        """Act on one message from the (proven) coordinator."""
        if isinstance(msg, tuple) and len(msg) == 3 and msg[0] == "lost":
            if self._on_lost is not None:
                try:
                    self._on_lost(int(msg[1]), str(msg[2]))
                except Exception:
                    logger.exception("rank %d: the lost-peer callback failed", self._rank)
        elif msg == ("all_left",):
            self._all_left.set()
        elif msg == ("failure_noted",):
            self._failure_noted.set()

    def _read_loop(self) -> None:
        sock = self._sock
        if sock is None:
            return
        # Blocking reads: close() shuts the socket down, which ends the read with EOF.
        while not self._closing:
            try:
                msg = pickle.loads(self._recv_frame(_FRAME_LIMIT, None, sock))
            except (OSError, EOFError, pickle.UnpicklingError, BootstrapError, struct.error):
                if not self._closing:
                    self._dispatch(
                        ("lost", COORDINATOR_RANK, "the connection to the job coordinator broke")
                    )
                return
            self._dispatch(msg)
