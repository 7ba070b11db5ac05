"""The data ``ray_driver.py`` and ``ray_rank.py`` share: names, shapes, expected values."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

NAMESPACE = "gpupart-test"
#: the named actor holding the driver's refs, and the detached one owning the job's results
SOURCE, KEEPER = "gpupart-test-source", "gpupart-test-keeper"

#: a 2 x 2 grid of blocks of ~100 to ~200 KiB (past Ray's inline limit: in the object store)
SHAPE = (300, 160)
ROW_CUTS, COL_CUTS = (0, 170, 300), (0, 90, 160)
#: frames: 3 row blocks of unequal length
FRAME_ROWS = (7, 11, 5)


def array() -> np.ndarray:
    return np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE) / 7


def blocks() -> list[list[np.ndarray]]:
    whole = array()
    rows = list(itertools.pairwise(ROW_CUTS))
    cols = list(itertools.pairwise(COL_CUTS))
    return [[whole[a:b, c:d].copy() for c, d in cols] for a, b in rows]


def frame() -> pd.DataFrame:
    i = np.arange(sum(FRAME_ROWS), dtype=np.int64)
    return pd.DataFrame({"i": i, "x": i * 0.5, "flag": i % 2 == 0})


def frames() -> list[pd.DataFrame]:
    cuts = np.cumsum([0, *FRAME_ROWS])
    return [frame().iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(cuts)]
