"""mpi4py peer of ``bench/fetch.py``: run as ``mpiexec -n 2 python _mpi_peer.py PARAMS.json``.

Latency: ``Send``/``Recv`` ping-pong of ``size`` bytes each way; one-way = round trip / 2
(what ``ucx_perftest tag_lat`` reports). Bandwidth: rank 0 streams a window of ``Isend``s
(up to 64, at most ``bw_bytes`` in all, one send buffer) that rank 1 ``Irecv``s (one
receive buffer), then rank 1 sends a 1-byte acknowledgement: the osu_bw scheme; one
repetition = one window. Rank 0 writes the result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import loaded_ucx_version, pattern, stats, use_numpy_hugepages

WINDOW = 64
PING, STREAM, ACK, PROBE = 1, 2, 3, 9


def ping(comm: MPI.Comm, msg: np.ndarray) -> None:
    rank = comm.Get_rank()
    if rank == 0:
        comm.Send(msg, 1, PING)
        comm.Recv(msg, 1, PING)
    else:
        comm.Recv(msg, 0, PING)
        comm.Send(msg, 0, PING)


def stream(comm: MPI.Comm, msg: np.ndarray, window: int, ack: np.ndarray) -> None:
    if comm.Get_rank() == 0:
        MPI.Request.Waitall([comm.Isend(msg, 1, STREAM) for _ in range(window)])
        comm.Recv(ack, 1, ACK)
    else:
        MPI.Request.Waitall([comm.Irecv(msg, 0, STREAM) for _ in range(window)])
        comm.Send(ack, 0, ACK)


def agree_count(comm: MPI.Comm, msg: np.ndarray, params: dict) -> int:
    """Rank 0 picks the number of ping-pongs (about ``lat_budget`` seconds); both use it."""
    t0 = MPI.Wtime()
    ping(comm, msg)
    guess = max(MPI.Wtime() - t0, 1e-7)
    n = int(np.clip(params["lat_budget"] / guess, params["lat_min"], params["lat_max"]))
    return comm.bcast(n, root=0)


def repeat_streams(
    comm: MPI.Comm, params: dict, msg: np.ndarray, window: int, ack: np.ndarray
) -> list[float]:
    """Repeat one window for about ``bw_budget`` seconds; rank 0 decides when to stop."""
    times: list[float] = []
    start = MPI.Wtime()
    while True:
        t0 = MPI.Wtime()
        stream(comm, msg, window, ack)
        times.append(MPI.Wtime() - t0)
        more = len(times) < params["bw_max"] and (
            len(times) < params["bw_min"] or MPI.Wtime() - start < params["bw_budget"]
        )
        if not comm.bcast(more, root=0):
            return times


def main(params_path: str) -> None:
    params = json.loads(Path(params_path).read_text())
    use_numpy_hugepages(params["numpy_hugepages"])
    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        raise SystemExit(f"_mpi_peer.py: expected 2 ranks, found {comm.Get_size()}")
    rank = comm.Get_rank()
    largest = max(params["sizes"])
    buf = np.empty(largest, dtype=np.uint8)
    buf[:] = pattern(largest, 3) if rank == 1 else 0  # touch every page before timing
    ack = np.zeros(1, dtype=np.uint8)
    lat, bw = {}, {}
    for size in params["sizes"]:
        msg = buf[:size]
        comm.Barrier()
        for _ in range(3):
            ping(comm, msg)
        n = agree_count(comm, msg, params)
        rtts = []
        for _ in range(n):
            t0 = MPI.Wtime()
            ping(comm, msg)
            rtts.append(MPI.Wtime() - t0)
        window = int(np.clip(params["bw_bytes"] // size, 1, WINDOW))
        stream(comm, msg, window, ack)  # warm-up
        reps = repeat_streams(comm, params, msg, window, ack)
        if rank == 0:
            s = stats(rtts)
            lat[str(size)] = {"rtt": s, "one_way_median": s["median"] / 2}
            r = stats(reps)
            bw[str(size)] = {
                "bandwidth": window * size / r["median"],
                "window": window,
                "rep_seconds": r,
            }
    if rank == 0:
        result = {
            "lat": lat,
            "bw": bw,
            "library": MPI.Get_library_version().strip().splitlines()[0],
            "mpi4py": sys.modules["mpi4py"].__version__,
            "ucx": loaded_ucx_version(),
        }
        Path(params["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
