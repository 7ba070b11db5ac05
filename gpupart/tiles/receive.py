"""The consumer's side of one request: post its receives, then deliver tiles as they land.

A :class:`Receive` is made by the :class:`~gpupart.tiles.fetcher.Fetcher` for one request to
one owner. :meth:`Receive.post` sends the request and posts a receive for every pack and for
every tile that travels alone (straight into the caller's ``out`` buffer or a new array on
this rank's device; the tile is *running* from then on). While the owner works it makes the
views of each pack's tiles (they do not depend on the bytes), so a pack that lands is
delivered with one assignment, or copied into the ``out`` buffers of the tiles still wanted.
An error reply from the owner (:mod:`gpupart.tiles.wire`) is announced before any of the
batch's data can complete; delivery waits for it, fails the tiles it names and withdraws
their receives.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpupart.comm.engine import Operation
from gpupart.comm.tags import Kind, make_tag
from gpupart.comm.transport import Transport
from gpupart.errors import FetchError, GpupartError, TileNotFoundError
from gpupart.tiles import wire
from gpupart.tiles.handles import Handle
from gpupart.tiles.store import byte_view, copy_into
from gpupart.tiles.traffic import Traffic
from gpupart.tiles.transfer import Transfer

__all__ = ["Receive", "error_for"]


class _Alone:
    """A tile sent in its own message: where it lands and the receive bringing it."""

    __slots__ = ("index", "request", "result", "target")

    def __init__(self, index: int, result: Any, target: Any) -> None:
        self.index = index  # position in the request
        self.result = result  # the array handed to the caller
        self.target = target  # flat byte view that receives the data
        self.request: Any = None


class Receive(Operation):
    """Consumer side of one request to one owner (see the module docstring).

    ``where[i]`` is the position in the call (the :class:`Transfer`) of the request's item
    ``i``; ``outs`` (or None) the caller's buffers by item; ``packs`` the buffers the packs
    land in; ``results`` a new array per tile that travels alone without an ``out``.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        send_control: Callable[[int, int, bytes, str], Any],
        owner: int,
        me: int,
        batch: int,
        handles: list[Handle],
        where: np.ndarray,
        items: np.ndarray,
        kinds: np.ndarray | None,
        packs: list[Any],
        outs: list[Any] | None,
        transfer: Transfer,
        allocate: Callable[[Handle], Any],
        private_outs: bool,
        deadline: float,
        timeout: float,
        on_finish: Callable[[Receive], None],
        traffic: Traffic | None = None,
    ) -> None:
        self.transport = transport
        self._send_control = send_control
        self.peer = owner
        self.me = me
        self.batch = batch
        self.handles = handles
        self.where = where
        self.items = items
        self.kinds = kinds  # the handles' record kinds (equal: same dtype, shape, order)
        self.packs = packs
        self.outs = outs
        self.transfer = transfer
        self.deadline = deadline
        self.timeout = timeout
        self.finished = False
        self.rejection: str | None = None
        self.replies_pending = 0  # error replies probed, not yet received
        self.withdrawn: list[tuple[int, Any]] = []  # (tag, receive) cancelled by fail()
        # (receive, buffer) the transport could not withdraw: still posted, into memory of
        # this request's own (a pack, or a private result), which must outlive it.
        self.orphans: list[tuple[Any, Any]] = []
        self._on_finish = on_finish
        self._traffic = traffic  # told once when the data has landed (or the request failed)
        self._private_outs = private_outs
        self._allocate = allocate
        self._send: Any = None
        self._pack_requests: list[Any] = []
        self._pack_members: list[np.ndarray | None] = []
        self._views: list[list[Any] | None] = []
        self._alone: collections.deque[_Alone] = collections.deque()
        self._lock = threading.Lock()  # posting vs. a reply or a failure on another thread

    @property
    def what(self) -> str:  # built only when an error needs it
        """Describe the operation for error messages."""
        return f"fetching {len(self.handles)} tile(s) from rank {self.peer}"

    # -- posting --------------------------------------------------------------------------

    def post(self) -> None:
        """Send the request, post every receive, then make the packs' views.

        The request goes first (posting receives is then off the round trip; a reply that
        wins the race waits in the transport). The owner's error reply may be handled by
        another thread meanwhile: it and :meth:`fail` take :attr:`_lock` and find the
        receives not yet posted, which are then never posted.
        """
        transport, owner, n = self.transport, self.peer, len(self.handles)
        item_seq0, pack_seq0 = self.batch + 1, self.batch + 1 + n
        packs = self.items["pack"]
        alone_idx = np.flatnonzero(packs < 0).tolist() if self.packs else range(n)
        for i in alone_idx:
            out = None if self.outs is None else self.outs[i]
            result = out if out is not None and not self._private_outs else None
            if result is None:
                result = self._allocate(self.handles[i])
            self._alone.append(_Alone(i, result, byte_view(result)))
        if alone_idx and self.transfer.cancellable:  # bytes may move into them now: running
            self.transfer.claim(self.where if self.packs == [] else self.where[alone_idx])
        lengths = [p.shape[0] for p in self.packs]
        request = wire.encode_request(self.items, lengths, item_seq0, pack_seq0)
        tag = make_tag(Kind.REQUEST, self.me, self.batch)
        self._send = self._send_control(owner, tag, request, "a fetch request")
        with self._lock:
            if self.finished:
                return  # failed meanwhile: nothing is posted
            self._pack_requests = [
                transport.recv(make_tag(Kind.DATA, owner, pack_seq0 + j), buf)
                for j, buf in enumerate(self.packs)
            ]
            for item in self._alone:  # an error reply may have taken failed ones out
                item.request = transport.recv(
                    make_tag(Kind.DATA, owner, item_seq0 + item.index), item.target
                )
        if self.packs:  # the views of each pack's tiles, while the owner works
            packed = np.flatnonzero(packs >= 0)
            bounds = np.searchsorted(packs[packed], np.arange(len(self.packs) + 1)).tolist()
            self._pack_members = [packed[lo:hi] for lo, hi in itertools.pairwise(bounds)]
            self._views = [self._pack_views(j) for j in range(len(self.packs))]

    def _pack_views(self, j: int) -> list[Any] | None:
        """Return views of pack ``j``'s tiles (None for a handle whose fields disagree)."""
        members = self._pack_members[j]
        if members is None or not len(members):
            return []
        try:
            return pack_views(
                self.packs[j], members, self.handles, self.items["offset"], self.kinds
            )
        except (ValueError, TypeError):
            return None

    # -- replies --------------------------------------------------------------------------

    def on_reply(self, payload: np.ndarray) -> None:
        """Take the owner's error reply (on a progressing thread)."""
        reply = wire.parse_error_reply(payload, len(self.handles))
        if reply.rejection is not None:
            self.rejection = reply.rejection
            return
        failed = reply.indices.tolist()
        for i, code in zip(failed, reply.codes.tolist(), strict=True):
            self.transfer.fail([self.where[i]], error_for(code, self.handles[i]))
        bad = set(failed)
        with self._lock:
            keep = collections.deque()
            for item in self._alone:
                if item.index in bad:  # never sent: withdraw its receive (if posted yet)
                    self._withdraw(item)
                else:
                    keep.append(item)
            self._alone = keep

    def _withdraw(self, item: _Alone) -> None:
        if item.request is not None and not item.request.completed:
            try:
                self.transport.cancel(item.request)
            except GpupartError:  # cannot withdraw: nothing is sent for it, keep it posted
                self.orphans.append((item.request, item.target))
        item.request = None

    # -- delivery -------------------------------------------------------------------------

    def poll(self) -> bool:
        """Deliver what has arrived; True once every tile is settled."""
        if self.finished:
            return True
        if self.rejection is not None:
            raise FetchError(f"rank {self.peer} rejected the request: {self.rejection}")
        if self.replies_pending:
            return False  # the error reply comes first: deliver nothing before it
        if self._send is not None and self._send.completed:
            self.transport.check(self._send)
            self._send = None
        for j, members in enumerate(self._pack_members):
            request = self._pack_requests[j]
            if members is None or not request.completed:
                continue
            self.transport.check(request)
            self._deliver_pack(j, members)
            self._pack_members[j] = None
        alone, transfer, where = self._alone, self.transfer, self.where
        # The owner sends in order and transfers complete mostly in order: deliver from the
        # front and stop at the first one still running.
        while alone:
            item = alone[0]
            if not item.request.completed:
                break
            self.transport.check(item.request)
            value = item.result
            out = None if self.outs is None else self.outs[item.index]
            if out is not None and value is not out:  # received privately (no cancel)
                value = copy_into(out, value) if transfer.pending([where[item.index]])[0] else None
            if value is not None:
                transfer.deliver_one(int(where[item.index]), value)
            alone.popleft()
        if alone or any(m is not None for m in self._pack_members):
            return False
        self._landed()
        if self._send is not None:
            return False
        self._finish()
        return True

    def _landed(self) -> None:
        """End this request in the traffic count (once): its data is here, or it failed."""
        if self._traffic is not None:
            traffic, self._traffic = self._traffic, None
            traffic.end(self.peer)

    def _deliver_pack(self, j: int, members: np.ndarray) -> None:
        """Hand every tile of a landed pack to the transfer (views, or copies into ``out``)."""
        views = self._views[j]
        self._views[j] = None
        if views is None:  # a handle whose fields disagree: raise here, failing the batch
            views = pack_views(self.packs[j], members, self.handles, self.items["offset"])
        if not len(members):
            return
        targets = self.where[members]
        if self.outs is None:
            run = _as_run(targets)
            self.transfer.deliver(run, views)
            return
        claimed = self.transfer.claim(targets)  # running: no longer cancellable
        if not claimed.all():
            keep = np.flatnonzero(claimed).tolist()
            targets, members = targets[keep], members[keep]
            views = [views[k] for k in keep]
        values = []
        for i, view in zip(members.tolist(), views, strict=True):
            out = self.outs[i]
            if out is None:
                values.append(view)
            elif type(out) is np.ndarray and type(view) is np.ndarray:
                out[...] = view
                values.append(out)
            else:
                values.append(copy_into(out, view))
        self.transfer.deliver(targets, values)

    def _finish(self) -> None:
        self._landed()
        if not self.finished:
            self.finished = True
            self._on_finish(self)

    def fail(self, exc: BaseException) -> None:
        """Fail every unsettled tile and withdraw every receive still posted.

        Withdrawn receives are kept in :attr:`withdrawn` with their tags: the fetcher waits
        for each to settle and drains a late message of a cancelled one.
        """
        owner, n = self.peer, len(self.handles)
        pack_seq0 = self.batch + 1 + n
        with self._lock:  # receives not yet posted never will be
            for j, request in enumerate(self._pack_requests):
                pending = j >= len(self._pack_members) or self._pack_members[j] is not None
                if pending and not request.completed:
                    tag = make_tag(Kind.DATA, owner, pack_seq0 + j)
                    self._cancel(tag, request, self.packs[j], private=True)
            for item in self._alone:
                if item.request is not None and not item.request.completed:
                    tag = make_tag(Kind.DATA, owner, self.batch + 1 + item.index)
                    out = None if self.outs is None else self.outs[item.index]
                    self._cancel(tag, item.request, item.target, private=item.result is not out)
            self._alone.clear()
            self._pack_members = []
            self._views = []
            self._finish()
        self.transfer.fail(self.where, exc)

    def _cancel(self, tag: int, request: Any, buffer: Any, *, private: bool) -> None:
        """Withdraw one receive; one the transport cannot withdraw stays posted.

        Into private memory (a pack, or a result of this request's own) it may then land
        unseen: it is kept with its buffer in :attr:`orphans`. Into a caller's ``out`` it is
        waited for as a withdrawn one (the fetcher reports it if it does not settle).
        """
        try:
            self.transport.cancel(request)
        except GpupartError:
            if private:
                self.orphans.append((request, buffer))
                return
        self.withdrawn.append((tag, request))


