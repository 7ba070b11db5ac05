"""A Dask program that hands an array and a frame to a gpupart job and takes results back.

``python dask_driver.py N``: starts a ``LocalCluster`` of 2 worker processes, persists and
publishes a dask array (irregular 3 x 2 chunks), the ``__partitioned__`` dict of it and a
dask DataFrame (3 partitions), runs ``gpupart run -n N -- python dask_rank.py`` with
``DASK_SCHEDULER_ADDRESS`` set, and after the job has ended reads what the ranks published
with ``to_dask``. It emits ``@case`` records (checked by ``tests/test_interop_dask.py``) and
the job's output; a failed check raises.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from pandas.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from dask_data import (
    ARRAY,
    ARRAY_BACK,
    CHUNKS,
    FRAME,
    FRAME_BACK,
    PARTITIONS,
    SPEC,
    array,
    frame,
)

HERE = Path(__file__).resolve().parent
JOB_TIMEOUT = 150.0


def fail(block: np.ndarray) -> np.ndarray:
    raise ValueError("this chunk cannot be computed")


def driver_side(client) -> None:
    """to_partitioned where the collection lives: persisting, the getter, a failed chunk."""
    import dask.array as da
    from distributed import futures_of

    import gpupart
    from gpupart.interop import dask as gd

    lazy = da.from_array(array(), chunks=CHUNKS) + 0  # not persisted: to_partitioned does it
    spec = gd.to_partitioned(lazy, client)
    view = gpupart.protocol.validate(spec, strict=True)
    expect(not futures_of(lazy), "the caller's collection is left as it was")
    got = spec["get"]([view.partitions[(i, j)].data for i in range(3) for j in range(2)])
    np.testing.assert_array_equal(np.block([got[0:2], got[2:4], got[4:6]]), array())
    np.testing.assert_array_equal(spec["get"](view.partitions[(2, 1)].data), array()[9:, 6:])
    broken = da.from_array(array(), chunks=CHUNKS).map_blocks(fail, dtype=float)
    exc = raises(gpupart.PartitionedError, lambda: gd.to_partitioned(broken, client), "chunk")
    expect(isinstance(exc.__cause__, ValueError), f"cause {exc.__cause__!r}")
    emit("case", name="driver_side", rank=-1)


def main() -> None:
    import dask.array as da
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from gpupart.interop import dask as gd

    ranks = int(sys.argv[1])
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,  # the failing chunk is expected
        ) as cluster,
        Client(cluster) as client,
    ):
        driver_side(client)
        x = client.persist(da.from_array(array(), chunks=CHUNKS))
        df = client.persist(dd.from_pandas(frame(), npartitions=PARTITIONS))
        client.publish_dataset(**{ARRAY: x, FRAME: df, SPEC: gd.to_partitioned(x, client)})
        env = {**os.environ, "DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}
        rank_script = [sys.executable, str(HERE / "dask_rank.py")]
        job = subprocess.run(
            [sys.executable, "-m", "gpupart", "run", "-n", str(ranks), "--", *rank_script],
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        sys.stdout.write(job.stdout)
        sys.stderr.write(job.stderr)
        expect(job.returncode == 0, f"the gpupart job failed with {job.returncode}")
        # the job has ended: what it published is held by the scheduler, not by the ranks
        np.testing.assert_array_equal(client.get_dataset(ARRAY_BACK).compute(), array() * 2)
        back = client.get_dataset(FRAME_BACK)
        expect(back.npartitions == PARTITIONS, f"npartitions {back.npartitions}")
        assert_frame_equal(back.compute(), frame())
        for name in (ARRAY, FRAME, SPEC, ARRAY_BACK, FRAME_BACK):
            client.unpublish_dataset(name)
        emit("case", name="after_job", rank=-1)


if __name__ == "__main__":
    main()
