"""A Modin-on-Dask program that hands a frame to a gpupart job and takes the result back.

``python modin_driver.py N`` (with ``MODIN_ENGINE=dask``): starts a Dask ``LocalCluster`` of
2 worker processes, makes a Modin frame of 3 row partitions, publishes
``to_partitioned(frame)`` on the scheduler, runs ``gpupart run -n N -- python modin_rank.py
SCHEDULER`` and reads the job's result back with ``from_partitioned``. It emits ``@case``
records (checked by ``tests/test_interop_modin.py``) and the job's output; a failed check
raises.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from pandas.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from modin_data import IN_NAME, OUT_NAME, PARTITIONS, ROWS, frame, result

HERE = Path(__file__).resolve().parent

JOB_TIMEOUT = 150.0


def main() -> None:
    import modin.config
    import modin.pandas as mpd
    from distributed import Client, Future, LocalCluster
    from modin.pandas.io import to_pandas

    import gpupart
    from gpupart.interop import modin as gm

    ranks = int(sys.argv[1])
    modin.config.NPartitions.put(PARTITIONS)
    modin.config.MinRowPartitionSize.put(ROWS // PARTITIONS)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        mdf = mpd.DataFrame(frame())
        spec = gm.to_partitioned(mdf)
        view = gpupart.protocol.validate(spec, strict=True)
        expect(view.tiling == (PARTITIONS, 1), f"tiling {view.tiling}")
        expect(view.shape == (ROWS, 4), f"shape {view.shape}")
        pids = set(client.run(os.getpid).values())
        for entry in view.partitions.values():
            expect(isinstance(entry.data, Future), f"data {type(entry.data).__name__}")
            expect(all(loc.pid in pids for loc in entry.location), f"{entry.location}")
        whole = view.get([e.data for e in view.partitions.values()])
        assert_frame_equal(mpd.concat([mpd.DataFrame(p) for p in whole]).pipe(to_pandas), frame())
        emit("case", name="to_partitioned", rank=-1)

        client.publish_dataset(**{IN_NAME: spec})
        job = subprocess.run(
            [
                sys.executable,
                "-m",
                "gpupart",
                "run",
                "-n",
                str(ranks),
                "--",
                sys.executable,
                str(HERE / "modin_rank.py"),
                cluster.scheduler_address,
            ],
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        sys.stdout.write(job.stdout)
        sys.stderr.write(job.stderr)
        expect(job.returncode == 0, f"the job failed with {job.returncode}")
        client.unpublish_dataset(IN_NAME)

        out = gm.from_partitioned(client.get_dataset(OUT_NAME))
        client.unpublish_dataset(OUT_NAME)  # this client holds the partitions now
        assert_frame_equal(to_pandas(out), result())
        emit("case", name="from_partitioned", rank=-1)

        again = gm.from_partitioned(pickle.loads(pickle.dumps(spec)))  # e.g. through a file
        assert_frame_equal(to_pandas(again), frame())
        bad = dict(spec, partitions={(0, 0): dict(spec["partitions"][(0, 0)], data=frame())})
        bad.update(shape=(spec["partitions"][(0, 0)]["shape"][0], 4), partition_tiling=(1, 1))
        raises(gpupart.PartitionedTypeError, lambda: gm.from_partitioned(bad), "Dask future")
        first = spec["partitions"][(0, 0)]
        rows = first["shape"][0]
        halves = gpupart.protocol.build(  # one row partition cut into two column partitions
            (rows, 4),
            gpupart.protocol.Tiling.from_boundaries([[0, rows], [0, 2, 4]]),
            {(0, 0): first["data"], (0, 1): first["data"]},
            first["location"],
            spec["get"],
        )
        raises(gpupart.PartitionedError, lambda: gm.from_partitioned(halves), "(p, 1)", "(1, 2)")
        emit("case", name="errors", rank=-1)


if __name__ == "__main__":
    main()
