"""``DistArray``: an n-d array whose tiles live on the ranks that own them.

Every rank of the job holds the same :class:`DistArray` object in the SPMD sense: the same
global ``shape``, ``dtype``, ``tiling`` (a :class:`~gpupart.protocol.Tiling`) and ``owners``
(the rank owning each grid position, ``-1`` where every rank holds a copy), and the tiles
it owns (``local_tiles``, NumPy arrays on the CPU, CuPy arrays on a GPU). Operations are
collective: every rank calls them in the same order, and each computes the tiles it owns.

Data moves only when an operation needs another rank's tiles (different tilings, a
repartition, ``to_numpy``): the consumer fetches them (:meth:`Runtime.get`) after an
all-gather of the tiles' handles, made once per array and cached (:meth:`DistArray.handles`).
Tiles are registered with the runtime only then, and released when the array is collected.

Streams: an array's tiles are produced on one stream (``x.stream``, a backend stream: on the
CPU a null stream) and ``x.ready`` is the event recorded after them. Operations run on their
first array operand's stream, first making it wait on the other operands' ``ready`` events
(never on the device); exports register the tiles with that stream, so owners send them only
once it has reached them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from gpupart.containers import layout

from gpupart.errors import CollectiveError
from gpupart.protocol import Tiling

__all__ = ["REPLICATED", "DistArray"]

#: Owner of a tile every rank holds a copy of (small results such as ``X.T @ X``).
REPLICATED = -1

Position = tuple[int, ...]
Box = tuple[tuple[int, ...], tuple[int, ...]]


@contextlib.contextmanager
def operand_stream(*operands: Any) -> Iterator[Any]:
    """Run on the first DistArray operand's stream, after the others' ``ready`` events.

    Operands may be arrays, or lists/tuples of them (``concat``); yields the stream (or
    ``None`` when no operand is a DistArray: nothing to order).
    """
    arrays = [a for a in _flat_operands(operands) if isinstance(a, DistArray)]
    if not arrays:
        yield None
        return
    stream = arrays[0].stream
    for other in arrays[1:]:
        if other.stream.handle != stream.handle:
            stream.wait_event(other.ready)
    with stream.as_current():
        yield stream


def _flat_operands(operands: Sequence[Any]) -> Iterator[Any]:
    for op in operands:
        if isinstance(op, (list, tuple)):
            yield from op
        else:
            yield op


def runs_on_operand_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` to run under :func:`operand_stream` of its arguments."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with operand_stream(*args, *kwargs.values()):
            return fn(*args, **kwargs)

    return wrapper


class DistArray:
    """A distributed n-d array (see the module docstring).

    Make one with gpupart's creation functions (``asarray``, ``from_local``, ``zeros``, ...),
    not directly.

    ``shape``, ``size`` and ``tiling`` are global; ``local_tiles`` maps this rank's grid
    positions to its tiles. The array-API namespace is ``x.__array_namespace__()``
    (``gpupart.array_api``).
    """

    __array_priority__ = 1000.0  # NumPy defers binary operators to ours

    def __init__(
        self,
        runtime: Any,
        tiling: Tiling,
        owners: np.ndarray,
        dtype: Any,
        tiles: Mapping[Position, Any],
        stream: Any = None,
    ) -> None:
        self._rt = runtime
        self.tiling = tiling
        self.owners = owners
        self.dtype = np.dtype(dtype)
        self._tiles = dict(tiles)
        self._handles: dict[Position, Any] | None = None
        #: The stream the tiles were produced on (default: the caller's current stream).
        self.stream = runtime.backend.current_stream() if stream is None else stream
        #: Recorded on ``stream`` after the tiles were produced: wait on it, not the device.
        self.ready = self.stream.record_event()

    # -- description ----------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """Global shape."""
        return self.tiling.shape

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self.tiling.ndim

    @property
    def size(self) -> int:
        """Number of elements (global)."""
        return math.prod(self.shape)

    @property
    def device(self) -> str:
        """Where this rank's tiles live (a DLPack device string, e.g. ``'kDLCPU'``)."""
        return self._rt.backend.dlpack_device

    def to_device(self, device: Any, /, *, stream: Any = None) -> DistArray:
        """Return ``self`` when ``device`` is where its tiles live (moving backends is not done)."""
        check_device(self._rt, device)
        return self

    @property
    def runtime(self) -> Any:
        """The :class:`~gpupart.Runtime` the array belongs to."""
        return self._rt

    @property
    def local_tiles(self) -> Mapping[Position, Any]:
        """Map of this rank's grid positions to its tiles (read-only; the tiles themselves)."""
        return MappingProxyType(self._tiles)

    @property
    def xp(self) -> Any:
        """The array module of the tiles: NumPy or CuPy."""
        return self._rt.backend.xp

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"<gpupart.DistArray shape={self.shape} dtype={self.dtype} grid={self.tiling.grid}"
            f" rank {self._rt.rank} holds {len(self._tiles)} tile(s)>"
        )

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        """Return the array-API namespace of distributed arrays (``gpupart.array_api``)."""
        if api_version not in (None, "2023.12", "2024.12"):
            raise ValueError(
                f"api_version: expected None, '2023.12' or '2024.12', found {api_version!r}"
            )
        from gpupart.containers import namespace

        return namespace

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """Return a replicated array (like a reduction's result) as NumPy, without a message.

        An array spread over ranks is refused: converting it would need every rank.
        """
        from gpupart.containers.reductions import is_replicated, local_whole

        if not is_replicated(self):
            raise TypeError(
                "a gpupart.DistArray is spread over ranks: np.asarray() cannot see it; call"
                " x.to_numpy() (every rank gets the whole array, collectively) or"
                " x.gather(root=0)"
            )
        if copy is False:
            raise ValueError("np.asarray(x, copy=False): a DistArray's tiles are not one array")
        host = host_array(local_whole(self), copy=True)
        return host if dtype is None else host.astype(dtype, copy=False)

    # -- tiles ----------------------------------------------------------------------------

    def owner_of(self, pos: Position) -> int:
        """Owner rank of the tile at ``pos`` (:data:`REPLICATED` for a tile every rank holds)."""
        return int(self.owners[pos])

    def boxes(self) -> Iterator[tuple[Position, tuple[int, ...], tuple[int, ...]]]:
        """``(position, start, stop)`` of every tile this rank holds, in C order."""
        for pos in self._tiles:
            start, stop = layout.tile_box(self.tiling, pos)
            yield pos, start, stop

    def counted_tiles(self) -> Iterator[tuple[Position, Any]]:
        """Yield the tiles this rank contributes to a global combination (each tile once)."""
        rank = self._rt.rank
        for pos, tile in self._tiles.items():
            owner = int(self.owners[pos])
            if owner == rank or (owner == REPLICATED and rank == 0):
                yield pos, tile

    def like(
        self,
        tiles: Mapping[Position, Any],
        dtype: Any = None,
        tiling: Tiling | None = None,
        owners: np.ndarray | None = None,
    ) -> DistArray:
        """Return a new array of this runtime: this layout (or ``tiling``/``owners``), ``tiles``."""
        dt = self.dtype if dtype is None else dtype
        if dtype is None and tiles:
            dt = next(iter(tiles.values())).dtype
        return DistArray(
            self._rt,
            self.tiling if tiling is None else tiling,
            self.owners if owners is None else owners,
            dt,
            tiles,
            self.stream,
        )

    @runs_on_operand_stream
    def map_tiles(self, fn: Any, dtype: Any = None) -> DistArray:
        """Apply ``fn`` to every local tile (it keeps the tile's shape); same layout."""
        return self.like({pos: fn(tile) for pos, tile in self._tiles.items()}, dtype)

    # -- moving data ----------------------------------------------------------------------

    def handles(self) -> Mapping[Position, Any]:
        """Every owned tile's handle by position; collective the first time (then cached).

        For exports (``__partitioned__``): the tiles stay registered until the array is
        collected. A tile that is not contiguous is registered as a contiguous copy, a
        snapshot that later writes do not change.
        """
        if self._handles is None:
            table, mine = self._publish()
            self._handles = table
            if mine:
                weakref.finalize(self, _release, self._rt, mine)
        return MappingProxyType(self._handles)

    def _publish(self) -> tuple[dict[Position, Any], list[Any]]:
        """Register this rank's tiles and all-gather every handle (collective).

        Returns the table of every tile's handle and this rank's own handles (to release).
        """
        rt, rank = self._rt, self._rt.rank
        mine: dict[Position, Any] = {}
        problem = None
        try:
            for pos, tile in self._tiles.items():
                if self.owners[pos] == rank:
                    mine[pos] = rt.put(tile, self.stream)
        except (TypeError, ValueError) as exc:  # a tile that cannot be sent: tell everyone
            problem = f"rank {rank} cannot publish tile {pos}: {exc}"
        parts = rt.allgather((mine, problem))
        problems = [p for _, p in parts if p is not None]
        if problems:
            _release(rt, list(mine.values()))
            raise CollectiveError(f"publishing a DistArray's tiles: {'; '.join(problems)}")
        table: dict[Position, Any] = {}
        for part, _ in parts:
            table.update(part)
        return table, list(mine.values())

    @runs_on_operand_stream
    def fetch_regions(self, boxes: Sequence[Box]) -> list[Any]:
        """Return the data of each box ``(start, stop)`` of the global index space, here.

        Collective: every rank calls it (for boxes of its own, maybe none). A box that is
        exactly one of this rank's tiles is that tile (no copy); other boxes are assembled
        from the tiles that overlap them, another rank's fetched (all in one call). The tiles
        are registered for this call only (so a fetch always sees the values as they are
        now) and released after a closing barrier, once no rank can still be fetching them.
        """
        table, published = self._publish()
        xp = self.xp
        plans: list[Any] = []
        wanted: dict[Position, Any] = {}
        for lo, hi in boxes:
            lo, hi = tuple(lo), tuple(hi)
            parts = list(layout.overlapping_tiles(self.tiling, lo, hi))
            if len(parts) == 1 and parts[0][0] in self._tiles:
                pos = parts[0][0]
                if layout.tile_box(self.tiling, pos) == (lo, hi):
                    plans.append(("tile", pos))
                    continue
            plans.append(("parts", lo, hi, parts))
            for pos, _, _ in parts:
                if pos not in self._tiles:
                    wanted[pos] = None
        try:
            if wanted:
                got = self._rt.get([table[pos] for pos in wanted])
                wanted = dict(zip(wanted, got, strict=True))
            self._rt.barrier()
        finally:
            _release(self._rt, published)
        out = []
        for plan in plans:
            if plan[0] == "tile":
                out.append(self._tiles[plan[1]])
                continue
            _, lo, hi, parts = plan
            buf = xp.empty(tuple(b - a for a, b in zip(lo, hi, strict=True)), dtype=self.dtype)
            for pos, start, stop in parts:
                tile = self._tiles[pos] if pos in self._tiles else xp.asarray(wanted[pos])
                t0 = self.tiling.start(pos)
                src = tuple(slice(s - t, e - t) for s, e, t in zip(start, stop, t0, strict=True))
                dst = tuple(slice(s - a, e - a) for s, e, a in zip(start, stop, lo, strict=True))
                buf[dst] = tile[src]
            out.append(buf)
        return out

    @runs_on_operand_stream
    def repartition(
        self, tiles: Tiling | Sequence[int] | None = None, grid: Sequence[int] | None = None
    ) -> DistArray:
        """Return the same values under another tiling (collective): ranks fetch their new tiles.

        ``tiles``/``grid`` as in the creation functions; by default one block per rank along
        the first axis.
        """
        rt = self._rt
        tiling = layout.make_tiling(self.shape, rt.size, tiles, grid)
        owners = layout.assign_owners(tiling, rt.size)
        if tiling == self.tiling and np.array_equal(owners, self.owners):
            return self
        mine = [pos for pos in layout.positions(tiling) if owners[pos] == rt.rank]
        boxes = [layout.tile_box(tiling, pos) for pos in mine]
        data = self.fetch_regions(boxes)
        tiles = dict(zip(mine, data, strict=True))
        return DistArray(rt, tiling, owners, self.dtype, tiles, self.stream)

    def rebalance(self) -> DistArray:
        """Return the same values with the first axis split evenly across ranks (collective)."""
        return self.repartition()

    @runs_on_operand_stream
    def to_numpy(self) -> np.ndarray:
        """Return the whole array on every rank, as a NumPy array (collective)."""
        (whole,) = self.fetch_regions([((0,) * self.ndim, self.shape)])
        return host_array(whole, copy=self._is_tile(whole))

    @runs_on_operand_stream
    def gather(self, root: int = 0) -> np.ndarray | None:
        """Return the whole array on ``root`` (a NumPy array), ``None`` elsewhere (collective)."""
        rt = self._rt
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < rt.size:
            raise ValueError(f"root: expected a rank in 0..{rt.size - 1}, found {root!r}")
        boxes = [((0,) * self.ndim, self.shape)] if rt.rank == root else []
        got = self.fetch_regions(boxes)
        return host_array(got[0], copy=self._is_tile(got[0])) if got else None

    def _is_tile(self, array: Any) -> bool:
        """Whether ``array`` is one of this rank's tiles (the caller must then get a copy)."""
        return any(array is tile for tile in self._tiles.values())

    # -- interop --------------------------------------------------------------------------

    @property
    def __partitioned__(self) -> dict[str, Any]:
        """The ``__partitioned__`` dict (collective: publishes the tiles' handles once)."""
        from gpupart.containers import partitioned

        return partitioned.export(self)

    def _one_tile(self) -> Any:
        tiles = list(self._tiles.values())
        if len(tiles) != 1 or self.tiling.num_partitions != 1:
            raise TypeError(
                "only an array in one tile (every rank holding it) can be viewed without a"
                " copy; use x.to_numpy() or x.local_tiles"
            )
        return tiles[0]

    def __dlpack__(
        self,
        *,
        stream: Any = None,
        max_version: tuple[int, int] | None = None,
        dl_device: Any = None,
        copy: bool | None = None,
    ) -> Any:
        """Export an array in one tile through DLPack (the standard's keywords, passed on)."""
        tile = self._one_tile()
        given = {"stream": stream, "max_version": max_version, "dl_device": dl_device, "copy": copy}
        kwargs = {k: v for k, v in given.items() if v is not None}
        with self.stream.as_current():  # a consumer's stream= is ordered after ours
            return tile.__dlpack__(**kwargs)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """CUDA Array Interface (v3) of an array in one tile on a GPU; its ``stream`` is ours."""
        tile = self._one_tile()
        if not hasattr(tile, "__cuda_array_interface__"):
            raise AttributeError("__cuda_array_interface__: the array's tiles are host memory")
        return {**tile.__cuda_array_interface__, "stream": self.stream.handle}

    def __dlpack_device__(self) -> Any:
        return self._one_tile().__dlpack_device__()


