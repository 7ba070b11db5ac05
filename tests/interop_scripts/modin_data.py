"""The frames the Modin interop scripts exchange (the same on the driver and every rank)."""

from __future__ import annotations

import numpy as np
import pandas as pd

IN_NAME, OUT_NAME = "gpupart-modin-in", "gpupart-modin-out"
ROWS = 100
PARTITIONS = 3  # Modin's row partitions: 34, 34, 32 rows


def frame() -> pd.DataFrame:
    """Ints, floats with NaN, strings and booleans."""
    rng = np.random.default_rng(7)
    f = rng.standard_normal(ROWS)
    f[::7] = np.nan
    return pd.DataFrame(
        {
            "i": np.arange(ROWS, dtype=np.int64),
            "f": f,
            "s": np.array(["a", "bb", "ccc", "", "eeeee"], dtype=object)[np.arange(ROWS) % 5],
            "b": np.arange(ROWS) % 2 == 0,
        }
    )


def result() -> pd.DataFrame:
    """What the job makes of ``frame()``: a column ``g = 2 i``, rows with ``i % 3 != 0``."""
    df = frame()
    df["g"] = df["i"] * 2
    return df[df["i"] % 3 != 0].reset_index(drop=True)
