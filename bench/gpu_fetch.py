"""Peer fetch between two ranks on one GPU (UCX cuda_ipc) against a CuPy device-to-device copy.

    python bench/gpu_fetch.py                         # two ranks on GPU 0, CuPy tiles
    python bench/gpu_fetch.py --device cpu --quick    # the same with NumPy tiles: a dry run

``gpupart run -n 2`` starts both ranks with ``CUDA_VISIBLE_DEVICES`` narrowed to one GPU (the
first visible one), so the fetch crosses processes but not devices: UCX moves it with
cuda_ipc. Rank 0 owns one ``uint8`` tile per size (``--sizes``); rank 1 fetches each with
``rt.get(handle, out=buffer)`` into a device buffer allocated once: one checked warm-up, then
``--reps`` timed calls, each followed by a device synchronisation. The reference is the same
number of bytes copied device-to-device inside rank 1 (``cupy.copyto``; NumPy's on CPU).

Reported per size: median (min-max) seconds and GB/s of each, and the fetch's bandwidth as a
fraction of the copy's, and the UCX lanes rank 1's endpoint to rank 0 uses (from the job's
transfer summary, ``GPUPART_TRANSFER_SUMMARY``: ``cuda_ipc/cuda`` on a GPU). Writes
``DIR/gpu-fetch-<device>[-quick].json`` (and the summary beside it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers

SIZES = "64K,1M,16M,256M"
QUICK_SIZES = "64K,1M"


def _xp(device: str) -> tuple[Any, Any]:
    """The array module of ``device`` and a function that waits for its pending work."""
    if device == "cuda":
        import cupy

        return cupy, cupy.cuda.runtime.deviceSynchronize
    import numpy

    return numpy, lambda: None


def _tile(xp: Any, size: int) -> Any:
    return (xp.arange(size, dtype=xp.int64) % 251).astype(xp.uint8)


def worker(params_path: str) -> None:
    """Rank 0 owns the tiles; rank 1 fetches and copies them and writes the result."""
    import gpupart

    params = json.loads(Path(params_path).read_text())
    xp, sync = _xp(params["device"])
    rt = gpupart.init(device=params["device"])
    if rt.size != 2:
        raise SystemExit(f"gpu_fetch: expected 2 ranks, found {rt.size}")
    sizes = params["sizes"]
    tiles = [_tile(xp, size) for size in sizes] if rt.rank == 0 else []
    handles = rt.broadcast([rt.put(t) for t in tiles] if rt.rank == 0 else None, root=0)
    if rt.rank == 1:
        result: dict[str, Any] = {"device": str(rt.device), "location": str(rt.location)}
        result["sizes"] = {}
        for size, handle in zip(sizes, handles, strict=True):
            out = xp.empty(size, dtype=xp.uint8)
            expected = _tile(xp, size)
            rt.get(handle, out=out)
            sync()
            if not bool(xp.array_equal(out, expected)):
                raise SystemExit(f"gpu_fetch: the {size}-byte tile arrived corrupted")
            fetch, _ = _peers.time_calls(
                lambda h=handle, o=out: rt.get(h, out=o), params["reps"], sync
            )
            copy, _ = _peers.time_calls(
                lambda o=out, e=expected: xp.copyto(o, e), params["reps"], sync
            )
            result["sizes"][str(size)] = {"fetch": fetch, "copy": copy}
        Path(params["result"]).write_text(json.dumps(result))
    rt.barrier(timeout=600)  # rank 0 serves its tiles until rank 1 is done
    rt.close()


def _lanes(path: Path) -> list[str] | None:
    """The UCX lanes of rank 1's endpoint to rank 0, from the job's transfer summary."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for rank in summary.get("ranks", []):
        if rank.get("rank") == 1:
            for peer in rank.get("peers", []):
                if peer.get("peer") == 0:
                    return peer.get("lanes")
    return None


def summarize(report: dict) -> list[dict]:
    """One row per size: medians, GB/s and the fetch/copy bandwidth ratio."""
    rows = []
    for size, times in report["gpupart"].get("sizes", {}).items():
        fetch, copy = _peers.stats(times["fetch"]), _peers.stats(times["copy"])
        n = int(size)
        rows.append(
            {
                "size": n,
                "fetch": fetch,
                "copy": copy,
                "fetch_gbps": n / fetch["median"] / 1e9,
                "copy_gbps": n / copy["median"] / 1e9,
                "ratio": copy["median"] / fetch["median"],
            }
        )
    return rows


def print_report(report: dict) -> None:
    device = report["params"]["device"]
    peer = "CuPy copy" if device == "cuda" else "NumPy copy"
    print(f"\nPeer fetch between 2 ranks on one {device} device vs {peer} (median (min-max) s)")
    lanes = report.get("lanes")
    print(f"UCX lanes from rank 1 to rank 0: {', '.join(lanes) if lanes else 'not known'}\n")
    print(f"| size | gpupart fetch | GB/s | {peer} | GB/s | fetch/copy bandwidth |")
    print("|---|--:|--:|--:|--:|--:|")
    for row in report["summary"]:
        f, c = row["fetch"], row["copy"]
        print(
            f"| {_peers.fmt_size(row['size'])} | {f['median']:.6f} ({f['min']:.6f}-{f['max']:.6f})"
            f" | {row['fetch_gbps']:.1f} | {c['median']:.6f} ({c['min']:.6f}-{c['max']:.6f})"
            f" | {row['copy_gbps']:.1f} | {row['ratio']:.2f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--sizes", default=None, help=f"tile sizes (default {SIZES})")
    parser.add_argument("--reps", type=int, default=20, help="timed fetches per size")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, 5 reps")
    parser.add_argument("--timeout", type=float, default=300, help="limit for the job, seconds")
    parser.add_argument("--out", default="bench/out", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    params = {
        "ranks": 2,
        "device": args.device,
        "sizes": [_peers.parse_size(s) for s in sizes.split(",")],
        "reps": 5 if args.quick else args.reps,
    }
    extra: dict[str, str] = {}
    if args.device == "cuda":
        first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        extra["CUDA_VISIBLE_DEVICES"] = first  # both ranks on one GPU
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"{args.device}{'-quick' if args.quick else ''}"
    transfers = out / f"transfers-gpu-fetch-{suffix}.json"
    transfers.unlink(missing_ok=True)
    extra["GPUPART_TRANSFER_SUMMARY"] = str(transfers)  # which UCX lanes carried the fetches
    env = _peers.peer_env(None, extra)
    report: dict[str, Any] = {
        "params": params,
        "machine": _peers.machine_info(),
        "versions": _peers.versions(("ucxx-cu13", "libucx-cu13", "cupy-cuda12x", "cupy-cuda13x")),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    report["gpupart"] = _peers.run_worker_job(
        __file__, params, env, args.timeout, cpu=args.device == "cpu"
    )
    path = out / f"gpu-fetch-{suffix}.json"
    report["lanes"] = _lanes(transfers)
    if "error" in report["gpupart"]:
        path.write_text(json.dumps(report, indent=1, default=str))
        print(report["gpupart"]["output"], file=sys.stderr)
        return 1
    report["summary"] = summarize(report)
    path.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
