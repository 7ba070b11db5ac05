"""The UCX transport: one ucxx worker per process, endpoints to peers made from worker addresses.

Measured on the development machine (two processes, see ``bench/RESULTS.md``): endpoints
made from a listener use TCP only; endpoints made from worker addresses with UCX error
handling off use shared memory and cuda_ipc between GPUs (several times faster). So
gpupart exchanges worker addresses at rendezvous and detects dead peers itself (through the
coordinator), never through UCX error handling.

All calls are thread-safe: ucxx creates its workers in ``UCS_THREAD_MODE_MULTI``, so a
caller thread may post sends and receives while the progress engine's thread progresses the
worker. Nothing here is asynchronous Python: requests are plain ucxx request objects polled
for completion (``completed``), which costs no event loop and no per-message callback.

ucxx's Python layer cannot cancel one request (only all of a worker's), and a dropped
request object stays posted in the worker. :meth:`UCXTransport.cancel` therefore calls
``ucxx::Request::cancel()`` of the already loaded libucxx through ctypes; this module is the
only place that reaches below ucxx's Python API (``ucxx._lib``). Where the symbol cannot be
found, :attr:`UCXTransport.can_cancel` is False and callers keep their own copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import select
import socket
import struct
from pathlib import Path
from typing import Any

from gpupart.comm import ucx_library
from gpupart.comm.tags import UNEXPECTED_MASK
from gpupart.comm.transport import Transport
from gpupart.comm.ucx_lanes import endpoint_lanes
from gpupart.errors import TransportError

__all__ = ["UCXTransport", "load_ucx"]

logger = logging.getLogger("gpupart.ucx")

_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address
#: Transports when neither ``ucx_config`` nor ``UCX_TLS`` names them: all but CMA.
_DEFAULT_TLS = "^cma"
#: Mangled name of ``void ucxx::Request::cancel()`` (not overridden for tag requests).
_CANCEL_SYMBOL = "_ZN4ucxx7Request6cancelEv"


#: UCX settings `import ucxx` puts in os.environ that we pass to our context instead: only the
#: ones that help GPU memory (fragments of pipelined transfers staged in device memory).
#: ucxx's ``RNDV_THRESH=8192`` and ``MAX_RNDV_RAILS=1`` are left out: the first slowed one-sided
#: and small transfers, the second halved TCP bandwidth in our measurements (bench/RESULTS.md).
_KEEP_FROM_UCXX = {"UCX_RNDV_FRAG_MEM_TYPE": "cuda"}


def _import_ucxx() -> tuple[Any, Any, dict[str, str]]:
    """Import ucxx without letting it change this process's environment.

    ``import ucxx`` sets ``UCX_*`` variables in ``os.environ`` (inherited by every child
    process, e.g. an MPI or NIXL peer). They are removed again, and the few we want are
    returned as context options. UCX's warning about unknown variables (one of ucxx's is
    unknown to UCX >= 1.19) is silenced only while UCX loads.
    """
    ucx_library.check_before_load()
    before = dict(os.environ)
    os.environ.setdefault("UCX_WARN_UNUSED_ENV_VARS", "n")
    try:
        import ucxx._lib.libucxx as ucx
        from ucxx._lib.arr import Array
    except ImportError as exc:
        raise TransportError(
            "the UCX transport needs ucxx: pip install ucxx-cu12 (or ucxx-cu13)"
        ) from exc
    except OSError as exc:  # a library failed to load: name the clash if one explains it
        raise ucx_library.clash_from(exc) or exc from exc
    finally:
        for key in [k for k in os.environ if k not in before]:
            del os.environ[key]
    ucx_library.check_after_load()
    keep = {k.removeprefix("UCX_"): v for k, v in _KEEP_FROM_UCXX.items() if k not in os.environ}
    return ucx, Array, keep


def load_ucx() -> None:
    """Load the UCX that the transport will use, now (before an MPI can bring its own).

    Raises :class:`~gpupart.UCXLibraryError` if another UCX is already in this process.
    """
    _import_ucxx()


def _request_cancel() -> Any:
    """``ucxx::Request::cancel`` from the libucxx this process already loaded, or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if line.rstrip().endswith("/libucxx.so")}
    except OSError:
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
            cancel = library[_CANCEL_SYMBOL]
        except (OSError, AttributeError):
            continue
        cancel.argtypes = [ctypes.c_void_p]
        cancel.restype = None
        return cancel
    logger.debug("libucxx's Request::cancel not found: receives cannot be withdrawn")
    return None


