"""gpupart.read_parquet and DistFrame.to_parquet at 1, 2 and 3 ranks, against pyarrow/pandas.

The rank script ``frame_scripts/io_cases.py`` builds its datasets once (``build``, in this
process's temporary directory) and then runs every case in one job per rank count (the three
jobs side by side): files, directories, globs, lists and URLs; hive partitions; columns;
filters; ``_metadata``; empty files; balance by bytes; schema mismatch, corrupt and missing
files raised on every rank; writing, partition columns, overwrite and failures. Each case is
a test here that checks every rank reported it. ``frame_scripts/io_killed.py`` kills one rank
in the middle of a read or a write: the others must raise ``PeerLostError``, not hang.
"""

from __future__ import annotations

import ast
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PY, RankResult, Ranks, records, run_ranks

pytestmark = pytest.mark.multiprocess

SCRIPTS = Path(__file__).parent / "frame_scripts"
SCRIPT = SCRIPTS / "io_cases.py"
KILLED = SCRIPTS / "io_killed.py"
SIZES = [1, 2, 3]
LOST_WITHIN = 60.0  # every survivor hears of a killed rank within this many seconds


def case_names() -> list[str]:
    """The script's cases, in order: its functions decorated with ``@case``."""
    tree = ast.parse(SCRIPT.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "case" for d in node.decorator_list)
    ]


CASES = case_names()


PARALLEL_JOBS = 3
KILLED_JOBS = [("plan", 2, 0), ("read", 3, 1), ("write", 3, 2)]  # (mode, ranks, victim)


@dataclass
class Killed:
    """How a job of ``io_killed.py`` ended."""

    results: list[RankResult]
    seconds: float
    written: bool  # the final name of the write exists


def killed_job(mode: str, n: int, victim: int, root: Path) -> Killed:
    """Run ``io_killed.py`` (coordinator here, so a dead rank does not stop the others)."""
    data, work = root / "data", root / "work"
    data.mkdir(parents=True)
    work.mkdir()
    for k in range(4):
        values = np.arange(k * 1000, (k + 1) * 1000)
        pq.write_table(pa.table({"v": values}), data / f"d-{k}.parquet", row_group_size=250)
    started = time.monotonic()
    ranks = Ranks(n, str(KILLED), (mode, str(victim), str(data), str(work)), root / "logs")
    try:
        results = ranks.wait(timeout=150)
    finally:
        ranks.close()
    return Killed(results, time.monotonic() - started, (work / "out").exists())


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """``job(n)`` / ``job(mode, n, victim)``: a job's outcome; jobs run side by side.

    The jobs spend most of their time waiting for each other's messages, so running them
    ``PARALLEL_JOBS`` at a time about halves wall time; more at once starve the starting
    ranks (their handshake with the coordinator times out on a 2-core machine).
    """
    root = tmp_path_factory.mktemp("frame_io")
    data = root / "data"
    subprocess.run([PY, str(SCRIPT), "build", str(data)], check=True, timeout=120)
    with ThreadPoolExecutor(PARALLEL_JOBS) as pool:
        started: dict[Any, Future] = {
            n: pool.submit(run_ranks, n, [PY, str(SCRIPT), "run", str(data), str(root / f"w{n}")])
            for n in SIZES
        }
        for key in KILLED_JOBS:
            started[key] = pool.submit(killed_job, *key, root / "-".join(map(str, key)))
        yield lambda *key: started[key if len(key) > 1 else key[0]].result()


def test_the_script_has_cases():
    assert len(CASES) >= 15, CASES


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(job, n):
    rc, out, err = job(n)
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
    assert "Traceback" not in err, err
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    assert all(d["size"] == n for d in done)
    plans = records(out, "plan")
    assert sorted(p["rank"] for p in plans) == list(range(n))
    assert all(p["cases"] == CASES for p in plans)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(job, n, name):
    _, out, err = job(n)
    passed = [r for r in records(out, "case") if r["name"] == name]
    ranks = sorted(r["rank"] for r in passed)
    assert ranks == list(range(n)), (
        f"{name} passed on ranks {ranks} of {n}\n--- stderr\n{err[-6000:]}"
    )
    assert all(r.get("line_rank", r["rank"]) == r["rank"] for r in passed)


def test_every_rank_raises_the_same_errors(job):
    for n in SIZES:
        _, out, _ = job(n)
        seen = [r["messages"] for r in records(out, "case") if "messages" in r]
        assert len(seen) == n and all(m == seen[0] for m in seen), seen
        assert "nope" in seen[0]["missing"] and "'f'" in seen[0]["schema"]


def test_tiny_files_spread_like_a_single_rank_reads_them(job):
    for n in SIZES:
        _, out, _ = job(n)
        sizes = {tuple(r["sizes"]) for r in records(out, "case") if r["name"].startswith("many")}
        assert len(sizes) == 1, sizes
        (found,) = sizes
        assert len(found) == n and sum(found) == 180


# -- a rank dies in the middle --------------------------------------------------------------


@pytest.mark.parametrize(("mode", "n", "victim"), KILLED_JOBS)
def test_a_rank_killed_mid_io_is_reported_by_every_survivor(job, mode, n, victim):
    killed = job(mode, n, victim)
    report = "\n".join(r.describe() for r in killed.results)
    assert killed.results[victim].returncode == 3, report
    assert records(killed.results[victim].stdout, "dying"), report
    for r in killed.results:
        if r.rank == victim:
            continue
        assert r.returncode == 0, report
        (lost,) = records(r.stdout, "lost")
        assert lost["error"] == "PeerLostError", report
        assert lost["lost_rank"] == victim, report
        assert f"rank {victim} was lost" in lost["message"], report
        assert lost["elapsed"] < LOST_WITHIN, report
    assert not killed.written, report  # never a partial dataset under the final name
    assert killed.seconds < 120, "the job took as long as a hang"
