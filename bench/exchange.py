"""All-to-all exchange bandwidth and memory: gpupart ``rt.exchange`` against mpi4py ``Alltoallv``.

One command runs both on this machine, for every job size and total, on the same data::

    python bench/exchange.py [--ranks 2,3] [--totals 64M,256M,1G] [--reps 5] [--quick]

* Data: rank ``r`` sends ``total`` bytes in all, split into one piece per rank at random
  (seeded by ``(n, total, r)``: weights from 0.1-1.0, normalised: 5-91% of the total), each a
  slice of one ``uint8`` send buffer filled with a value that names ``(r, d)``. Both sides
  check every byte they received once (on the warm-up call), outside the timing.
* gpupart: ``gpupart run -n N --cpu -- python bench/exchange.py --worker PARAMS.json``;
  ``rt.exchange(pieces)`` returns new arrays (the own piece is returned as is).
* MPI: ``mpiexec -n N python bench/exchange.py --mpi-worker PARAMS.json``;
  ``comm.Alltoallv`` of the same counts, into one receive buffer allocated and touched once
  before the repetitions (``reused``, the usual MPI pattern) and into a new ``np.empty``
  buffer in every call (``fresh``, like gpupart's results: first-touch page faults
  included). MPI runs with its own defaults (the ``bench`` extra's MPICH 3.4: shared memory
  on one machine; see ``_peers.run_mpi``).

Timing: every repetition starts after a barrier; each rank times its own call; the
repetition takes as long as the slowest rank. Bandwidth = bytes a rank receives from the
other ranks (mean over ranks) / that time. Median, min and max over ``--reps`` repetitions.

Memory: before each repetition the previous result is dropped, ``malloc_trim(0)`` returns
freed heap memory to the system and ``/proc/self/clear_refs`` resets the peak resident set
(``VmHWM``) to the current one (``VmRSS``). Peak extra = ``VmHWM`` after the call - ``VmRSS``
before it - the bytes of the result that are new memory (gpupart: pieces from other ranks;
MPI fresh: the whole receive buffer; MPI reused: nothing). So it is what the call needed
beyond its inputs and its outputs: staging, bounce buffers, metadata, threads' allocations.
The largest over ranks per repetition; median, min and max over repetitions.

Writes ``DIR/exchange-<tls>[-quick][-partial].json`` (machine, versions, environment, every
sample, the summary) and prints two tables (``--markdown`` for RESULTS.md; ``--from-json``
reprints them).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers
from _peers import MiB, fmt_size, parse_size, stats

TARGET = 0.8  # gpupart >= 0.8 x MPI
BUSY_WARN = 0.1  # other processes using more of the CPUs than this make a part "contended"
#: ``--tls`` choices: fetch.py's, and ``nocma`` (what gpupart uses when UCX_TLS is unset:
#: every transport but CMA) so that MPI can run on the same transports.
TLS_CHOICES = _peers.TLS_CHOICES
SEED = 20261201


# -- data and measurement (both workers) ----------------------------------------------------


def counts_matrix(n: int, total: int) -> np.ndarray:
    """``counts[s, d]``: bytes rank ``s`` sends rank ``d``; each row sums to ``total``."""
    counts = np.zeros((n, n), dtype=np.int64)
    for s in range(n):
        weights = np.random.default_rng([SEED, n, total, s]).uniform(0.1, 1.0, n)
        row = np.floor(weights / weights.sum() * total).astype(np.int64)
        row[-1] += total - row.sum()
        counts[s] = row
    return counts


def fill_value(s: int, d: int) -> int:
    return (s * 31 + d * 7 + 1) % 251


def send_buffer(rank: int, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The send buffer (every page touched) and the displacement of each destination's piece."""
    displs = np.concatenate([[0], np.cumsum(counts[rank])[:-1]]).astype(np.int64)
    buf = np.empty(int(counts[rank].sum()), dtype=np.uint8)
    for d, (lo, c) in enumerate(zip(displs, counts[rank], strict=True)):
        buf[lo : lo + c] = fill_value(rank, d)
    return buf, displs


