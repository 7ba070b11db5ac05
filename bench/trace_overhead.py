"""What gpupart's NVTX ranges cost when nothing records them: per range, and on a 1-tile get.

    python bench/trace_overhead.py [--blocks 40] [--block 250] [--quiet-wait 600]

* Per range: ``with annotate("fetch.get"): pass`` against an empty call, in this process
  (no profiler attached, so the range is the shared no-op, with or without the ``nvtx``
  package), the least of many repeats.
* On the hot path: a 1-tile ``get`` (8 bytes, a round trip) between two ranks on this
  machine. Rank 0 alternates blocks of gets through ``Fetcher.get`` as it is (one range) and
  through the same method without its range; the owner's ``fetch.serve`` range is there in
  both. The median of each block; per arm, the median over blocks and the median of the
  paired differences (block ``2k+1`` minus block ``2k``), which cancels slow drifts of a
  shared machine.

Each part first waits (up to ``--quiet-wait`` s) for other work to leave the CPUs at most
10% busy, and records how busy they were while it ran (``_peers.CpuMeter``). Prints the
numbers and writes ``bench/out/trace_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers  # noqa: E402


def per_range_ns(repeats: int = 40, number: int = 200_000) -> dict[str, float]:
    """Nanoseconds of an empty ``with annotate(...)`` and of an empty call."""
    from gpupart import trace

    def ranged() -> None:
        with trace.annotate("fetch.get"):
            pass

    def bare() -> None:
        pass

    best: dict[str, float] = {}
    for name, fn in (("range", ranged), ("call", bare)):
        best[name] = min(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e9
    best["range_minus_call"] = best["range"] - best["call"]
    best["live"] = trace.nvtx_domain() is not None
    return best


def _get_without_range(self, handles, out, timeout):
    """``Fetcher.get`` of a job of several ranks, less its ``with annotate(...)``."""
    from gpupart.errors import CommTimeoutError

    with self._engine.helping():
        transfer = self._start(handles, out, timeout, False)
        try:
            return transfer.result(max(transfer.deadline - time.monotonic(), 0.0))
        except CommTimeoutError as exc:
            transfer.abort(exc)
            raise


def worker(blocks: int, block: int) -> None:
    """Rank 1 owns one 8-byte tile; rank 0 gets it in alternating blocks; prints the result."""
    import gpupart
    from gpupart.tiles.fetcher import Fetcher

    rt = gpupart.init()
    handle = rt.allgather(rt.put(np.arange(1, dtype=np.float64)))[1]
    if rt.rank == 0:
        with_range = Fetcher.get
        for _ in range(500):
            rt.get(handle)  # warm: pools, first-call costs
        medians: dict[str, list[float]] = {"with": [], "without": []}
        clock = time.perf_counter
        for b in range(blocks):
            arm = "without" if b % 2 == 0 else "with"
            Fetcher.get = _get_without_range if arm == "without" else with_range
            times = []
            for _ in range(block):
                t0 = clock()
                rt.get(handle)
                times.append(clock() - t0)
            medians[arm].append(float(np.median(times)) * 1e6)
        Fetcher.get = with_range
        print("@result " + json.dumps(medians), flush=True)
    rt.barrier()
    rt.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--block", type=int, default=250)
    parser.add_argument("--quiet-wait", type=float, default=600.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.blocks, args.block)
        return 0
    quiet = {"micro": _peers.wait_until_quiet(args.quiet_wait, 0.1)}
    meter = _peers.CpuMeter()
    micro = per_range_ns()
    contention = {"micro": meter.stop()}
    quiet["get"] = _peers.wait_until_quiet(args.quiet_wait, 0.1)
    meter = _peers.CpuMeter()
    cmd = [sys.executable, "-m", "gpupart", "run", "-n", "2", "--cpu", "--", sys.executable]
    cmd += [str(Path(__file__).resolve()), "--worker", "--blocks", str(args.blocks)]
    cmd += ["--block", str(args.block)]
    load_before = os.getloadavg()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    contention["get"] = meter.stop()
    line = next(x for x in out.stdout.splitlines() if "@result " in x)
    blocks = json.loads(line.split("@result ", 1)[1])
    paired = [w - wo for wo, w in zip(blocks["without"], blocks["with"], strict=True)]
    medians = {arm: float(np.median(v)) for arm, v in blocks.items()}
    report = {
        "per_range_ns": micro,
        "get_1_tile_us": {"block_medians": blocks, "median": medians},
        "paired_difference_us": {"median": float(np.median(paired)), "all": paired},
        "block": args.block,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "quiet": quiet,
        "contention": contention,
        "machine": _peers.machine_info(),
        "versions": _peers.versions(("nvtx",)),
    }
    share = micro["range_minus_call"] / 1e3 / medians["without"]
    report["one_range_share_of_get"] = share
    print(
        f"no-op range: {micro['range_minus_call']:.0f} ns (range {micro['range']:.0f} ns,"
        f" empty call {micro['call']:.0f} ns; nvtx live: {micro['live']})"
    )
    print(
        f"1-tile get: {medians['with']:.1f} µs with the consumer's range,"
        f" {medians['without']:.1f} µs without (medians of {len(paired)} blocks of"
        f" {args.block}); paired difference {np.median(paired):+.2f} µs"
    )
    print(f"one no-op range = {share:.2%} of a get; the round trip has two (get, serve)")
    print(f"CPU use by others while measuring: {contention} (waited: {quiet})")
    outdir = ROOT / "bench" / "out"
    outdir.mkdir(exist_ok=True)
    (outdir / "trace_overhead.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
