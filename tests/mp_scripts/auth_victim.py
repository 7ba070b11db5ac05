"""Rank 0 is attacked by an outsider (no token) while it waits in a barrier for rank 1.

Rank 1 starts the outsider (no environment but PYTHONPATH) once rank 0 has published its worker
address, waits for it to finish plus a second, then enters the barrier. Rank 0's barrier must
not pass before rank 1 entered it; no injected code may run; the outsider gets no tile bytes;
no tile bytes of the outsider land in rank 0's fetches.
Emits ``@entered`` (rank 1), ``@passed`` (rank 0), ``@outsider`` (relayed by rank 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _mp import emit, expect, records_in

import gpupart


def listening_addresses() -> list[str]:
    """Local addresses of this process's listening TCP sockets (IPv4 and IPv6, hex)."""
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
                found.append(fields[1].split(":")[0])
    return found


work = Path(sys.argv[1])
rt = gpupart.init(timeout=60)
tile = rt.put(np.arange(512, dtype=np.float64))
handles = rt.allgather(tile)
address_file, marker = work / "address", work / "pwned"
if rt.rank == 0:
    address_file.write_bytes(rt._transport.address)
    emit("listening", rank=0, addresses=listening_addresses())
rt.barrier()
if rt.rank == 1:
    outsider = Path(__file__).with_name("auth_outsider.py")
    run = subprocess.run(
        [sys.executable, str(outsider), str(address_file), str(handles[0].tile_id), str(marker)],
        env={k: v for k, v in os.environ.items() if k == "PYTHONPATH"},  # no token
        capture_output=True,
        text=True,
        timeout=120,
    )
    expect(run.returncode == 0, f"the outsider failed: {run.stdout}{run.stderr}")
    (report,) = records_in(run.stdout, "outsider")
    emit("outsider", **report)
    time.sleep(1.0)
    emit("entered", rank=1, at=time.time())
rt.barrier()
if rt.rank == 0:
    emit("passed", rank=0, at=time.time(), pwned=marker.exists())
# Rank 0's worker holds the outsider's tile bytes (tags of rank 1's DATA): none may land in a
# fetch of rank 1's tiles, alone, into out=, or packed.
mine = np.arange(512.0)
out = np.full(512, -1.0)
got = [rt.get(handles[1 - rt.rank]), rt.get(handles[1 - rt.rank], out=out)]
got += rt.get([handles[1 - rt.rank]] * 5)
expect(all(np.array_equal(g, mine) for g in got), "the job's own tile bytes, no one else's")
rt.barrier()
emit("done", rank=rt.rank, size=rt.size)
rt.close()