def job_devices(ip: str) -> str | None:
    """``UCX_NET_DEVICES`` for a rank that talks to the job from ``ip``.

    The network interface holding ``ip`` (``lo`` for loopback), plus every InfiniBand port
    (UCX names them ``device:port``); None if no interface holds ``ip`` (UCX then chooses).
    """
    devices = _interfaces_with(ip)
    if not devices:
        return None
    ib = Path("/sys/class/infiniband")
    if ib.is_dir():
        for port in sorted(ib.glob("*/ports/*")):
            devices.append(f"{port.parent.parent.name}:{port.name}")
    return ",".join(devices)


def _interfaces_with(ip: str) -> list[str]:
    """Names of the IPv4 interfaces that hold the address ``ip``."""
    try:
        wanted = socket.inet_aton(ip)
    except OSError:
        return []  # IPv6 or a name: leave the choice to UCX
    found = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address
            if reply[20:24] == wanted:
                found.append(name)
    return found


_CLOSED = object()  # an endpoint whose close was started before


class _Probed:
    """An unexpected message taken off UCX's queue: its tag, length and ucxx handle."""

    __slots__ = ("handle", "length", "tag")

    def __init__(self, tag: int, length: int, handle: Any) -> None:
        self.tag = tag
        self.length = length
        self.handle = handle


