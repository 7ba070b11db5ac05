"""The data ``dask_driver.py`` and ``dask_rank.py`` share: names, shapes, expected values."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: dataset names on the scheduler
ARRAY, SPEC, FRAME = "gpupart-test-x", "gpupart-test-x-spec", "gpupart-test-df"
ARRAY_BACK, FRAME_BACK = "gpupart-test-x-back", "gpupart-test-df-back"

#: an irregular 3 x 2 grid of chunks; the frame has 3 row partitions of unequal length
SHAPE = (12, 10)
CHUNKS = ((5, 4, 3), (6, 4))
ROWS, PARTITIONS = 23, 3


def array() -> np.ndarray:
    return np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE) * 1.5


def frame() -> pd.DataFrame:
    i = np.arange(ROWS, dtype=np.int64)
    return pd.DataFrame({"i": i, "x": i * 0.25, "flag": i % 3 == 0})