def check_device(rt: Any, device: Any) -> None:
    """Accept ``None`` or this rank's device (``x.device``); the array API's ``device=``."""
    if device is not None and device != rt.backend.dlpack_device:
        raise ValueError(
            f"device: expected None or {rt.backend.dlpack_device!r} (this rank's device; gpupart"
            f" places tiles on each rank's own device), found {device!r}"
        )


def _binary(name: str, reflected: bool = False) -> Any:
    """Make a binary operator method that calls ``gpupart.containers.elementwise.<name>``."""

    def method(self: DistArray, other: Any) -> Any:
        from gpupart.containers import elementwise

        fn = getattr(elementwise, name, None)
        if fn is None:
            raise NotImplementedError(f"{name} is not provided for distributed arrays (yet)")
        with operand_stream(self, other):
            return fn(other, self) if reflected else fn(self, other)

    method.__name__ = name
    return method


def _unary(module: str, name: str) -> Any:
    """Make a unary method that calls ``gpupart.containers.<module>.<name>``."""

    def method(self: DistArray) -> Any:
        import importlib

        fn = getattr(importlib.import_module(f"gpupart.containers.{module}"), name, None)
        if fn is None:
            raise NotImplementedError(f"{name} is not provided for distributed arrays (yet)")
        with operand_stream(self):
            return fn(self)

    method.__name__ = name
    return method


