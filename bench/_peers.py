"""Shared helpers of ``bench/fetch.py``: sizes, timing, subprocesses, the peers it compares with.

The peers run as separate process pairs on this machine, one after another, with the same
``UCX_TLS`` as gpupart: ``ucx_perftest`` (``tag_lat``/``tag_bw``, server and client),
mpi4py over MPICH's UCX netmod (``_mpi_peer.py`` under ``mpiexec -n 2``) and NIXL one-sided
READ (``_nixl_peer.py``, a target and an initiator that exchange agent metadata through a
file). Each writes a JSON result; this module starts them, enforces a timeout on every
process it starts and reads the results back.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

#: The environment before anything here imported ucxx, which sets UCX_* variables in
#: ``os.environ`` at import (UCX_RNDV_THRESH, UCX_MEMTYPE_CACHE, ...): peers must not inherit
#: gpupart's transport tuning by accident.
BASE_ENV = dict(os.environ)

#: What ``--tls`` means for ``UCX_TLS`` (``None``: leave it unset, UCX chooses).
#: ``--tls`` choices. ``nocma`` is what gpupart uses when ``UCX_TLS`` is unset (a reader
#: copying from a dead peer through CMA is aborted by UCX): it runs every peer without it.
TLS_CHOICES: dict[str, str | None] = {
    "default": None,
    "nocma": "^cma",
    "shm": "sm,self",
    "tcp": "tcp,self",
}


# -- sizes and statistics -----------------------------------------------------------------


def parse_size(text: str) -> int:
    """``'8'``, ``'4K'``, ``'1M'``, ``'256MiB'`` -> bytes (binary prefixes)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if m is None:
        raise ValueError(f"size: expected e.g. 8, 4K, 1M, 256M; found {text!r}")
    scale = {"": 1, "k": KiB, "m": MiB, "g": GiB}[m.group(2).lower()]
    value = int(m.group(1)) * scale
    if value <= 0:
        raise ValueError(f"size: expected a positive size, found {text!r}")
    return value


def fmt_size(n: int) -> str:
    """Bytes as ``8 B``, ``4 KiB``, ``1 MiB`` (exact binary units when possible)."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def stats(samples: Sequence[float]) -> dict[str, float]:
    """Median, p90, mean, min, max and count of a list of seconds."""
    a = np.asarray(samples, dtype=np.float64)
    return {
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def tiles_for(size: int, params: Mapping[str, Any]) -> int:
    """Tiles per bandwidth call at ``size``: ``bw_bytes`` in all, at most ``max_tiles``."""
    return int(max(1, min(params["max_tiles"], params["bw_bytes"] // size)))


def pattern(n: int, salt: int) -> np.ndarray:
    """``n`` bytes of a salted pattern with a prime period, to check what was fetched."""
    base = ((np.arange(4099, dtype=np.uint32) * 31 + salt * 7 + 1) % 251).astype(np.uint8)
    return np.resize(base, n)


def use_numpy_hugepages(flag: bool) -> bool:
    """Let NumPy ask for transparent huge pages for large arrays, or not; returns the old setting.

    NumPy ``madvise``s arrays of 4 MiB and more for huge pages (when the kernel's THP mode is
    ``madvise``); ``ucx_perftest``'s buffers get no such advice. With ``--no-hugepages`` the
    NumPy-based peers use 4 KiB pages too.
    """
    try:
        from numpy._core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage
    old = bool(_get_madvise_hugepage())
    _set_madvise_hugepage(flag)
    return old


def timed_loop(fn, *, budget: float, min_n: int, max_n: int) -> list[float]:
    """Time calls of ``fn()`` for ``budget`` s (at least ``min_n``, at most ``max_n`` calls)."""
    times: list[float] = []
    clock = time.perf_counter
    start = clock()
    while len(times) < max_n and (len(times) < min_n or clock() - start < budget):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


# -- subprocesses -------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of a child we started (in its own session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def start(cmd: Sequence[str], env: Mapping[str, str], **kw: Any) -> subprocess.Popen:
    """Start ``cmd`` in a new session (so that a timeout can kill all it started)."""
    return subprocess.Popen(
        list(cmd),
        env=dict(env),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int | None, str]:
    """Wait for ``proc``; kill its group after ``timeout`` s. Returns (status or None, output)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out or ""
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        return None, (out or "") + f"\n[bench] killed after {timeout:.0f} s timeout\n"


