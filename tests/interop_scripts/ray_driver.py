"""A Ray program that hands blocks to a gpupart job and takes results back.

``RAY_ADDRESS=... python ray_driver.py N`` (the test starts the cluster): puts a 2 x 2 grid
of NumPy blocks and 3 pandas frames in the object store, checks ``to_partitioned`` where
they live, hands the refs to the job through a named actor, runs ``gpupart run -n N --
python ray_rank.py`` and, after the job has ended, finds the objects the ranks put lost and
the copies its keeper actor made intact. It emits ``@case`` records (checked by
``tests/test_interop_ray.py``) and the job's output; a failed check raises.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from ray_data import (
    COL_CUTS,
    FRAME_ROWS,
    KEEPER,
    NAMESPACE,
    ROW_CUTS,
    SHAPE,
    SOURCE,
    array,
    blocks,
    frame,
    frames,
)

HERE = Path(__file__).resolve().parent
JOB_TIMEOUT = 150.0


def driver_side(ray, grid: list, frame_refs: list) -> None:
    """to_partitioned where the blocks live: shapes read or given, locations, get, errors."""
    import gpupart
    from gpupart.interop import ray as gr

    spec = gr.to_partitioned(grid)
    view = gpupart.protocol.validate(spec)
    expect(view.shape == SHAPE and view.tiling == (2, 2), f"{view.shape} {view.tiling}")
    expect("locals" not in spec, "a Ray-style dict has no locals")
    ip = ray.util.get_node_ip_address()
    for (i, j), entry in view.partitions.items():
        expect(entry.data is grid[i][j], f"data {i, j}")
        expect(entry.start == (ROW_CUTS[i], COL_CUTS[j]), f"start {i, j}: {entry.start}")
        expect([loc.ip for loc in entry.location] == [ip], f"location {entry.location}")
    np.testing.assert_array_equal(spec["get"](grid[1][0]), blocks()[1][0])
    expect(len(spec["get"]([grid[0][0], grid[1][1]])) == 2, "get takes a list")
    # frames: a flat list is a column of row blocks; shapes given, no task runs
    shapes = [(n, 3) for n in FRAME_ROWS]
    fspec = gr.to_partitioned(frame_refs, shapes=shapes)
    expect(fspec["partition_tiling"] == (3, 1), f"{fspec['partition_tiling']}")
    expect(fspec["shape"] == (sum(FRAME_ROWS), 3), f"{fspec['shape']}")
    # a 1-d list of 2-d blocks cuts rows only
    rows = gr.to_partitioned([ray.put(np.ones((4, 3))), ray.put(np.zeros((2, 3)))])
    expect(rows["partition_tiling"] == (2, 1) and rows["shape"] == (6, 3), f"{rows['shape']}")
    misfit = [[(1, 1), (1, 2)], [(2, 1), (1, 1)]]  # block [1][1] should be (2, 2)
    raises(gpupart.PartitionedError, lambda: gr.to_partitioned(grid, shapes=misfit), "[1][1]")
    ragged = [grid[0], grid[1][:1]]
    raises(gpupart.PartitionedError, lambda: gr.to_partitioned(ragged), "rectangular")
    raises(gpupart.PartitionedTypeError, lambda: gr.to_partitioned([np.ones(3)]), "blocks[0]")
    emit("case", name="driver_side", rank=-1)


def main() -> None:
    import ray

    ranks = int(sys.argv[1])
    ray.init(namespace=NAMESPACE, log_to_driver=False)  # RAY_ADDRESS: the test's cluster

    @ray.remote(num_cpus=0)
    class Holder:
        """Keeps refs by name (borrowed), or copies of their values (owned by the actor)."""

        def __init__(self, **refs):
            self.refs = refs

        def keep(self, name, refs):
            self.refs[name] = refs

        def copy(self, name, refs):
            flat = [r for item in refs for r in (item if isinstance(item, list) else [item])]
            self.refs[f"{name}-copy"] = [ray.put(v) for v in ray.get(flat)]

        def get(self, name):
            return self.refs[name]

    grid = [[ray.put(b) for b in row] for row in blocks()]
    frame_refs = [ray.put(f) for f in frames()]
    driver_side(ray, grid, frame_refs)
    source = Holder.options(name=SOURCE).remote(array=grid, frame=frame_refs)
    keeper = Holder.options(name=KEEPER).remote()
    ray.get([source.get.remote("array"), keeper.keep.remote("ready", True)])
    rank_script = [sys.executable, str(HERE / "ray_rank.py")]
    job = subprocess.run(
        [sys.executable, "-m", "gpupart", "run", "-n", str(ranks), "--", *rank_script],
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    sys.stdout.write(job.stdout)
    sys.stderr.write(job.stderr)
    expect(job.returncode == 0, f"the gpupart job failed with {job.returncode}")
    # the ranks have left Ray: the objects they put are lost, the keeper's copies are not
    borrowed = ray.get(keeper.get.remote("array"))
    raises(ray.exceptions.ObjectLostError, lambda: ray.get(borrowed[0][0], timeout=60))
    back = ray.get(ray.get(keeper.get.remote("array-copy")))
    np.testing.assert_array_equal(np.block([back[:2], back[2:]]), array() * 2)
    parts = ray.get(ray.get(keeper.get.remote("frame-copy")))
    assert_frame_equal(pd.concat(parts, ignore_index=True), frame())
    emit("case", name="after_job", rank=-1)
    ray.shutdown()


if __name__ == "__main__":
    main()