_BINARY = {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "truediv": "divide",
    "floordiv": "floor_divide",
    "mod": "remainder",
    "pow": "pow",
    "and": "bitwise_and",
    "or": "bitwise_or",
    "xor": "bitwise_xor",
    "lshift": "bitwise_left_shift",
    "rshift": "bitwise_right_shift",
}
_COMPARE = {
    "lt": "less",
    "le": "less_equal",
    "eq": "equal",
    "ne": "not_equal",
    "gt": "greater",
    "ge": "greater_equal",
}
for _dunder, _name in _BINARY.items():
    setattr(DistArray, f"__{_dunder}__", _binary(_name))
    setattr(DistArray, f"__r{_dunder}__", _binary(_name, reflected=True))


def _inplace(name: str) -> Any:
    """Make an in-place operator: the result is written into this array's own tiles.

    The standard's rule: the result must keep ``x``'s shape and dtype (``int8 += 1.5`` is an
    error, not a new float array).
    """

    def method(self: DistArray, other: Any) -> DistArray:
        result = _binary(name)(self, other)
        if result.shape != self.shape:
            raise ValueError(
                f"other: an in-place {name} must keep the shape {self.shape}, found"
                f" {result.shape} after broadcasting"
            )
        if result.dtype != self.dtype and not np.can_cast(result.dtype, self.dtype, "same_kind"):
            raise TypeError(
                f"other: an in-place {name} must keep the dtype {self.dtype}, found {result.dtype}"
            )
        with operand_stream(self, result):
            for pos, tile in self._tiles.items():
                tile[...] = result._tiles[pos]
            self.ready = self.stream.record_event()
        return self

    method.__name__ = f"__i{name}__"
    return method


