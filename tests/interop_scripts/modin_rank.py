"""A gpupart rank beside a Modin-on-Dask program (``modin_driver.py`` starts the job).

``gpupart run -n N -- python modin_rank.py SCHEDULER`` (N >= 2): the last rank joins the
Dask cluster late, so a first ``to_modin`` must fail on every rank naming it; then every rank
has a ``distributed.Client`` on the driver's scheduler, adopts the Modin frame the driver
published as ``gpupart-modin-in`` (``gpupart.from_partitioned``, gathering only its own
partitions) and checks it against pandas; adds a column and filters rows in gpupart, makes a
Modin frame of the result on every rank (``to_modin``) and checks it; the other ranks leave
the cluster and rank 0's frame must still be whole; rank 0 publishes it as
``gpupart-modin-out``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client
from gpupart.containers import layout
from modin.pandas.io import to_pandas
from pandas.testing import assert_frame_equal

import gpupart
from gpupart.interop import modin as gm
from gpupart.protocol import Tiling

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from modin_data import IN_NAME, OUT_NAME, PARTITIONS, frame, result


class Counting:
    """A ``get`` that records the keys of the futures it is asked for, then asks ``get``."""

    def __init__(self, get: Any) -> None:
        self.get, self.keys = get, []

    def __call__(self, futures: Any) -> Any:
        self.keys.extend(f.key for f in futures)
        return self.get(futures)


def main() -> None:
    address = sys.argv[1]
    with gpupart.init() as rt:
        emit("plan", rank=rt.rank, size=rt.size)
        late = rt.size - 1
        client = Client(address, timeout=60) if rt.rank != late else None
        small = gpupart.from_pandas(frame())
        needle = "distributed.Client" if rt.rank == late else f"rank {late} failed"
        raises(gpupart.InteropError, lambda: gm.to_modin(small), needle)
        if client is None:
            client = Client(address, timeout=60)
        emit("case", name="no_client", rank=rt.rank)

        spec = client.get_dataset(IN_NAME)
        counting = Counting(spec["get"])
        df = gpupart.from_partitioned(dict(spec, get=counting))
        expected = frame()
        expect(isinstance(df, gpupart.DistFrame), f"a DistFrame, found {type(df).__name__}")
        rows = [spec["partitions"][(i, 0)]["shape"][0] for i in range(PARTITIONS)]
        cuts = np.cumsum([0, *rows])
        tiling = Tiling.from_boundaries([cuts.tolist(), [0, expected.shape[1]]])
        owners = layout.assign_owners(tiling, rt.size)[:, 0].tolist()  # C order over the ranks
        expect(list(df.layout.owners) == owners, f"owners {df.layout.owners} vs {owners}")
        mine = [spec["partitions"][(i, 0)]["data"].key for i in sorted(df.local_partitions)]
        expect(counting.keys == mine, f"gathered {counting.keys}, owns {mine}")
        for i, part in df.local_partitions.items():
            want = expected.iloc[cuts[i] : cuts[i + 1]].reset_index(drop=True)
            assert_frame_equal(part.reset_index(drop=True), want)
        assert_frame_equal(df.to_pandas(), expected)
        emit("case", name="modin_in", rank=rt.rank, partitions=sorted(df.local_partitions))

        df["g"] = df["i"] * 2
        kept = df[df["i"] % 3 != 0]
        mdf = gm.to_modin(kept)
        assert_frame_equal(to_pandas(mdf), result())
        emit("case", name="modin_out", rank=rt.rank)

        others = [c for r, c in enumerate(rt.allgather(client.id)) if r != 0]
        if rt.rank != 0:
            client.close()  # the other ranks leave the cluster; rank 0's frame must stay whole
        rt.allgather(None)
        if rt.rank == 0:
            gone = time.monotonic() + 30
            while set(others) & set(client.run_on_scheduler(_clients)):
                expect(time.monotonic() < gone, f"clients {others} still on the scheduler")
                time.sleep(0.1)
            assert_frame_equal(to_pandas(mdf), result())
            client.publish_dataset(**{OUT_NAME: gm.to_partitioned(mdf)})
        emit("case", name="others_left", rank=rt.rank)
        rt.allgather(None)
        emit("done", rank=rt.rank, size=rt.size)
    client.close()


def _clients(dask_scheduler: Any) -> list[str]:
    """The ids of the clients the scheduler knows."""
    return sorted(dask_scheduler.clients)


if __name__ == "__main__":
    main()