class UCXTransport(Transport):
    """One UCX worker, its endpoints to peer ranks, and a way to sleep until it has work.

    ``config`` holds UCX options without the ``UCX_`` prefix (e.g. ``{"TLS": "tcp"}``);
    the environment's ``UCX_*`` variables apply as usual.
    """

    def __init__(self, *, config: dict[str, str] | None = None, devices: str | None = None) -> None:
        ucx, Array, defaults = _import_ucxx()
        self._ucx = ucx
        self._array = Array
        settings = {**defaults, **dict(config or {})}
        if devices and "NET_DEVICES" not in settings and "UCX_NET_DEVICES" not in os.environ:
            settings["NET_DEVICES"] = devices
        if "TLS" not in settings and "UCX_TLS" not in os.environ:
            # CMA lets a reader copy straight out of the owner's memory, and UCX aborts the
            # reader when that owner dies mid-copy: a dead peer must be an error, not an
            # abort. Without it, shared memory moves large messages through its own copies.
            settings["TLS"] = _DEFAULT_TLS
        try:
            self._context = ucx.UCXContext(
                config_dict=settings,
                feature_flags=(ucx.Feature.TAG, ucx.Feature.WAKEUP),
            )
            self._worker = ucx.UCXWorker(self._context)
            self._worker.init_blocking_progress_mode()
        except ucx.UCXError as exc:
            raise TransportError(f"could not start a UCX worker: {exc}") from exc
        self._epoll_fd = self._worker.epoll_file_descriptor
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._endpoints: dict[int, Any] = {}
        self._closing: list[tuple[Any, Any]] = []  # endpoints being closed, kept until close()
        self._probe_tag = ucx.UCXXTag(UNEXPECTED_MASK)
        self._probe_mask = ucx.UCXXTagMask(UNEXPECTED_MASK)
        self._cancel = _request_cancel()
        self._closed = False

    # -- wiring ---------------------------------------------------------------------------

    @property
    def address(self) -> bytes:
        """Return the worker's UCX address, sent to peers at rendezvous."""
        return bytes(self._worker.address.tobytes())

    @property
    def can_cancel(self) -> bool:
        """Whether :meth:`cancel` can withdraw a posted receive."""
        return self._cancel is not None

    @property
    def cuda_support(self) -> bool:
        """Whether UCX was built and started with CUDA memory support."""
        return bool(self._context.cuda_support)

    def lanes(self) -> dict[int, list[str]] | None:
        """Return the ``transport/device`` lanes of each peer's endpoint (``ucp_ep_query``)."""
        return endpoint_lanes({rank: ep.handle for rank, ep in self._endpoints.items()})

    def settings(self) -> dict[str, str]:
        """Return the UCX context's ``TLS`` and ``NET_DEVICES``."""
        config = self._context.config
        return {key: config[key] for key in ("TLS", "NET_DEVICES") if key in config}

    def connect(self, rank: int, address: bytes) -> None:
        """Create the endpoint to ``rank`` from its worker address (never to ourselves)."""
        ucx = self._ucx
        try:
            addr = ucx.UCXAddress.create_from_buffer(address)
            self._endpoints[rank] = self._worker.create_endpoint_from_worker_address(addr, False)
        except ucx.UCXError as exc:
            raise TransportError(f"could not reach rank {rank} over UCX: {exc}") from exc

    def disconnect(self, rank: int) -> None:
        """Forget the endpoint to a lost peer, without waiting for it.

        The endpoint is only *started* closing and kept until :meth:`close`: ucxx's
        endpoint destructor would otherwise flush it, and wait forever for a dead peer.
        """
        endpoint = self._endpoints.pop(rank, None)
        if endpoint is not None:
            self._closing.append(self._start_close(endpoint))

    # -- messages -------------------------------------------------------------------------

    def send(self, rank: int, tag: int, buffer: Any) -> Any:
        """Post a tagged send of a contiguous host or device buffer; returns the request.

        The buffer must stay alive and unchanged until the request completes.
        """
        try:
            endpoint = self._endpoints[rank]
        except KeyError:
            raise TransportError(f"no UCX endpoint to rank {rank} (lost, or not a peer)") from None
        try:
            return endpoint.tag_send(self._array(buffer), self._ucx.UCXXTag(tag))
        except self._ucx.UCXError as exc:
            raise TransportError(f"send to rank {rank} failed: {exc}") from exc

    def recv(self, tag: int, buffer: Any) -> Any:
        """Post a receive of exactly-tagged message into ``buffer``; returns the request.

        The receive stays posted until a message matches it or :meth:`cancel` withdraws it,
        whether or not the request object is kept.
        """
        try:
            return self._worker.tag_recv(self._array(buffer), self._ucx.UCXXTag(tag))
        except self._ucx.UCXError as exc:
            raise TransportError(f"posting a receive failed: {exc}") from exc

    def probe(self) -> _Probed | None:
        """Take the next unexpected message off the queue."""
        result = self._worker.tag_probe(self._probe_tag, self._probe_mask, True)
        if not result.matched:
            return None
        return _Probed(int(result.sender_tag.value), int(result.length), result)

    def recv_probed(self, probed: _Probed, buffer: Any) -> Any:  # type: ignore[override]
        """Receive a message taken by :meth:`probe` into ``buffer`` (at least its length)."""
        return self._worker.tag_recv_with_handle(self._array(buffer), probed.handle)

    def cancel(self, request: Any) -> None:
        """Withdraw a receive no message has matched yet (it completes as cancelled)."""
        if self._cancel is None:
            raise TransportError("this ucxx build cannot cancel a single request")
        if not request.completed:
            self._cancel(request.ucxx_ptr)

    def check(self, request: Any) -> None:
        """Raise :class:`~gpupart.TransportError` if a completed request failed."""
        try:
            request.check_error()
        except Exception as exc:
            raise TransportError(f"UCX request failed: {exc}") from exc

    # -- progress -------------------------------------------------------------------------

    def progress(self, limit: int = 64) -> bool:
        """Progress the worker until it has nothing to do (at most ``limit`` rounds)."""
        did = False
        for _ in range(limit):
            if not self._worker.progress_once():
                break
            did = True
        return did

    def wait(self, timeout: float) -> None:
        """Sleep until UCX has an event, :meth:`wake` is called, or ``timeout`` seconds pass."""
        if not self._worker.arm():
            return  # events are pending: progress instead of sleeping
        ready, _, _ = select.select([self._epoll_fd, self._wake_fd], [], [], timeout)
        if self._wake_fd in ready:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake_fd)

    def wake(self) -> None:
        """Interrupt :meth:`wait` from another thread."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake_fd, 1)

    def close_endpoints(self) -> list[Any]:
        """Start closing every endpoint gracefully (flushing); returns the close requests.

        Dropping an endpoint instead leaves the peer's side to find the connection reset
        (over TCP, ucxx then logs "Connection reset by remote peer" at the peer).
        """
        requests = [self._start_close(endpoint) for endpoint in self._endpoints.values()]
        self._endpoints.clear()  # each endpoint is closed once: ucxx has nothing to close twice
        self._closing.extend(requests)
        return [request for _, request in requests if request is not _CLOSED]

    def _start_close(self, endpoint: Any) -> tuple[Any, Any]:
        """Start closing ``endpoint`` (call once per endpoint); return it and its request."""
        try:
            request = endpoint.close()
        except self._ucx.UCXError:
            request = None
        return endpoint, _CLOSED if request is None else request

    def close(self) -> None:
        """Drop endpoints and the worker; idempotent. Call only after progress has stopped."""
        if self._closed:
            return
        self._closed = True
        for endpoint in self._endpoints.values():  # no flush in ucxx's destructor: see above
            self._closing.append(self._start_close(endpoint))
        self._endpoints.clear()
        with contextlib.suppress(Exception):
            self._worker.cancel_inflight_requests()
        self._closing.clear()
        self._worker = None
        self._context = None
        os.close(self._wake_fd)
