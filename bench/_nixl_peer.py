"""NIXL peer of ``bench/fetch.py``: one-sided READ, the owner not involved.

Two processes: ``role=target`` registers a pool of host memory filled with a known pattern,
writes its agent metadata and the pool's address to ``rendezvous/target.pkl`` and waits for
``rendezvous/done``; ``role=initiator`` loads that metadata and, for every size ``S``:

* latency: one READ of ``S`` bytes through a transfer handle prepared once
  (``make_prepped_xfer``), reposted and polled to completion (``transfer`` +
  ``check_xfer_state``), ``lat_budget`` seconds of repetitions;
* bandwidth: one READ handle of ``k`` descriptors of ``S`` bytes each (``k`` as for gpupart),
  posted and polled to completion, repeated for ``bw_budget`` seconds.

Descriptors are ``S + 64`` bytes apart in both pools, so NIXL cannot merge neighbours into
one larger transfer (the tiles are distinct). The initiator checks the bytes it read and
writes the JSON result; NIXL import or agent-creation failures are reported as ``skipped``.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import loaded_ucx_version, pattern, stats, tiles_for, timed_loop, use_numpy_hugepages

GAP = 64
SALT = 5


def post(agent, handle, size: int) -> None:
    """Post a prepared READ and poll it to completion from this thread."""
    state = agent.transfer(handle)
    while state == "PROC":
        state = agent.check_xfer_state(handle)
    if state != "DONE":
        raise RuntimeError(f"NIXL READ of {size}-byte descriptors ended in state {state}")


def measure(
    agent,
    remote: str,
    pool: np.ndarray,
    expected: np.ndarray,
    remote_addr: int,
    size: int,
    params: dict,
) -> tuple[dict, dict]:
    """Latency (one descriptor) and bandwidth (k descriptors) of READs of ``size`` bytes."""
    k = tiles_for(size, params)
    offsets = np.arange(k, dtype=np.uint64) * np.uint64(size + GAP)
    descs = np.zeros((k, 3), dtype=np.uint64)
    descs[:, 1] = size
    descs[:, 0] = offsets + np.uint64(pool.ctypes.data)
    local = agent.prep_xfer_dlist("NIXL_INIT_AGENT", descs.copy(), "DRAM")
    descs[:, 0] = offsets + np.uint64(remote_addr)
    far = agent.prep_xfer_dlist(remote, descs, "DRAM")
    one = agent.make_prepped_xfer("READ", local, [0], far, [0])
    many = agent.make_prepped_xfer("READ", local, list(range(k)), far, list(range(k)))
    try:
        for _ in range(3):
            post(agent, one, size)
        times = timed_loop(
            lambda: post(agent, one, size),
            budget=params["lat_budget"],
            min_n=params["lat_min"],
            max_n=params["lat_max"],
        )
        s = stats(times)
        span = int(offsets[-1]) + size
        pool[:span] = 0
        post(agent, many, size)  # warm-up, and the correctness check
        ok = all(
            np.array_equal(pool[o : o + size], expected[o : o + size])
            for o in (int(offsets[0]), int(offsets[k // 2]), int(offsets[-1]))
        )
        reps = timed_loop(
            lambda: post(agent, many, size),
            budget=params["bw_budget"],
            min_n=params["bw_min"],
            max_n=params["bw_max"],
        )
        r = stats(reps)
        return (
            {"rtt": s, "median": s["median"]},
            {"bandwidth": k * size / r["median"], "tiles": k, "rep_seconds": r, "data_ok": ok},
        )
    finally:
        for h in (one, many, local, far):
            h.release()


def main(params_path: str) -> None:
    params = json.loads(Path(params_path).read_text())
    use_numpy_hugepages(params["numpy_hugepages"])
    role = params["role"]
    rdv = Path(params["rendezvous"])
    deadline = time.monotonic() + params["timeout"]

    def report(result: dict) -> None:
        if role == "initiator":
            Path(params["result"]).write_text(json.dumps(result))
        else:
            (rdv / "target.failed").write_text(json.dumps(result))

    try:
        from nixl_cu12 import nixl_agent, nixl_agent_config
    except ImportError as exc:
        report({"skipped": f"nixl cannot be imported: {exc}"})
        return
    pool_bytes = max(tiles_for(s, params) * (s + GAP) for s in params["sizes"])
    pool = np.empty(pool_bytes, dtype=np.uint8)
    expected = pattern(pool_bytes, SALT)
    pool[:] = expected if role == "target" else 0  # touch every page before timing
    try:
        # The target needs a progress thread when UCX emulates READ (tcp); the initiator
        # polls from its own thread.
        agent = nixl_agent(
            role, nixl_agent_config(enable_prog_thread=role == "target", backends=["UCX"])
        )
        reg = agent.register_memory([(pool.ctypes.data, pool_bytes, 0, "")], "DRAM")
    except Exception as exc:  # NIXL raises its own binding errors; all mean "no agent"
        report({"skipped": f"nixl could not create a UCX agent: {type(exc).__name__}: {exc}"})
        return
    if role == "target":
        tmp = rdv / "target.tmp"
        tmp.write_bytes(
            pickle.dumps(
                {"md": agent.get_agent_metadata(), "addr": pool.ctypes.data, "n": pool_bytes}
            )
        )
        tmp.rename(rdv / "target.pkl")
        while not (rdv / "done").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        agent.deregister_memory(reg)
        return

    while not (rdv / "target.pkl").exists():
        if (rdv / "target.failed").exists():
            report(json.loads((rdv / "target.failed").read_text()))
            return
        if time.monotonic() > deadline:
            report({"error": "the NIXL target never published its metadata"})
            return
        time.sleep(0.02)
    info = pickle.loads((rdv / "target.pkl").read_bytes())
    remote = agent.add_remote_agent(info["md"])
    lat, bw, errors = {}, {}, []
    for size in params["sizes"]:
        try:
            lat[str(size)], bw[str(size)] = measure(
                agent, remote, pool, expected, info["addr"], size, params
            )
        except RuntimeError as exc:
            errors.append(str(exc))
        else:
            if not bw[str(size)]["data_ok"]:
                errors.append(f"size {size}: READ returned wrong bytes")
    agent.remove_remote_agent(remote)
    agent.deregister_memory(reg)
    result = {
        "lat": lat,
        "bw": bw,
        "errors": errors,
        "ucx": loaded_ucx_version(),
        "desc_gap": GAP,
        "initiator_progress_thread": False,
        "target_progress_thread": True,
    }
    report(result)


if __name__ == "__main__":
    main(sys.argv[1])
