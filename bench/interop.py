"""Interop: moving data between gpupart and the systems beside it, against the usual way.

One command runs every comparison on this machine::

    python bench/interop.py [--size 1G] [--ranks 2] [--reps 3] [--only dask] [--quick]

Each comparison is one function (``COMPARISONS``) that returns rows of the same shape (an
operation, gpupart's times, the peer's times and what the peer does); the table and
``DIR/interop[-quick].json`` are made from those rows.

* ``dask`` (:func:`compare_dask`): a float64 array of ``--size`` bytes (``--chunks`` row
  chunks, 128 columns) persisted on a ``LocalCluster`` of RANKS single-threaded worker
  processes, and a gpupart job of RANKS ranks, each a Dask client of that scheduler
  (``gpupart run -n RANKS -- python bench/interop.py --worker PARAMS.json``).

  - *into gpupart*: ``gpupart.interop.dask.to_partitioned`` + ``gpupart.from_partitioned``
    (each rank gathers its own chunks straight from the workers) against ``client.gather``
    of every chunk to rank 0 (also straight from the workers), concatenated there and
    redistributed with ``gpupart.asarray(whole, root=0)`` in the same tiles.
  - *back to Dask*: ``gpupart.interop.dask.to_dask`` (each rank scatters its tiles; every
    rank gets the collection) against ``x.gather(root=0)`` and one ``client.scatter`` of the
    chunks from rank 0 (the collection on rank 0 only).

  Each is timed from a barrier until every rank has its part (the slowest rank's time),
  once untimed, then ``--reps`` times; the median is reported with min/max, and the speed-up
  of gpupart over the peer (peer time / gpupart time).
* ``xgboost`` (``interop_xgboost.compare_xgboost``): XGBoost training from gpupart's tiles
  (``gpupart.interop.xgboost.train``, RANKS ranks) against ``xgboost.dask`` on a
  ``LocalCluster`` of RANKS single-threaded workers, on the same data (see that module; it
  also runs alone with its own options).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers
from interop_xgboost import compare_xgboost

COLUMNS = 128  # of the dask comparison's array


# == dask ==================================================================================


def dask_worker(params: dict) -> dict:
    """One gpupart rank of the dask comparison (a Dask client): time both ways, both paths."""
    import resource

    from distributed import Client, futures_of

    import gpupart
    from gpupart.interop import dask as gd

    rt = gpupart.init()
    client = Client(params["scheduler"], timeout=60)
    source = client.get_dataset(params["dataset"])
    chunk_rows = params["chunk_rows"]
    held: dict[str, Any] = {}

    by_key = {f.key: f for f in futures_of(source)}
    ordered = [by_key[row[0]] for row in source.__dask_keys__()]  # row chunks, in order

    # each call first drops what the previous one made (the same cost on both sides)
    def into_gpupart() -> None:
        held.pop("x", None)
        held["x"] = gpupart.from_partitioned(gd.to_partitioned(source, client))

    def gather_and_redistribute() -> None:
        held.pop("y", None)
        whole = None
        if rt.rank == 0:
            whole = np.concatenate(client.gather(ordered, direct=True))
        held["y"] = gpupart.asarray(whole, root=0, tiles=(chunk_rows, COLUMNS))

    def back_to_dask() -> None:
        held.pop("back", None)
        held["back"] = gd.to_dask(held["x"], client)

    def gather_and_scatter() -> None:
        held.pop("back", None)
        whole = held["x"].gather(root=0)
        if rt.rank == 0:
            cuts = range(0, whole.shape[0], chunk_rows)
            held["back"] = client.scatter([whole[a : a + chunk_rows] for a in cuts], direct=True)

    result: dict[str, Any] = {"ranks": rt.size, "times": {}}
    ops: dict[str, Callable[[], None]] = {
        "into gpupart": into_gpupart,
        "into gpupart (peer)": gather_and_redistribute,
        "back to dask": back_to_dask,
        "back to dask (peer)": gather_and_scatter,
    }
    for name, fn in ops.items():
        times, _ = _peers.time_calls(fn, params["reps"], rt.barrier)
        result["times"][name] = [max(t) for t in zip(*rt.allgather(times), strict=True)]
    for pos, tile in held["x"].local_tiles.items():  # both ways into gpupart agree
        np.testing.assert_array_equal(tile, held["y"].local_tiles[pos])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    result["peak_rss_per_rank"] = rt.allgather(int(peak))
    held.clear()
    client.close()
    rt.close()
    return result


def compare_dask(args: argparse.Namespace, env: dict[str, str]) -> dict:
    """The dask comparison (see the module docstring): its rows and details."""
    import dask.array as da
    from distributed import Client, LocalCluster

    rows_total = max(args.size // (8 * COLUMNS), args.chunks)
    chunk_rows = -(-rows_total // args.chunks)
    params = {"ranks": args.ranks, "reps": args.reps, "chunk_rows": chunk_rows}
    params["dataset"] = "gpupart-bench-interop"
    with (
        LocalCluster(
            n_workers=args.ranks,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        x = da.random.default_rng(20261201).random(
            (rows_total, COLUMNS), chunks=(chunk_rows, COLUMNS)
        )
        x = client.persist(x)
        client.wait_for_workers(args.ranks, timeout=120)
        from distributed import wait

        wait(x, timeout=600)
        client.publish_dataset(**{params["dataset"]: x})
        params["scheduler"] = cluster.scheduler_address
        result = _peers.run_worker_job(
            __file__, dict(params, comparison="dask"), env, timeout=3600, cpu=True
        )
    details = {"params": dict(params, bytes=int(x.nbytes), chunks=args.chunks), **result}
    if "error" in result:
        return {"rows": [], "details": details}
    times = result["times"]
    peer_names = {
        "into gpupart": "client.gather to rank 0 + gpupart.asarray(root=0)",
        "back to dask": "x.gather(root=0) + client.scatter from rank 0",
    }
    rows = [
        {
            "comparison": "dask",
            "op": op,
            "bytes": int(x.nbytes),
            "gpupart": _peers.stats(times[op]),
            "peer_name": peer_names[op],
            "peer": _peers.stats(times[f"{op} (peer)"]),
        }
        for op in peer_names
    ]
    return {"rows": rows, "details": details}


# == the report ============================================================================

COMPARISONS: dict[str, Callable[[argparse.Namespace, dict[str, str]], dict]] = {
    "dask": compare_dask,
    "xgboost": compare_xgboost,
}
WORKERS: dict[str, Callable[[dict], dict]] = {"dask": dask_worker}


def worker(params_path: str) -> None:
    """A rank of some comparison's gpupart job; rank 0 writes the result."""
    params = json.loads(Path(params_path).read_text())
    result = WORKERS[params["comparison"]](params)
    if int(os.environ.get("GPUPART_RANK", "0")) == 0:
        Path(params["result"]).write_text(json.dumps(result))