def check_piece(piece: np.ndarray, src: int, dst: int, count: int) -> str | None:
    if piece.size != count:
        return f"piece {src}->{dst}: {piece.size} bytes, expected {count}"
    v = fill_value(src, dst)
    if count and not (piece.min() == v and piece.max() == v):
        return f"piece {src}->{dst}: wrong bytes"
    return None


_LIBC = None


def reset_memory() -> int:
    """Drop freed heap memory, reset the peak RSS to the current one; returns VmRSS (bytes)."""
    global _LIBC
    gc.collect()
    if _LIBC is None:
        _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def _status(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) * 1024 if m else -1


def peak_rss() -> int:
    return _status("VmHWM")


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread, user and system."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def start_clock() -> tuple[float, float]:
    return time.perf_counter(), cpu_seconds()


def sample(start: tuple[float, float], received: int, rss0: int, new_bytes: int) -> list[float]:
    """One rank's record of one call begun at ``start`` (:func:`start_clock`), just ended.

    ``[seconds, bytes received, peak extra bytes, CPU seconds]``.
    """
    seconds, cpu = time.perf_counter() - start[0], cpu_seconds() - start[1]
    return [seconds, float(received), float(peak_rss() - rss0 - new_bytes), cpu]


def summarize_part(per_rank: list[list[list[float]]]) -> dict[str, Any]:
    """``per_rank[r][i]``: a :func:`sample` -> bandwidth, memory and CPU statistics."""
    a = np.asarray(per_rank, dtype=np.float64)  # ranks x reps x 4
    seconds = a[:, :, 0].max(axis=0)  # the repetition lasts as long as its slowest rank
    received = a[:, :, 1].mean(axis=0)
    extra = a[:, :, 2].max(axis=0)
    bw = received / seconds
    return {
        "bandwidth": stats(bw.tolist()),
        "seconds": stats(seconds.tolist()),
        "received_per_rank": float(received[0]),
        "peak_extra_bytes": stats(extra.tolist()),
        "cpu_seconds_per_rank": stats(a[:, :, 3].mean(axis=0).tolist()),
        "samples": a.tolist(),
    }


# -- gpupart worker ---------------------------------------------------------------------------


def worker(params_path: str) -> None:
    import gpupart

    params = json.loads(Path(params_path).read_text())
    rt = gpupart.init()
    rank, n = rt.rank, rt.size
    out: dict[str, Any] = {"totals": {}, "errors": []}
    for total in params["totals"]:
        counts = counts_matrix(n, total)
        buf, displs = send_buffer(rank, counts)
        pieces = [buf[lo : lo + c] for lo, c in zip(displs, counts[rank], strict=True)]
        got = rt.exchange(pieces)  # warm-up, checked
        out["errors"] += [
            e
            for src in range(n)
            if (e := check_piece(got[src], src, rank, int(counts[src, rank]))) is not None
        ]
        received = int(sum(counts[src, rank] for src in range(n) if src != rank))
        samples = []
        for _ in range(params["reps"]):
            got = None
            rss0 = reset_memory()
            rt.barrier()
            t0 = start_clock()
            got = rt.exchange(pieces)
            samples.append(sample(t0, received, rss0, received))
        got = None
        everyone = rt.allgather(samples)
        if rank == 0:
            out["totals"][str(total)] = summarize_part(everyone)
        if params["diagnose"]:
            everyone = rt.allgather(_prefaulted(rt, pieces, counts, received, params["reps"]))
            if rank == 0:
                out.setdefault("prefaulted", {})[str(total)] = summarize_part(everyone)
        del pieces, buf
    if rank == 0:
        out["options"] = {"exchange_window": rt.options.exchange_window}
        out["ucx"] = _peers.loaded_ucx_version()
        Path(params["result"]).write_text(json.dumps(out))
    rt.close()


