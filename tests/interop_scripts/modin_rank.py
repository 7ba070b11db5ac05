"""A gpupart rank beside a Modin-on-Dask program (``modin_driver.py`` starts the job).

``gpupart run -n N -- python modin_rank.py SCHEDULER``: every rank connects a
``distributed.Client`` to the driver's scheduler, adopts the Modin frame the driver published
as ``gpupart-modin-in`` (``gpupart.from_partitioned``), checks it against pandas, adds a
column and filters rows in gpupart, turns the result into a Modin frame on every rank
(``to_modin``) and checks that; rank 0 publishes the result as ``gpupart-modin-out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from distributed import Client
from gpupart.containers import layout
from pandas.testing import assert_frame_equal

import gpupart
from gpupart.interop import modin as gm
from gpupart.protocol import Tiling

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect
from modin_data import IN_NAME, OUT_NAME, PARTITIONS, frame, result


def main() -> None:
    client = Client(sys.argv[1], timeout=60)
    with gpupart.init() as rt:
        emit("plan", rank=rt.rank, size=rt.size)
        spec = client.get_dataset(IN_NAME)
        df = gpupart.from_partitioned(spec)
        expected = frame()
        expect(isinstance(df, gpupart.DistFrame), f"a DistFrame, found {type(df).__name__}")
        cuts = np.cumsum([0, *[spec["partitions"][(i, 0)]["shape"][0] for i in range(PARTITIONS)]])
        tiling = Tiling.from_boundaries([cuts.tolist(), [0, expected.shape[1]]])
        owners = layout.assign_owners(tiling, rt.size)[:, 0].tolist()  # C order over the ranks
        expect(list(df.layout.owners) == owners, f"owners {df.layout.owners} vs {owners}")
        for i, part in df.local_partitions.items():
            want = expected.iloc[cuts[i] : cuts[i + 1]].reset_index(drop=True)
            assert_frame_equal(part.reset_index(drop=True), want)
        assert_frame_equal(df.to_pandas(), expected)
        emit("case", name="modin_in", rank=rt.rank)

        df["g"] = df["i"] * 2
        kept = df[df["i"] % 3 != 0]
        mdf = gm.to_modin(kept)
        from modin.pandas.io import to_pandas

        assert_frame_equal(to_pandas(mdf), result())
        emit("case", name="modin_out", rank=rt.rank, partitions=kept.npartitions)
        rt.allgather(None)  # every rank checked before rank 0 hands the frame over
        if rt.rank == 0:
            client.publish_dataset(**{OUT_NAME: gm.to_partitioned(mdf)})
        rt.allgather(None)
        emit("done", rank=rt.rank, size=rt.size)
    client.close()


if __name__ == "__main__":
    main()
