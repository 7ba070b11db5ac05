"""gpupart.interop.modin against the real Modin on a real Dask cluster, a job of 2 ranks.

``interop_scripts/modin_driver.py`` is the Modin program: it starts a ``LocalCluster`` of 2
worker processes, publishes ``to_partitioned`` of a Modin frame of 3 row partitions on the
scheduler and starts ``gpupart run -n 2 -- python modin_rank.py SCHEDULER``; each rank
adopts the frame with ``gpupart.from_partitioned`` and compares it with pandas (every
partition on the rank that takes it, then the whole), changes it, and makes a Modin frame of
the result with ``to_modin`` (compared with pandas on every rank); the driver reads that
back with ``from_partitioned``. One run serves every test here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env, records

pytest.importorskip("distributed", reason="the interop extra is not installed (no distributed)")
pytest.importorskip("modin", reason="the interop extra is not installed (no modin)")

pytestmark = pytest.mark.multiprocess

DRIVER = Path(__file__).parent / "interop_scripts" / "modin_driver.py"
RANKS = 2


@pytest.fixture(scope="module")
def driver() -> subprocess.CompletedProcess[str]:
    """One run of the Modin program and its gpupart job (the driver checks, the tests read)."""
    return subprocess.run(
        [sys.executable, str(DRIVER), str(RANKS)],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env({"MODIN_ENGINE": "dask"}),
        stdin=subprocess.DEVNULL,
    )


def passed(run: subprocess.CompletedProcess[str], name: str) -> list[int]:
    """The ranks (-1: the driver) that reported case ``name``, after checking the run."""
    assert run.returncode == 0, (
        f"--- stdout\n{run.stdout[-4000:]}\n--- stderr\n{run.stderr[-6000:]}"
    )
    return sorted(r["rank"] for r in records(run.stdout, "case") if r["name"] == name)


def test_to_partitioned_describes_modin_partitions(driver):
    # futures as data, every worker's (host, pid) as location, DaskGather as get
    assert passed(driver, "to_partitioned") == [-1]


def test_modin_frame_into_gpupart_job(driver):
    assert passed(driver, "modin_in") == list(range(RANKS))


def test_gpupart_frame_into_modin_on_every_rank(driver):
    assert passed(driver, "modin_out") == list(range(RANKS))
    done = records(driver.stdout, "done")
    assert sorted(d["rank"] for d in done) == list(range(RANKS))


def test_job_result_back_in_the_modin_program(driver):
    assert passed(driver, "from_partitioned") == [-1]


def test_errors_name_what_is_wrong(driver):
    # a future nobody holds times out naming its key; data that is not a future is refused
    assert passed(driver, "errors") == [-1]