for _dunder, _name in _BINARY.items():
    setattr(DistArray, f"__i{_dunder}__", _inplace(_name))
for _dunder, _name in _COMPARE.items():
    setattr(DistArray, f"__{_dunder}__", _binary(_name))
DistArray.__hash__ = None  # type: ignore[assignment]  (== is elementwise)
DistArray.__neg__ = _unary("elementwise", "negative")  # type: ignore[method-assign]
DistArray.__pos__ = _unary("elementwise", "positive")  # type: ignore[method-assign]
DistArray.__abs__ = _unary("elementwise", "abs")  # type: ignore[method-assign]
DistArray.__invert__ = _unary("elementwise", "bitwise_invert")  # type: ignore[method-assign]


def _numpy_protocol(name: str) -> Any:
    """Make a NumPy protocol method calling ``gpupart.containers.numpy_interop.<name>``."""

    def method(self: DistArray, *args: Any, **kwargs: Any) -> Any:
        from gpupart.containers import numpy_interop

        with operand_stream(self, *args, *kwargs.values()):
            return getattr(numpy_interop, name)(self, *args, **kwargs)

    method.__name__ = name
    return method


# np.exp(x), np.add(x, y), np.where(c, x, y) route to the namespace (see numpy_interop)
DistArray.__array_ufunc__ = _numpy_protocol("array_ufunc")  # type: ignore[attr-defined]
DistArray.__array_function__ = _numpy_protocol("array_function")  # type: ignore[attr-defined]
DistArray.T = property(_unary("manipulation", "transpose_2d"))  # type: ignore[attr-defined]
DistArray.mT = property(_unary("linalg", "matrix_transpose"))  # type: ignore[attr-defined]


