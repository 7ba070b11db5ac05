"""Hash every case of ``hashing_cases.py`` with the CUDA kernels in numba's simulator.

Run with ``NUMBA_ENABLE_CUDASIM=1`` (it must be set before numba.cuda is imported, hence a fresh
interpreter); NumPy arrays stand in for device arrays. Prints one JSON object: whether the
simulator ran, and per seed and case the row hashes as ints, for the test to compare with the
host kernels' hashes of the same columns.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
from hashing_cases import SEEDS, cases

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    sys.exit("run me with NUMBA_ENABLE_CUDASIM=1")

from gpupart.kernels import _hashing_cuda, hashing
from numba import config

# The simulator runs the kernels as Python on NumPy scalars: uint64 arithmetic wraps, as on the
# device, but NumPy warns about it.
warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)

hashes: dict[str, dict[str, list[int]]] = {}
for seed in SEEDS:
    for name, columns in cases().items():
        layouts, rows, _ = hashing._layouts(columns)
        # Device arrays are writable, and the simulator copies every argument back afterwards.
        layouts = [type(c)(*(a.copy() if hasattr(a, "copy") else a for a in c)) for c in layouts]
        out = np.full(rows, seed, dtype=np.uint64)
        _hashing_cuda.hash_into(layouts, out, 0)
        hashes.setdefault(str(seed), {})[name] = out.tolist()
print(json.dumps({"simulator": bool(config.ENABLE_CUDASIM), "hashes": hashes}))