def _prefaulted(rt, pieces: list, counts: np.ndarray, received: int, reps: int) -> list:
    """Diagnostic: the same exchanges, receive buffers taken from memory touched beforehand.

    Replaces the exchange's private buffer allocation (``rt._exchange._allocate``) for this
    measurement only, so that the difference to the real call is the cost of new memory
    (page faults on first touch), which ``rt.exchange`` pays by design: it returns new arrays.
    """
    rank, n = rt.rank, rt.size
    pool: dict[tuple[int, ...], list[np.ndarray]] = {}
    for src in range(n):
        if src != rank and counts[src, rank]:
            c = int(counts[src, rank])
            pool.setdefault((c,), []).append(np.ones(c, dtype=np.uint8))
    ex = rt._exchange
    allocate, taken = ex._allocate, {}

    def pooled(dtype: str, shape: tuple[int, ...], order: str, on_host: bool) -> np.ndarray:
        bufs = pool.get(tuple(shape))
        if bufs is None or np.dtype(dtype) != np.uint8:
            return allocate(dtype, shape, order, on_host)
        i = taken.get(tuple(shape), 0)
        taken[tuple(shape)] = i + 1
        return bufs[i % len(bufs)]

    ex._allocate = pooled
    samples = []
    try:
        for _ in range(reps):
            taken.clear()
            rss0 = reset_memory()
            rt.barrier()
            t0 = start_clock()
            rt.exchange(pieces)
            samples.append(sample(t0, received, rss0, 0))
    finally:
        ex._allocate = allocate
    return samples


# -- MPI worker -------------------------------------------------------------------------------


def mpi_worker(params_path: str) -> None:
    from mpi4py import MPI

    params = json.loads(Path(params_path).read_text())
    comm = MPI.COMM_WORLD
    rank, n = comm.Get_rank(), comm.Get_size()
    out: dict[str, Any] = {"totals": {}, "errors": []}
    for total in params["totals"]:
        counts = counts_matrix(n, total)
        buf, displs = send_buffer(rank, counts)
        rcounts = counts[:, rank].copy()
        rdispls = np.concatenate([[0], np.cumsum(rcounts)[:-1]]).astype(np.int64)
        send = [buf, (counts[rank].tolist(), displs.tolist()), MPI.BYTE]

        def alltoallv(recv: np.ndarray, send=send, rcounts=rcounts, rdispls=rdispls) -> None:
            comm.Alltoallv(send, [recv, (rcounts.tolist(), rdispls.tolist()), MPI.BYTE])

        recv = np.zeros(int(rcounts.sum()), dtype=np.uint8)  # touched: the reused buffer
        alltoallv(recv)  # warm-up, checked
        out["errors"] += [
            e
            for src in range(n)
            if (
                e := check_piece(
                    recv[rdispls[src] : rdispls[src] + rcounts[src]], src, rank, int(rcounts[src])
                )
            )
            is not None
        ]
        received = int(sum(rcounts[src] for src in range(n) if src != rank))
        parts: dict[str, Any] = {}
        for variant in ("reused", "fresh"):
            samples = []
            for _ in range(params["reps"]):
                fresh = None
                rss0 = reset_memory()
                comm.Barrier()
                t0 = start_clock()
                if variant == "fresh":
                    fresh = np.empty(int(rcounts.sum()), dtype=np.uint8)
                    alltoallv(fresh)
                else:
                    alltoallv(recv)
                new = int(rcounts.sum()) if variant == "fresh" else 0
                samples.append(sample(t0, received, rss0, new))
            fresh = None
            everyone = comm.gather(samples, root=0)
            if rank == 0:
                parts[variant] = summarize_part(everyone)
        if rank == 0:
            out["totals"][str(total)] = parts
        del recv, buf, send, alltoallv
    errors = comm.gather(out["errors"], root=0)
    if rank == 0:
        out["errors"] = [e for errs in errors for e in errs]
        out["library"] = MPI.Get_library_version().strip().splitlines()[0]
        out["mpi4py"] = sys.modules["mpi4py"].__version__
        out["ucx"] = _peers.loaded_ucx_version()
        Path(params["result"]).write_text(json.dumps(out))


# -- the driver -------------------------------------------------------------------------------