def _cell(stats: dict | None) -> str:
    return f"{stats['median']:.3f} ({stats['min']:.3f}-{stats['max']:.3f})" if stats else "-"


def print_report(report: dict) -> None:
    print(
        f"\nInterop, {report['params']['ranks']} ranks (seconds, median (min-max); speed-up ="
        " peer / gpupart)\n"
    )
    head = ["comparison", "operation", "GB/s gpupart", "gpupart", "peer", "peer (s)", "speed-up"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i < 2 else "--:" for i in range(len(head))) + "|")
    for row in report["rows"]:
        ours, peer = row["gpupart"], row["peer"]
        rate = f"{row['bytes'] / ours['median'] / 1e9:.2f}" if "bytes" in row else "-"
        cells = [row["comparison"], row["op"], rate, _cell(ours), row["peer_name"], _cell(peer)]
        cells.append(f"{peer['median'] / ours['median']:.2f}x")
        print("| " + " | ".join(cells) + " |")
    for name, result in report["comparisons"].items():
        cpu = result.get("cpu", {})
        print(
            f"{name}: CPUs busy {cpu.get('busy_before')} before (waited"
            f" {cpu.get('waited_seconds')} s), {cpu.get('others')} of them others' while it ran"
        )
        details = result.get("details", {})
        if "error" in details:
            print(f"{name}: {details['error']}\n{details.get('output', '')}")
        if "peak_rss_per_rank" in details:
            rss = ", ".join(f"{b / 1e9:.2f} GB" for b in details["peak_rss_per_rank"])
            print(f"{name}: peak RSS per rank {rss}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=_peers.parse_size, default="1G", help="bytes to move")
    parser.add_argument("--chunks", type=int, default=16, help="row chunks of the array")
    parser.add_argument("--ranks", type=int, default=2, help="gpupart ranks and dask workers")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions")
    parser.add_argument("--quick", action="store_true", help="1/16 of --size, 2 repetitions")
    parser.add_argument("--only", default=",".join(COMPARISONS), help="comparisons to run")
    parser.add_argument("--out", default="bench/out", help="where the JSON goes")
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="seconds to wait for idle CPUs first"
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.quick:
        args.size, args.reps = args.size // 16, 2
    chosen = [c for c in args.only.split(",") if c]
    unknown = sorted(set(chosen) - set(COMPARISONS))
    if unknown:
        parser.error(f"--only: expected some of {', '.join(COMPARISONS)}, found {unknown}")
    report: dict[str, Any] = {
        "params": {"size": args.size, "ranks": args.ranks, "reps": args.reps},
        "machine": _peers.machine_info(),
        "versions": _peers.versions(("distributed", "ray", "xgboost")),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "comparisons": {},
        "rows": [],
    }
    env = _peers.peer_env(None, {})
    for name in chosen:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        quiet = _peers.wait_until_quiet(args.quiet_wait, 0.25)
        meter = _peers.CpuMeter()
        try:
            result = COMPARISONS[name](args, env)
        except Exception as exc:  # one comparison failing must not lose the others' numbers
            result = {"rows": [], "details": {"error": f"{type(exc).__name__}: {exc}"[:300]}}
        result["cpu"] = {**quiet, **meter.stop()}
        report["comparisons"][name] = result
        report["rows"].extend(result["rows"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"interop{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
