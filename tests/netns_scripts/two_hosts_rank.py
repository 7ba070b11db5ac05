"""One rank of the two-simulated-hosts job of ``tests/test_netns.py``.

Started as a simulated Slurm step (ranks 0, 1 on the first host, 2, 3 on the second), inside
its host's namespaces. It checks placement, moves one 64 MiB tile per phase with barriers
around it (so one transfer runs at a time) while the first rank of each host reads its host's
interface byte counters before and after, checks the fetched contents and a few collectives
across the hosts, and reports the local addresses of the TCP sockets it listens on (UCX's
and, on rank 0, the coordinator's), then closes the runtime. The last line on stdout is
``RESULT <json>``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

import gpupart

TILE_BYTES = 64 << 20
#: (phase name, owner rank, fetching rank); the test knows which phases cross hosts.
PHASES = (
    ("same-host-a", 0, 1),
    ("cross-a-to-b", 0, 2),
    ("cross-b-to-a", 3, 1),
    ("same-host-b", 2, 3),
)


def counters() -> dict[str, dict[str, int]]:
    """Byte counters of this network namespace's interfaces (``ip netns exec`` remounts /sys)."""
    out = {}
    for dev in sorted(os.listdir("/sys/class/net")):
        stats = Path("/sys/class/net", dev, "statistics")
        out[dev] = {
            "rx": int((stats / "rx_bytes").read_text()),
            "tx": int((stats / "tx_bytes").read_text()),
        }
    return out


def delta(after: dict, before: dict) -> dict[str, dict[str, int]]:
    return {dev: {way: after[dev][way] - before[dev][way] for way in ("rx", "tx")} for dev in after}


def tile_of(rank: int) -> np.ndarray:
    return np.arange(TILE_BYTES // 8, dtype=np.int64) + rank * 10**12


def listening() -> list[str]:
    """``ip:port`` of every TCP socket of this process in LISTEN state (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN, one of ours
                address, port = fields[1].split(":")
                if len(address) == 8:  # IPv4, little-endian hex
                    address = ".".join(str(b) for b in bytes.fromhex(address)[::-1])
                found.append(f"{address}:{int(port, 16)}")
    return found


def check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"rank {os.environ.get('SLURM_PROCID')}: {what}")


def main() -> int:
    with gpupart.init() as rt:
        result = run(rt)
    result["closed"] = rt.closed
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run(rt: gpupart.Runtime) -> dict:
    result: dict = {"rank": rt.rank, "host": rt.host, "pid": os.getpid()}
    result["peers"] = [{"rank": p.rank, "host": p.host, "ip": p.ip, "pid": p.pid} for p in rt.peers]
    result["local"] = [rt.local_rank, rt.local_size]
    check(rt.size == 4, f"size {rt.size}, expected 4")
    check(len({p.host for p in rt.peers}) == 2, f"peers on {[p.host for p in rt.peers]}")

    handles = rt.allgather(rt.put(tile_of(rt.rank)))
    result["handle_hosts"] = [h.location.host for h in handles]
    result["listening"] = listening()

    phases = []
    for name, owner, dst in PHASES:
        rt.barrier()
        before = counters() if rt.local_rank == 0 else None
        rt.barrier()
        if rt.rank == dst:
            got = rt.get(handles[owner], timeout=30)
            check(np.array_equal(got, tile_of(owner)), f"{name}: tile of rank {owner} differs")
            del got
        rt.barrier()
        if before is not None:
            phases.append(
                {"name": name, "owner": owner, "dst": dst, "delta": delta(counters(), before)}
            )
    result["phases"] = phases

    total = rt.allreduce(np.array([rt.rank, 1.0]))
    check(np.array_equal(total, [6.0, 4.0]), f"allreduce sum {total}")
    top = rt.allreduce(np.array([rt.rank], dtype=np.int64), op="max")
    check(int(top[0]) == 3, f"allreduce max {top}")
    hosts = rt.allgather(rt.host)
    check(hosts == [p.host for p in rt.peers], f"allgather {hosts}")
    word = rt.broadcast(f"from {rt.host}", root=3)
    check(word == f"from {rt.peers[3].host}", f"broadcast {word!r}")
    result["collectives"] = {
        "sum": total.tolist(),
        "max": int(top[0]),
        "hosts": hosts,
        "word": word,
    }
    return result


if __name__ == "__main__":
    sys.exit(main())