def error_for(code: int, handle: Handle) -> GpupartError:
    """Return the consumer-side error for an owner's item code."""
    if code == wire.NOT_FOUND:
        return TileNotFoundError(handle.owner, handle.tile_id)
    if code == wire.SIZE_MISMATCH:
        return FetchError(
            f"tile {handle.tile_id} on rank {handle.owner} is not the size its handle says"
            f" ({handle.nbytes} bytes): the handle is stale or forged"
        )
    return FetchError(f"rank {handle.owner} could not send tile {handle.tile_id} (code {code})")


def _as_run(indices: np.ndarray) -> Sequence[int]:
    """Return ``indices`` as a ``range`` if consecutive and ascending, else as an array."""
    n = len(indices)
    if n and int(indices[-1]) - int(indices[0]) == n - 1 and (np.diff(indices) == 1).all():
        return range(int(indices[0]), int(indices[0]) + n)
    return indices


def pack_views(
    pack: Any,
    idx: np.ndarray,
    handles: list[Handle],
    offsets: np.ndarray,
    kinds: np.ndarray | None = None,
) -> list:
    """Return views of a pack's tiles: ``handles[i]`` at ``offsets[i]`` for ``i`` in ``idx``.

    When the tiles share one dtype, shape and order and sit at one stride, one strided view
    is split up instead of making a view per tile. ``kinds`` (the handles' record kinds,
    :data:`~gpupart.tiles.handles.HANDLE_RECORD`) tells that in one comparison.
    """
    first = handles[int(idx[0])]
    offs = offsets[idx].astype(np.int64)
    k = len(idx)
    if (
        k > 1
        and (first.order == "C" or len(first.shape) <= 1)
        and (_alike(handles, idx) if kinds is None else bool((kinds[idx] == kinds[idx[0]]).all()))
    ):
        steps = np.diff(offs)
        stride = int(steps[0])
        if stride >= first.nbytes and (steps == stride).all():
            xp = sys.modules[type(pack).__module__.split(".")[0]]
            rows = xp.lib.stride_tricks.as_strided(
                pack[int(offs[0]) :], shape=(k, first.nbytes), strides=(stride, 1)
            )
            return list(rows.view(first.dtype).reshape((k, *first.shape)))
    views = []
    for i, off in zip(idx.tolist(), offs.tolist(), strict=True):
        h = handles[i]
        views.append(pack[off : off + h.nbytes].view(h.dtype).reshape(h.shape, order=h.order))
    return views


def _alike(handles: list[Handle], idx: np.ndarray) -> bool:
    """Whether the handles at ``idx`` share one dtype, shape and order."""
    first = handles[int(idx[0])]
    return all(
        h.dtype == first.dtype and h.shape == first.shape and h.order == first.order
        for h in (handles[i] for i in idx.tolist())
    )