def run(cmd: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` to completion with a timeout; (status or None on timeout, output)."""
    return finish(start(cmd, env), timeout)


def tail(text: str, lines: int = 25) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:])


def peer_env(ucx_tls: str | None, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment every peer runs with: ours, ``extra``, ``UCX_TLS`` set or removed."""
    env = dict(BASE_ENV)
    env.pop("UCX_TLS", None)
    env.update(extra)
    if ucx_tls is not None:
        env["UCX_TLS"] = ucx_tls
    env.setdefault("UCX_WARN_UNUSED_ENV_VARS", "n")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- ucx_perftest -------------------------------------------------------------------------


def libucx_dir() -> Path | None:
    """Where the ``libucx`` wheel keeps ``bin/ucx_perftest`` and ``lib/``, if installed."""
    try:
        import libucx

        return Path(libucx.__file__).resolve().parent
    except ImportError:
        return None


def perftest_iters(size: int, quick: bool) -> dict[str, tuple[int, int]]:
    """(iterations, warm-up) of ``tag_lat`` and ``tag_bw`` at ``size``: tenths of a second each."""
    lat_budget, bw_bytes = (0.1, 256 * MiB) if quick else (0.3, 2 * GiB)
    lat_n = int(np.clip(lat_budget / (2e-6 + 2 * size / 5e9), 20, 100_000))
    bw_n = int(np.clip(bw_bytes // size, 8, 200_000))
    return {
        "tag_lat": (lat_n, max(2, min(lat_n // 10, 1000))),
        "tag_bw": (bw_n, max(2, min(bw_n // 10, 10_000))),
    }


def run_perftest(
    sizes: Iterable[int], env: Mapping[str, str], *, quick: bool, timeout: float
) -> dict:
    """``ucx_perftest`` ``tag_lat`` and ``tag_bw`` at every size, one server/client batch.

    Latencies are perftest's one-way numbers (half a round trip), in seconds; bandwidth is
    its overall average, converted from MiB/s to bytes/s.
    """
    base = libucx_dir()
    exe = base / "bin" / "ucx_perftest" if base else None
    if exe is None or not exe.exists():
        return {"skipped": "ucx_perftest not found (pip install libucx-cu12)"}
    env = dict(env)
    lib = str(base / "lib")
    env["LD_LIBRARY_PATH"] = lib + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    lines, plan = [], {}
    for size in sizes:
        for test, (n, w) in perftest_iters(size, quick).items():
            name = f"{test}_{size}"
            lines.append(f"{name} -t {test} -s {size} -n {n} -w {w}")
            plan[name] = {"test": test, "size": size, "iters": n, "warmup": w}
    with tempfile.TemporaryDirectory(prefix="gpupart-perftest-") as tmp:
        batch = Path(tmp) / "batch.txt"
        batch.write_text("\n".join(lines) + "\n")
        out = ""
        for _attempt in range(5):
            port = str(free_port())
            server = start([str(exe), "-p", port, "-b", str(batch)], env)
            time.sleep(0.3)
            status, out = run(
                [str(exe), "127.0.0.1", "-p", port, "-b", str(batch), "-v"], env, timeout
            )
            _, srv_out = finish(server, 10 if status != 0 else 30)
            if status == 0:
                break
            if "connect" not in out.lower():  # a real failure, not a server not yet listening
                return {
                    "error": f"ucx_perftest client status {status}",
                    "output": tail(out + srv_out),
                }
        else:
            return {"error": "ucx_perftest client could not connect", "output": tail(out)}
    results: dict[str, Any] = {"lat": {}, "bw": {}}
    found = set()
    for row in out.splitlines():
        parts = row.strip().split(",")
        # Long tests print progress rows ("name,[thread 0]N,..."); the final row is plain.
        if len(parts) != 9 or parts[0] not in plan or not parts[1].strip().isdigit():
            continue
        found.add(parts[0])
        p = plan[parts[0]]
        iters, p50, _avg_lat, overall_lat, _avg_bw, overall_bw, _mr, overall_mr = (
            float(x) for x in parts[1:]
        )
        key = str(p["size"])
        if p["test"] == "tag_lat":
            results["lat"][key] = {
                "one_way_median": p50 * 1e-6,
                "one_way_mean": overall_lat * 1e-6,
                "iters": int(iters),
                "warmup": p["warmup"],
            }
        else:
            results["bw"][key] = {
                "bandwidth": overall_bw * MiB,
                "msg_rate": overall_mr,
                "iters": int(iters),
                "warmup": p["warmup"],
            }
    missing = sorted(set(plan) - found)
    if missing:
        results["missing"] = missing
        results["output"] = tail(out)
    results["command"] = f"{exe} [-p PORT] -b batch -v  (server: {exe} -p PORT -b batch)"
    results["batch"] = lines
    results["version"] = _ucx_info_version(base, env)
    return results


def _ucx_info_version(base: Path, env: Mapping[str, str]) -> str:
    status, out = run([str(base / "bin" / "ucx_info"), "-v"], env, 20)
    m = re.search(r"Library version:\s*(\S+)", out)
    return m.group(1) if status == 0 and m else "unknown"


# -- mpi4py and NIXL peers ----------------------------------------------------------------


def mpiexec() -> str | None:
    """The ``mpiexec`` next to this Python (the mpich wheel's), or one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    if local.exists():
        return str(local)
    from shutil import which

    return which("mpiexec")


def run_mpi(params: dict, env: Mapping[str, str], timeout: float) -> dict:
    """mpi4py ping-pong and windowed streaming under ``mpiexec -n 2``, MPI's own defaults.

    The ``bench`` extra's MPI is the MPICH 3.4 wheel (ch3: shared memory on one machine); it
    has no UCX of its own (README, "MPI and UCX").
    """
    exe = mpiexec()
    if exe is None:
        return {"skipped": "mpiexec not found (pip install mpich mpi4py)"}
    return _run_json_peer(
        [exe, "-n", "2", sys.executable, str(HERE / "_mpi_peer.py")], params, env, timeout
    )


def run_nixl(params: dict, env: Mapping[str, str], timeout: float) -> dict:
    """NIXL one-sided READ between a target and an initiator process (see ``_nixl_peer.py``)."""
    with tempfile.TemporaryDirectory(prefix="gpupart-nixl-") as tmp:
        params = dict(params, rendezvous=tmp)
        target_params = Path(tmp) / "target.json"
        target_params.write_text(json.dumps(dict(params, role="target")))
        target = start([sys.executable, str(HERE / "_nixl_peer.py"), str(target_params)], env)
        try:
            result = _run_json_peer(
                [sys.executable, str(HERE / "_nixl_peer.py")],
                dict(params, role="initiator"),
                env,
                timeout,
            )
        finally:
            (Path(tmp) / "done").touch()
            status, out = finish(target, 20)
        if status != 0:
            result.setdefault("target_output", tail(out))
        return result


def _run_json_peer(cmd: list[str], params: dict, env: Mapping[str, str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpupart-peer-") as tmp:
        result_path = Path(tmp) / "result.json"
        params_path = Path(tmp) / "params.json"
        params_path.write_text(json.dumps(dict(params, result=str(result_path))))
        status, out = run([*cmd, str(params_path)], env, timeout)
        if result_path.exists():
            result = json.loads(result_path.read_text())
            if status != 0:
                result["exit_status"] = status
                result["output"] = tail(out)
            return result
        return {"error": f"{Path(cmd[-1]).name} exited with status {status}", "output": tail(out)}


# -- machine and versions -----------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Hostname, CPU model and count, kernel, memory, load: where the numbers come from."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * KiB
    return {
        "hostname": platform.node(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "os": platform.platform(),
        "memory_bytes": mem,
        "loadavg_start": load_average(),
        "gpu": "none used: host memory (numpy) tiles",
    }


def _cpu_jiffies() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of all CPUs since boot, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    f += [0] * (8 - len(f))
    user, nice, system, _idle, _iowait, irq, softirq, steal = f
    return user + nice + system + irq + softirq, steal, sum(f)


def cpu_busy(seconds: float = 0.5) -> float | None:
    """Fraction of all CPUs' time spent busy (by anyone) over the next ``seconds``."""
    try:
        b0, _, t0 = _cpu_jiffies()
        time.sleep(seconds)
        b1, _, t1 = _cpu_jiffies()
    except (OSError, ValueError):
        return None
    return None if t1 <= t0 else round((b1 - b0) / (t1 - t0), 3)


def wait_until_quiet(limit: float, threshold: float) -> dict[str, Any]:
    """Wait (at most ``limit`` s) until other work leaves the CPUs at most ``threshold`` busy.

    On a small shared machine a benchmark beside other jobs measures the scheduler, not the
    transport: spinning peers that must take turns on two CPUs wait milliseconds per hop.
    """
    t0 = time.monotonic()
    busy = cpu_busy()
    while busy is not None and busy > threshold and time.monotonic() - t0 < limit:
        busy = cpu_busy()
    return {"busy_before": busy, "waited_seconds": round(time.monotonic() - t0, 1)}


class CpuMeter:
    """How busy the machine was while something ran, and how much of that was not us.

    ``others`` = all CPUs' busy time minus the CPU time of "us", as a fraction of the
    machine's capacity over the wall time. "Us" is this process and its (waited-for)
    descendants, or, given ``pids``, those processes (e.g. the two ranks, measured from
    inside one of them). ``steal`` is time the hypervisor gave to other guests.
    """

    def __init__(self, pids: Iterable[int] | None = None) -> None:
        self._pids = list(pids) if pids is not None else None
        self._wall = time.monotonic()
        self._jiffies = _cpu_jiffies()
        self._ours = self._our_cpu()

    def _our_cpu(self) -> float:
        if self._pids is None:
            me = resource.getrusage(resource.RUSAGE_SELF)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        total = 0
        for pid in self._pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict[str, float]:
        """Busy, ours, others (fractions of all CPUs) and steal since construction."""
        wall = time.monotonic() - self._wall
        busy, steal, total = (b - a for a, b in zip(self._jiffies, _cpu_jiffies(), strict=True))
        hz = os.sysconf("SC_CLK_TCK")
        capacity = max(wall * (os.cpu_count() or 1), 1e-9)
        ours = self._our_cpu() - self._ours
        return {
            "busy": round(busy / hz / capacity, 3),
            "ours": round(ours / capacity, 3),
            "others": round(max(0.0, busy / hz - ours) / capacity, 3),
            "steal": round(steal / max(total, 1), 3),
        }


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (a busy machine skews every number here)."""
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Versions of everything measured, and of the ``extra`` distributions a benchmark names."""
    import gpupart

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gpupart": gpupart.__version__,
        "gpupart_git": _git_describe(),
    }
    for dist in (
        "ucxx-cu12",
        "libucxx-cu12",
        "libucx-cu12",
        "mpi4py",
        "mpich",
        "nixl-cu12",
        "matplotlib",
        "pandas",
        "pyarrow",
        "dask",
        "polars",
        "duckdb",
        *extra,
    ):
        info[dist] = _dist_version(dist)
    with contextlib.suppress(Exception):
        import ucxx._lib.libucxx as ucx

        info["ucx_runtime_gpupart"] = ".".join(str(x) for x in ucx.get_ucx_version())
    return info


def ucxx_env_overrides() -> dict[str, str]:
    """The UCX_* variables that ``import ucxx`` set here (and so in every gpupart rank)."""
    return {k: v for k, v in os.environ.items() if k.startswith("UCX_") and BASE_ENV.get(k) != v}


def _git_describe() -> str | None:
    status, out = run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], os.environ, 10)
    return out.strip() if status == 0 else None


def loaded_ucx_version() -> str | None:
    """The UCX this process has loaded, as text (peers may bundle their own), or None."""
    from gpupart.comm.ucx_library import loaded_ucx

    copies = loaded_ucx()
    return str(copies[0]) if copies else None


def time_calls(
    fn: Callable[[], Any], reps: int, sync: Callable[[], Any]
) -> tuple[list[float], Any]:
    """Call ``fn`` once untimed, then ``reps`` timed times, each between two ``sync`` calls.

    Returns the times and the last result.
    """
    result = fn()
    out = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out, result


def run_worker_job(
    script: str, params: dict, env: dict[str, str], timeout: float, *, cpu: bool = True
) -> dict:
    """Run ``script --worker PARAMS.json`` as a gpupart job of ``params['ranks']`` ranks.

    The workers write their result (JSON) where ``params['result']`` says; it is returned, or
    ``{"error", "output"}`` when the job failed.
    """
    with tempfile.TemporaryDirectory(prefix="gpupart-bench-") as tmp:
        result_path, params_path = Path(tmp) / "result.json", Path(tmp) / "params.json"
        params_path.write_text(json.dumps(dict(params, result=str(result_path))))
        cmd = [sys.executable, "-m", "gpupart", "run", "-n", str(params["ranks"])]
        cmd += ["--cpu"] if cpu else []
        cmd += ["--", sys.executable, script, "--worker", str(params_path)]
        status, out = run(cmd, env, timeout)
        if status == 0 and result_path.exists():
            return json.loads(result_path.read_text())
        return {"error": f"gpupart run exited with status {status}", "output": tail(out, 40)}