def _method(module: str, name: str) -> Any:
    """Make a method that calls ``gpupart.containers.<module>.<name>(self, *args)``."""

    def method(self: DistArray, *args: Any) -> Any:
        import importlib

        fn = getattr(importlib.import_module(f"gpupart.containers.{module}"), name)
        with operand_stream(self, *args):
            return fn(self, *args)

    method.__name__ = name
    return method


DistArray.__getitem__ = _method("indexing", "getitem")  # type: ignore[method-assign]


def _setitem(self: DistArray, key: Any, value: Any) -> None:
    """``x[key] = value``: written into the owners' tiles on ``x``'s stream."""
    from gpupart.containers import indexing

    with operand_stream(self, key, value):
        indexing.setitem(self, key, value)
        self.ready = self.stream.record_event()


DistArray.__setitem__ = _setitem  # type: ignore[method-assign]
DistArray.__matmul__ = _method("linalg", "matmul_method")  # type: ignore[attr-defined]
DistArray.__rmatmul__ = _method("linalg", "rmatmul_method")  # type: ignore[attr-defined]
DistArray.__bool__ = _method("reductions", "to_bool")  # type: ignore[attr-defined]
DistArray.__int__ = _method("reductions", "to_int")  # type: ignore[attr-defined]
DistArray.__float__ = _method("reductions", "to_float")  # type: ignore[attr-defined]
DistArray.__complex__ = _method("reductions", "to_complex")  # type: ignore[attr-defined]
DistArray.__index__ = _method("reductions", "to_index")  # type: ignore[attr-defined]


def host_array(array: Any, *, copy: bool = False) -> np.ndarray:
    """Return a NumPy/CuPy array or scalar as NumPy (a copy for device memory, or when asked).

    The one place device data is copied to the host for a decision or a small collective.
    """
    if isinstance(array, np.ndarray):
        return array.copy() if copy else array
    if hasattr(array, "get"):  # CuPy arrays and scalars
        return array.get()
    return np.array(array) if copy else np.asarray(array)


def _release(rt: Any, handles: list[Any]) -> None:
    """Free this rank's registered tiles of a collected array (a local step, never collective)."""
    if rt.closed:
        return
    for h in handles:
        try:
            rt.free(h)
        except Exception:  # already released: nothing to do
            continue
