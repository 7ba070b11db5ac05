"""The fetcher: one object that brings tiles named by handles to this rank.

``Runtime.get`` and ``Runtime.fetch`` call :meth:`Fetcher.start`, which checks the handles
and ``out`` buffers (errors name the culprit), hands out this rank's own tiles at once,
groups the rest by owner, cuts each owner's tiles into requests (:mod:`gpupart.tiles.plan`)
and posts one :class:`~gpupart.tiles.receive.Receive` per request. Everything lands in one
:class:`~gpupart.tiles.transfer.Transfer`.

A call that is given up (``get`` past its timeout, a batch past ``fetch_timeout``, an owner
lost) *withdraws* its receives: each is cancelled; one that a message had already matched
completes first. ``get`` returns only once its withdrawals have settled, so a failed tile's
``out`` buffer is never written afterwards. A late message for a withdrawn receive is
drained into a one-byte buffer (the owner's send then completes). A transport that cannot
withdraw receives (``Transport.can_cancel`` False) gets no receive into a caller's buffer:
tiles sent alone land in private arrays and are copied into ``out`` when delivered, and a
receive of a given-up call stays posted (with its buffer) until its message lands or the
runtime closes.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpupart.comm.engine import Operation, ProgressEngine
from gpupart.comm.tags import Kind
from gpupart.comm.transport import Transport
from gpupart.errors import CommTimeoutError, FetchError, GpupartError, TileNotFoundError
from gpupart.options import RuntimeOptions
from gpupart.tiles import wire
from gpupart.tiles.handles import Handle, handle_records, record_problem, records_alike
from gpupart.tiles.plan import plan_items, request_bounds
from gpupart.tiles.pool import ReceivePool
from gpupart.tiles.receive import Receive, error_for
from gpupart.tiles.store import TileStore, copy_into
from gpupart.tiles.traffic import Traffic
from gpupart.tiles.transfer import Transfer
from gpupart.trace import annotate

__all__ = ["Fetcher"]

logger = logging.getLogger("gpupart.fetch")

_NO_JOB = hash("")  # the record of a handle that names no job
#: Longest a given-up ``get`` waits for its withdrawn receives to settle.
_WITHDRAW_GRACE = 2.0


class Fetcher:
    """Brings tiles to this rank (see the module docstring); one per runtime.

    ``transport`` and ``engine`` are None in a world of one process (every tile is local).
    """

    def __init__(
        self,
        *,
        rank: int,
        size: int,
        job_id: str,
        store: TileStore,
        backend: Any,
        options: RuntimeOptions,
        transport: Transport | None,
        engine: ProgressEngine | None,
        traffic: Traffic | None = None,
    ) -> None:
        self.rank = rank
        self.size = size
        self.job_id = job_id
        self._store = store
        self._backend = backend
        self._options = options
        self._transport = transport
        self._engine = engine
        self._traffic = traffic  # bytes asked of each owner, for the transfer summary
        self._receive_pool = ReceivePool(options.receive_pool_bytes)
        self._receives: dict[tuple[int, int], Receive] = {}
        # Batches are numbered from a random start: an outsider cannot aim at the tags of
        # the receives they post (tile bytes carry no MAC: see gpupart.comm.auth).
        self._seq = secrets.randbits(35)
        self._seq_lock = threading.Lock()
        self.fetched_bytes = 0  # bytes requested from other ranks (guarded by _seq_lock)
        self._drain_byte = np.zeros(1, dtype=np.uint8)
        self._drains: list[Any] = []
        self._orphans: list[tuple[Any, Any]] = []  # see Receive.orphans
        self._closed = False
        self._job_hash = hash(job_id)
        # A transport that cannot withdraw receives never receives into a caller's buffer.
        self._private_outs = transport is not None and not transport.can_cancel
        if engine is not None:
            engine.on(Kind.RESPONSE, self._on_reply, announce=self._on_reply_announced)

    # -- calls ----------------------------------------------------------------------------

    def start(
        self,
        handles: Sequence[Any],
        out: Any,
        timeout: float | None = None,
        *,
        cancellable: bool = True,
    ) -> Transfer:
        """Check the arguments and start fetching; tiles land in the returned transfer."""
        with annotate("fetch.start"):
            return self._start(handles, out, timeout, cancellable)

    def _start(
        self, handles: Sequence[Any], out: Any, timeout: float | None, cancellable: bool
    ) -> Transfer:
        handles = list(handles)
        records = self._check_handles(handles)
        outs = self._check_outs(handles, out, records)
        limit = self._options.fetch_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        transfer = Transfer(len(handles), self._progress, limit)
        transfer.deadline = deadline
        transfer.cancellable = cancellable
        if not handles:
            return transfer
        # Weak references: a receive refers to its transfer, and a cycle back from the
        # transfer would keep every buffer of the call alive until a garbage collection.
        receives: list[weakref.ref[Receive]] = []
        transfer.on_abort = lambda error: self._abort(receives, error)
        owners = records["owner"]
        if len(owners) == 1 or owners.min() == owners.max():
            groups = [(int(owners[0]), np.arange(len(handles)))]
        else:
            order = np.argsort(owners, kind="stable")
            cuts = np.flatnonzero(np.diff(owners[order])) + 1
            groups = [(int(owners[run[0]]), run) for run in np.split(order, cuts)]
        for owner, where in groups:
            if owner == self.rank:
                self._serve_locally(handles, outs, where, transfer, deadline)
            else:
                posted = self._request(
                    owner, handles, outs, records, where, transfer, deadline, limit
                )
                receives.extend(weakref.ref(r) for r in posted)
        return transfer

    def get(self, handles: Sequence[Any], out: Any, timeout: float | None) -> list[Any]:
        """Fetch and wait; on a timeout withdraw everything and raise.

        The calling thread progresses from the start: the engine's thread is not woken for
        the requests it posts (a hand-off would cost more than a small tile's transfer).
        """
        if self._engine is None:
            with annotate("fetch.get"):
                return self._start(handles, out, timeout, True).result(0.0)
        with annotate("fetch.get"), self._engine.helping():
            transfer = self._start(handles, out, timeout, False)
            try:
                return transfer.result(max(transfer.deadline - time.monotonic(), 0.0))
            except CommTimeoutError as exc:
                transfer.abort(exc)
                raise

    def _progress(self, done: Any, deadline: float, what: str, timeout: float) -> None:
        if self._engine is None:
            raise CommTimeoutError(what, timeout)
        self._engine.help_until(done, deadline, what, timeout)

    # -- checks ---------------------------------------------------------------------------

    def _check_handles(self, handles: list[Any]) -> np.ndarray:
        """Return the handles' records; raise naming the first handle that is wrong.

        The checks are the same for any number of handles: plain comparisons for a few
        (:data:`~gpupart.tiles.wire.FEW`), array ones for many.
        """
        records = handle_records(handles)
        if records is not None:
            if len(handles) <= wire.FEW:
                job_id, size = self.job_id, self.size
                if all((h.job == job_id or not h.job) and 0 <= h.owner < size for h in handles):
                    return records
            else:
                job, owners = records["job"], records["owner"]
                same_job = (job == self._job_hash).all() or (
                    (job == self._job_hash) | (job == _NO_JOB)
                ).all()
                if same_job and owners.min() >= 0 and owners.max() < self.size:
                    return records
        for i, h in enumerate(handles):
            if not isinstance(h, Handle):
                raise TypeError(
                    f"handles[{i}]: expected a gpupart.Handle, found {type(h).__name__}"
                )
            if (problem := record_problem(h)) is not None:
                raise ValueError(f"handles[{i}]{problem}")
            if h.job and h.job != self.job_id:
                raise ValueError(
                    f"handles[{i}]: expected a handle of job {self.job_id!r}, found one of job"
                    f" {h.job!r}"
                )
            if not 0 <= h.owner < self.size:
                raise ValueError(
                    f"handles[{i}].owner: expected a rank in 0..{self.size - 1}, found {h.owner}"
                )
        raise ValueError("handles: could not read them")  # every handle above passed

    def _check_outs(self, handles: list[Handle], out: Any, records: np.ndarray) -> list | None:
        """Return the ``out`` buffers by handle (None without ``out``); raise naming a misfit."""
        if out is None:
            return None
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if len(outs) != len(handles):
            raise ValueError(
                f"out: expected {len(handles)} buffers (one per handle), found {len(outs)}"
            )
        if len(outs) <= wire.FEW or not _outs_fit(handles, outs, records):
            for i, (h, buf) in enumerate(zip(handles, outs, strict=True)):
                if buf is not None:
                    _check_out(i, h, buf)
        return outs

    # -- local tiles ----------------------------------------------------------------------

    def _serve_locally(
        self,
        handles: list[Handle],
        outs: list | None,
        where: np.ndarray,
        transfer: Transfer,
        deadline: float,
    ) -> None:
        for i in where.tolist():
            h = handles[i]
            try:
                tile = self._store.get(h.tile_id)
            except TileNotFoundError as exc:
                transfer.fail([i], exc)
                continue
            if tile.nbytes != h.nbytes:  # the remote path refuses such handles too
                transfer.fail([i], error_for(wire.SIZE_MISMATCH, h))
                continue
            out = None if outs is None else outs[i]
            if out is None:
                transfer.deliver_one(i, tile.array)
                continue
            if tile.event is not None:
                tile.event.synchronize(max(deadline - time.monotonic(), 0.0))
            transfer.claim([i])
            transfer.deliver_one(i, copy_into(out, tile.array))

    # -- remote tiles ---------------------------------------------------------------------

    def _request(
        self,
        owner: int,
        handles: list[Handle],
        outs: list | None,
        records: np.ndarray,
        where: np.ndarray,
        transfer: Transfer,
        deadline: float,
        timeout: float,
    ) -> list[Receive]:
        """Post one owner's tiles as requests; returns their receives."""
        engine = self._engine
        lost = engine.lost_error(owner)
        if lost is not None:
            transfer.fail(where, lost)
            return []
        opts = self._options
        mine = records if len(where) == len(records) else records[where]
        nbytes, tile_ids, kinds = mine["nbytes"], mine["tile_id"], mine["kind"]
        with self._seq_lock:
            self.fetched_bytes += int(nbytes.sum())
        receives = []
        bounds = request_bounds(nbytes, opts.pack_threshold, opts.pack_limit)
        for lo, hi in itertools.pairwise(bounds):
            part = where[lo:hi]
            items, lengths = plan_items(
                tile_ids[lo:hi], nbytes[lo:hi], opts.pack_threshold, opts.pack_limit
            )
            n = hi - lo
            batch = self._reserve(1 + n + len(lengths))
            part_list = part.tolist()
            receive = Receive(
                transport=self._transport,
                send_control=engine.send_control,
                owner=owner,
                me=self.rank,
                batch=batch,
                handles=[handles[i] for i in part_list],
                where=part,
                items=items,
                kinds=kinds[lo:hi],
                packs=[self._pack_buffer(int(length)) for length in lengths.tolist()],
                outs=None if outs is None else [outs[i] for i in part_list],
                transfer=transfer,
                allocate=self._allocate,
                private_outs=self._private_outs,
                deadline=deadline,
                timeout=timeout,
                on_finish=self._finished,
                traffic=self._traffic,
            )
            self._receives[(owner, batch)] = receive
            if self._traffic is not None:
                self._traffic.begin(owner, int(nbytes[lo:hi].sum()))
            receive.post()
            engine.submit(receive)
            receives.append(receive)
        return receives

    def _reserve(self, n: int) -> int:
        with self._seq_lock:
            first = self._seq
            self._seq += n
        return first

    def _pack_buffer(self, nbytes: int) -> Any:
        if self._backend.is_gpu:
            return self._backend.empty((nbytes,), np.uint8)
        return self._receive_pool.empty(nbytes)

    def _allocate(self, h: Handle) -> Any:
        return self._backend.empty(h.shape, np.dtype(h.dtype), h.order)

    def _on_reply_announced(self, owner: int, batch: int, coming: bool) -> None:
        receive = self._receives.get((owner, batch))
        if receive is not None:
            receive.replies_pending += 1 if coming else -1

    def _on_reply(self, owner: int, batch: int, payload: np.ndarray) -> None:
        receive = self._receives.get((owner, batch))
        if receive is None:
            logger.debug("late error reply from rank %d for batch %d ignored", owner, batch)
            return
        receive.replies_pending -= 1
        try:
            receive.on_reply(payload)
        except GpupartError as exc:
            receive.fail(exc)

    # -- giving up ------------------------------------------------------------------------

    def _finished(self, receive: Receive) -> None:
        self._receives.pop((receive.peer, receive.batch), None)
        if self._closed:
            return
        if receive.orphans or self._orphans:
            with self._seq_lock:
                self._orphans = [o for o in self._orphans if not o[0].completed]
                self._orphans += receive.orphans
        if receive.withdrawn and self._engine.lost_error(receive.peer) is None:
            self._engine.track(_Withdrawal(self, receive))

    def _abort(self, refs: list[weakref.ref[Receive]], error: BaseException) -> None:
        """Withdraw the receives of a given-up call; wait (briefly) until they have settled."""
        engine = self._engine
        if engine is None:
            return
        receives = [r for r in (ref() for ref in refs) if r is not None]
        with engine.exclusive():
            for receive in receives:
                if not receive.finished:
                    receive.fail(error)
        withdrawn = [request for r in receives for _, request in r.withdrawn]
        if not withdrawn:
            return
        deadline = time.monotonic() + _WITHDRAW_GRACE
        try:
            engine.help_until(
                lambda: all(r.completed for r in withdrawn),
                deadline,
                "fetch: withdrawing receives",
                _WITHDRAW_GRACE,
            )
        except CommTimeoutError:
            raise FetchError(
                f"{error}; besides, {sum(not r.completed for r in withdrawn)} receive(s) could"
                " not be withdrawn (their data was already moving): their out buffers may"
                " still be written"
            ) from error

    def drain(self, tag: int) -> None:
        """Post a one-byte receive that swallows a late message for a withdrawn receive."""
        self._drains = [d for d in self._drains if not d.completed]
        self._drains.append(self._transport.recv(tag, self._drain_byte))

    def close(self) -> None:
        """Fail what is in flight and drop pooled memory (the engine has stopped)."""
        self._closed = True
        closing = FetchError("this rank's runtime was closed")
        for receive in list(self._receives.values()):
            receive.fail(closing)
        self._receives.clear()
        self._drains.clear()
        self._orphans.clear()
        self._receive_pool.close()


class _Withdrawal(Operation):
    """Waits for a failed receive's withdrawn requests; drains the ones it cancelled."""

    what = "withdrawing receives"

    def __init__(self, fetcher: Fetcher, receive: Receive) -> None:
        self.fetcher = fetcher
        self.peer = receive.peer
        self.pending = list(receive.withdrawn)
        self.timeout = fetcher._options.fetch_timeout
        self.deadline = time.monotonic() + self.timeout

    def poll(self) -> bool:
        keep = []
        transport = self.fetcher._transport
        for tag, request in self.pending:
            if not request.completed:
                keep.append((tag, request))
                continue
            try:
                transport.check(request)
            except GpupartError:  # cancelled: the owner may still send it
                self.fetcher.drain(tag)
        self.pending = keep
        return not keep

    def fail(self, exc: BaseException) -> None:
        logger.debug("gave up withdrawing %d receive(s): %s", len(self.pending), exc)
        self.pending = []


def _outs_fit(handles: list[Handle], outs: list[Any], records: np.ndarray) -> bool:
    """Whether ``out`` buffers all fit their handles, checked a list at a time.

    Only for the common bulk case: tiles alike and every buffer a writable NumPy array with
    their contiguous strides. False means "check each" (which accepts what this does not
    know, such as relaxed strides, and names a culprit).
    """
    if not records_alike(records) or set(map(type, outs)) != {np.ndarray}:
        return False
    h, n = handles[0], len(outs)
    dtype = np.dtype(h.dtype)
    strides = _contiguous_strides(h.shape, dtype.itemsize, h.order)
    return (
        [o.shape for o in outs].count(h.shape) == n
        and [o.dtype for o in outs].count(dtype) == n
        and [o.strides for o in outs].count(strides) == n
        and all(o.flags.writeable for o in outs)
    )


def _contiguous_strides(shape: tuple[int, ...], itemsize: int, order: str) -> tuple[int, ...]:
    """Strides of a C- (or F-) contiguous array of ``shape``."""
    dims = shape if order == "F" else shape[::-1]
    strides, step = [], itemsize
    for dim in dims:
        strides.append(step)
        step *= dim
    return tuple(strides if order == "F" else strides[::-1])


def _check_out(i: int, h: Handle, buf: Any) -> None:
    """Check one ``out`` buffer against its handle; raise naming ``out[i]``."""
    if type(buf) is np.ndarray:  # the common case: attribute tests only
        flags = buf.flags
        if (
            buf.shape == h.shape
            and buf.dtype.str == h.dtype
            and flags.writeable
            and (flags.c_contiguous if h.order == "C" or buf.ndim <= 1 else flags.f_contiguous)
        ):
            return
    elif not (hasattr(buf, "__array_interface__") or hasattr(buf, "__cuda_array_interface__")):
        raise TypeError(
            f"out[{i}]: expected a NumPy/CuPy array or None, found {type(buf).__name__}"
        )
    shape, dtype = tuple(buf.shape), np.dtype(buf.dtype)
    if shape != h.shape or dtype.str != h.dtype:
        raise ValueError(
            f"out[{i}]: expected shape {h.shape} dtype {np.dtype(h.dtype)}, found shape {shape}"
            f" dtype {dtype}"
        )
    flags = buf.flags
    if isinstance(buf, np.ndarray) and not flags.writeable:
        raise ValueError(f"out[{i}]: expected a writable array, found a read-only one")
    c, f = bool(flags.c_contiguous), bool(flags.f_contiguous)
    ok = (c or f) if len(shape) <= 1 or buf.size <= 1 else (c if h.order == "C" else f)
    if not ok:
        found = "C-contiguous" if c else "F-contiguous" if f else "non-contiguous"
        raise ValueError(f"out[{i}]: expected a {h.order}-contiguous array, found {found}")