def run_gpupart(n: int, params: dict, env: dict[str, str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpupart-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        params_path = Path(tmp) / "params.json"
        params_path.write_text(json.dumps(dict(params, result=str(result_path))))
        cmd = [sys.executable, "-m", "gpupart", "run", "-n", str(n), "--cpu"]
        cmd += ["--timeout", str(int(timeout)), "--", sys.executable, str(Path(__file__))]
        cmd += ["--worker", str(params_path)]
        status, out = _peers.run(cmd, env, timeout + 30)
        if status == 0 and result_path.exists():
            return json.loads(result_path.read_text())
        return {"error": f"gpupart run exited with status {status}", "output": _peers.tail(out, 40)}


def run_mpi(n: int, params: dict, env: dict[str, str], timeout: float) -> dict:
    exe = _peers.mpiexec()
    if exe is None:
        return {"skipped": "mpiexec not found (pip install mpich mpi4py)"}
    cmd = [exe, "-n", str(n), sys.executable, str(Path(__file__)), "--mpi-worker"]
    return _peers._run_json_peer(cmd, params, env, timeout)


def run_part(name: str, runner, args: argparse.Namespace) -> dict:
    """Run one part; rerun it (``--retries``) while other processes shared the CPUs.

    Before each attempt, wait (up to ``--quiet-wait`` s) for other work to leave the CPUs
    idle. Returns the least contended attempt, with every attempt's CPU record.
    """
    attempts = []
    for attempt in range(1 + args.retries):
        quiet = _peers.wait_until_quiet(args.quiet_wait, BUSY_WARN)
        print(f"[bench] {name} (attempt {attempt + 1}) ...", file=sys.stderr, flush=True)
        t0, meter = time.monotonic(), _peers.CpuMeter()
        res = runner()
        res["cpu"] = dict(meter.stop(), **quiet)
        res["wall_seconds"] = round(time.monotonic() - t0, 1)
        status = res.get("skipped") or res.get("error") or "ok"
        print(
            f"[bench] {name}: {status} ({res['wall_seconds']} s, other processes used"
            f" {res['cpu']['others']:.0%} of the CPUs)",
            file=sys.stderr,
            flush=True,
        )
        if "output" in res and "error" in res:
            print(res["output"], file=sys.stderr)
        attempts.append(res)
        if res["cpu"]["others"] <= BUSY_WARN or "skipped" in res or "error" in res:
            break
    best = min(attempts, key=lambda r: r["cpu"]["others"])
    best["attempts_cpu"] = [a["cpu"] for a in attempts]
    return best


def summarize(report: dict) -> list[dict]:
    """One row per (ranks, total): bandwidths, ratios, memory, CPU time."""
    rows = []
    for n_key, parts in report["results"].items():
        gp, mpi = parts.get("gpupart", {}), parts.get("mpi", {})
        for total in report["args"]["totals"]:
            m = mpi.get("totals", {}).get(str(total), {})
            row: dict[str, Any] = {"ranks": int(n_key), "total": total}
            for name, part in (
                ("gpupart", gp.get("totals", {}).get(str(total))),
                ("gpupart_prefaulted", gp.get("prefaulted", {}).get(str(total))),
                ("mpi_reused", m.get("reused")),
                ("mpi_fresh", m.get("fresh")),
            ):
                if part:
                    row[name] = {k: v for k, v in part.items() if k != "samples"}
            for ref in ("mpi_reused", "mpi_fresh"):
                if "gpupart" in row and ref in row:
                    ratio = row["gpupart"]["bandwidth"]["median"] / row[ref]["bandwidth"]["median"]
                    row[f"ratio_{ref}"] = ratio
            if "ratio_mpi_reused" in row:
                row["pass"] = row["ratio_mpi_reused"] >= TARGET
            rows.append(row)
    return rows


def _spread(b: dict | None, key: str, scale: float, fmt: str) -> str:
    """``median (min-max)`` of statistic ``key`` of a part, divided by ``scale``."""
    if not b:
        return "-"
    s = b[key]
    return f"{s['median'] / scale:{fmt}} ({s['min'] / scale:{fmt}}-{s['max'] / scale:{fmt}})"


PARTS = ("gpupart", "gpupart_prefaulted", "mpi_reused", "mpi_fresh")
PART_NAMES = {
    "gpupart": "gpupart",
    "gpupart_prefaulted": "gpupart, pre-touched receive buffers (diagnostic)",
    "mpi_reused": "MPI reused buffer",
    "mpi_fresh": "MPI fresh buffer",
}


def report_tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The bandwidth table and the memory/CPU table: (title, columns, rows)."""
    reps = report["args"]["reps"]
    parts = [p for p in PARTS if any(p in r for r in report["summary"])]
    bw_cols = ["ranks", "sent per rank", "received per rank"]
    bw_cols += [f"{PART_NAMES[p]} GB/s" for p in parts]
    bw_cols += ["gpupart / MPI reused", "target >= 0.8", "gpupart / MPI fresh"]
    mem_cols = ["ranks", "sent per rank"]
    mem_cols += [f"{PART_NAMES[p]} extra MiB" for p in parts if p != "gpupart_prefaulted"]
    mem_cols += [f"{PART_NAMES[p]} CPU s" for p in parts]
    bw_rows, mem_rows = [], []
    for r in report["summary"]:
        recv = next((r[p]["received_per_rank"] for p in parts if p in r), None)
        head = [str(r["ranks"]), fmt_size(r["total"])]
        bw_rows.append(
            [*head, f"{recv / MiB:.0f} MiB" if recv else "-"]
            + [_spread(r.get(p), "bandwidth", 1e9, ".2f") for p in parts]
            + [
                f"{r['ratio_mpi_reused']:.2f}" if "ratio_mpi_reused" in r else "-",
                ("PASS" if r["pass"] else "FAIL") if "pass" in r else "-",
                f"{r['ratio_mpi_fresh']:.2f}" if "ratio_mpi_fresh" in r else "-",
            ]
        )
        mem_rows.append(
            head
            + [
                _spread(r.get(p), "peak_extra_bytes", MiB, ".1f")
                for p in parts
                if p != "gpupart_prefaulted"
            ]
            + [_spread(r.get(p), "cpu_seconds_per_rank", 1, ".3f") for p in parts]
        )
    return [
        (
            f"Bandwidth per rank, GB/s (bytes received from the other ranks / time of the"
            f" slowest rank), median (min-max) of {reps} repetitions",
            bw_cols,
            bw_rows,
        ),
        (
            "Peak extra memory per rank (largest rank; MiB) and CPU seconds per rank (mean over"
            f" ranks, all threads) per call, median (min-max) of {reps} repetitions",
            mem_cols,
            mem_rows,
        ),
    ]


def print_report(report: dict, *, markdown: bool = False) -> None:
    for title, cols, rows in report_tables(report):
        if markdown:
            print(f"\n**{title}**\n")
            print("| " + " | ".join(cols) + " |")
            print("|" + "|".join("---" if i == 0 else "--:" for i in range(len(cols))) + "|")
            for row in rows:
                print("| " + " | ".join(row) + " |")
        else:
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
            print(f"\n{title}")
            print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
            for row in rows:
                print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
    print()
    for note in report["notes"]:
        print(f"note: {note}" + ("  " if markdown else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="2,3", help="job sizes (default 2,3)")
    parser.add_argument(
        "--totals", help="bytes each rank sends (default 64M,256M,1G; --quick: 64M)"
    )
    parser.add_argument("--reps", type=int, help="timed repetitions (default 5; --quick 3)")
    parser.add_argument("--quick", action="store_true", help="one total, 3 repetitions (< 60 s)")
    parser.add_argument(
        "--tls",
        choices=sorted(TLS_CHOICES),
        default="default",
        help="UCX_TLS for both: default (unset: gpupart then leaves CMA out, MPI uses it),"
        " nocma (^cma), shm (sm,self), tcp (tcp,self)",
    )
    parser.add_argument("--peers", default="gpupart,mpi", help="which to run (gpupart,mpi)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        metavar="SECONDS",
        help="before each part, wait up to this long for other work to leave the CPUs idle"
        " (default 60, --quick 0)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="rerun a part up to N times while other processes shared the CPUs (default 2,"
        " --quick 0); the least contended attempt is kept",
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also time gpupart with its receive buffers taken from memory touched beforehand"
        " (a diagnostic: the difference is the cost of new memory)",
    )
    parser.add_argument("--from-json", metavar="JSON", help="print the table of a JSON; no run")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--worker", metavar="PARAMS", help=argparse.SUPPRESS)
    parser.add_argument("--mpi-worker", metavar="PARAMS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.mpi_worker:
        mpi_worker(args.mpi_worker)
        return 0
    if args.from_json:
        print_report(json.loads(Path(args.from_json).read_text()), markdown=args.markdown)
        return 0
    try:
        ranks = sorted({int(x) for x in args.ranks.split(",")})
        totals = sorted(
            {
                parse_size(x)
                for x in (args.totals or ("64M" if args.quick else "64M,256M,1G")).split(",")
            }
        )
    except ValueError as exc:
        parser.error(str(exc))
    if any(n < 2 for n in ranks):
        parser.error("--ranks: an exchange between processes needs at least 2 ranks")
    reps = args.reps or (3 if args.quick else 5)
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if set(peers) - {"gpupart", "mpi"}:
        parser.error(f"--peers: unknown {sorted(set(peers) - {'gpupart', 'mpi'})}")
    ucx_tls = TLS_CHOICES[args.tls]
    env = _peers.peer_env(ucx_tls, {})
    params = {"totals": totals, "reps": reps, "diagnose": args.diagnose}
    timeout = 120.0 if args.quick else 1200.0
    report: dict[str, Any] = {
        "schema": 1,
        "benchmark": "bench/exchange.py",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": {
            "diagnose": args.diagnose,
            "quiet_wait": args.quiet_wait,
            "retries": args.retries,
            "ranks": ranks,
            "totals": totals,
            "reps": reps,
            "quick": args.quick,
            "tls": args.tls,
            "peers": peers,
        },
        "env": {"UCX_TLS": ucx_tls},
        "machine": _peers.machine_info(),
        "versions": _peers.versions(),
        "params": dict(params, seed=SEED),
        "results": {},
        "notes": [],
    }
    t_all = time.monotonic()
    for n in ranks:
        parts: dict[str, Any] = {}
        for name in peers:
            runner = run_gpupart if name == "gpupart" else run_mpi
            res = run_part(
                f"{name}, {n} ranks", lambda r=runner, n=n: r(n, params, env, timeout), args
            )
            for key in ("skipped", "error"):
                if key in res:
                    report["notes"].append(f"{name} at {n} ranks {key}: {res[key]}")
            for err in res.get("errors", []):
                report["notes"].append(f"{name} at {n} ranks: {err}")
            if res["cpu"]["others"] > BUSY_WARN:
                report["notes"].append(
                    f"{name} at {n} ranks: other processes used {res['cpu']['others']:.0%} of"
                    " the CPUs meanwhile; its numbers are likely pessimistic"
                )
            parts[name] = res
        report["results"][str(n)] = parts
    report["wall_seconds"] = round(time.monotonic() - t_all, 1)
    report["machine"]["loadavg_end"] = _peers.load_average()
    for parts in report["results"].values():
        with contextlib.suppress(KeyError):
            report["versions"]["mpi_library"] = parts["mpi"]["library"]
            report["versions"]["ucx_runtime_mpi"] = parts["mpi"]["ucx"]
    report["notes"].append(
        "bandwidth: bytes a rank receives from the other ranks / the slowest rank's time;"
        " extra memory: peak RSS during the call - RSS before - new result memory (largest rank)"
    )
    report["notes"].append(
        "MPI runs with its own defaults (the bench extra's MPICH 3.4: ch3, shared memory)"
    )
    if ucx_tls is None:
        report["notes"].append(
            "UCX_TLS unset: gpupart leaves CMA out by default (a reader's CMA copy aborts when"
            " its owner dies)"
        )
    report["summary"] = summarize(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "-".join(
        ["exchange", args.tls]
        + (["quick"] if args.quick else [])
        + (["partial"] if args.totals or args.ranks != "2,3" or args.peers != "gpupart,mpi" else [])
    )
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    print_report(report, markdown=args.markdown)
    print(f"wrote {out / stem}.json in {report['wall_seconds']:.0f} s", file=sys.stderr)
    failed = any("error" in p.get("gpupart", {}) for p in report["results"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
