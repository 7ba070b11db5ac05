"""Random distributed arrays whose values do not depend on how many ranks make them.

Element ``i`` (in C order over the global shape) of ``default_rng(seed).random(shape)`` is
the same whatever the tiling or the number of ranks: the flat index space is cut into
chunks of :data:`CHUNK` elements, chunk ``c`` drawn from NumPy's generator seeded with
``(seed, c)``, and each rank draws only the chunks its tiles touch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gpupart.containers import layout
from gpupart.containers.creation import _layout, normalize_shape, runtime_or_init
from gpupart.containers.darray import DistArray

__all__ = ["CHUNK", "Generator", "default_rng"]

#: Elements per independently seeded chunk of the flat index space.
CHUNK = 1 << 16


def default_rng(seed: int) -> Generator:
    """Return a :class:`Generator` for ``seed`` (an int >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, found {seed!r}")
    return Generator(int(seed))


class Generator:
    """Draws distributed arrays (see the module docstring).

    Every call gives the same numbers at any rank count, and again with the same arguments.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def random(
        self, shape: Any, dtype: Any = np.float64, *, tiles: Any = None, grid: Any = None
    ) -> DistArray:
        """Return uniform floats in ``[0, 1)``."""
        return self._draw(shape, dtype, tiles, grid, lambda g, n: g.random(n))

    def standard_normal(
        self, shape: Any, dtype: Any = np.float64, *, tiles: Any = None, grid: Any = None
    ) -> DistArray:
        """Return normally distributed floats of mean 0 and standard deviation 1."""
        return self._draw(shape, dtype, tiles, grid, lambda g, n: g.standard_normal(n))

    def uniform(
        self,
        low: float = 0.0,
        high: float = 1.0,
        shape: Any = (),
        dtype: Any = np.float64,
        *,
        tiles: Any = None,
        grid: Any = None,
    ) -> DistArray:
        """Return uniform floats in ``[low, high)``."""
        return self._draw(shape, dtype, tiles, grid, lambda g, n: g.uniform(low, high, n))

    def normal(
        self,
        loc: float = 0.0,
        scale: float = 1.0,
        shape: Any = (),
        dtype: Any = np.float64,
        *,
        tiles: Any = None,
        grid: Any = None,
    ) -> DistArray:
        """Return normally distributed floats (mean ``loc``, standard deviation ``scale``)."""
        return self._draw(shape, dtype, tiles, grid, lambda g, n: g.normal(loc, scale, n))

    def integers(
        self,
        low: int,
        high: int | None = None,
        shape: Any = (),
        dtype: Any = np.int64,
        *,
        tiles: Any = None,
        grid: Any = None,
    ) -> DistArray:
        """Return integers in ``[low, high)`` (``[0, low)`` without ``high``)."""
        lo, hi = (0, low) if high is None else (low, high)
        if hi <= lo:
            raise ValueError(f"high: expected a value above low={lo}, found {hi}")
        return self._draw(shape, dtype, tiles, grid, lambda g, n: g.integers(lo, hi, n))

    def _draw(self, shape: Any, dtype: Any, tiles: Any, grid: Any, draw: Any) -> DistArray:
        rt = runtime_or_init()
        dims = normalize_shape(shape)
        dt = np.dtype(dtype)
        tiling, owners, mine = _layout(rt, dims, tiles, grid)
        xp = rt.backend.xp
        strides = np.array([int(np.prod(dims[d + 1 :])) for d in range(len(dims))], np.int64)
        data = {}
        for pos in mine:
            start, stop = layout.tile_box(tiling, pos)
            data[pos] = xp.asarray(self._values(dims, strides, start, stop, draw).astype(dt))
        return DistArray(rt, tiling, owners, dt, data)

    def _values(
        self, dims: tuple[int, ...], strides: np.ndarray, start: tuple, stop: tuple, draw: Any
    ) -> np.ndarray:
        """Return the tile ``[start, stop)``: its flat indices, from the chunks that hold them."""
        extent = tuple(b - a for a, b in zip(start, stop, strict=True))
        if not dims:
            return self._flat(np.zeros(1, np.int64), draw).reshape(())
        if not all(extent):
            return np.empty(extent)
        axes = np.ix_(*[np.arange(a, b, dtype=np.int64) for a, b in zip(start, stop, strict=True)])
        flat = sum(ax * s for ax, s in zip(axes, strides, strict=True))
        return self._flat(np.asarray(flat).reshape(-1), draw).reshape(extent)

    def _flat(self, index: np.ndarray, draw: Any) -> np.ndarray:
        chunks = index // CHUNK
        first, last = int(chunks.min()), int(chunks.max())
        drawn = np.concatenate(
            [
                np.asarray(draw(np.random.default_rng([self.seed, c]), CHUNK))
                for c in range(first, last + 1)
            ]
        )
        return drawn[index - first * CHUNK]
