"""gpupart.interop.modin against the real Modin on a real Dask cluster, a job of 2 ranks.

``interop_scripts/modin_driver.py`` is the Modin program: it starts a ``LocalCluster`` of 2
worker processes, publishes ``to_partitioned`` of a Modin frame of 3 row partitions on the
scheduler and starts ``gpupart run -n 2 -- python modin_rank.py SCHEDULER``; each rank
adopts the frame with ``gpupart.from_partitioned`` and compares it with pandas (every
partition on the rank that takes it, then the whole), changes it, and makes a Modin frame of
the result with ``to_modin`` (compared with pandas on every rank); the driver reads that
back with ``from_partitioned``. One run serves every test here but the last, which checks in
a process of its own that the adapter refuses a Modin not on Dask, or a process without a
Dask client, naming what is missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env, passed, records

pytest.importorskip("distributed", reason="the interop extra is not installed (no distributed)")
pytest.importorskip("modin", reason="the interop extra is not installed (no modin)")

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]  # a real cluster beside the job

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


def test_to_partitioned_describes_modin_partitions(driver):
    # futures as data, every worker's (host, pid) as location, DaskGather as get
    assert passed(driver, "to_partitioned") == [-1]


def test_modin_frame_into_gpupart_job(driver):
    # each rank gathers only the partitions it takes (C order over the ranks), values as pandas
    assert passed(driver, "modin_in") == list(range(RANKS))
    taken = {
        r["rank"]: r["partitions"]
        for r in records(driver.stdout, "case")
        if r["name"] == "modin_in"
    }
    assert taken == {0: [0, 1], 1: [2]}


def test_gpupart_frame_into_modin_on_every_rank(driver):
    assert passed(driver, "modin_out") == list(range(RANKS))
    done = records(driver.stdout, "done")
    assert sorted(d["rank"] for d in done) == list(range(RANKS))


def test_modin_frame_stays_whole_when_other_ranks_leave(driver):
    # rank 0's frame is read again after the other ranks closed their Dask clients
    assert passed(driver, "others_left") == list(range(RANKS))


def test_to_modin_without_a_client_fails_on_every_rank(driver):
    # the last rank has no client yet: it names the client, the others name that rank
    assert passed(driver, "no_client") == list(range(RANKS))


def test_job_result_back_in_the_modin_program(driver):
    assert passed(driver, "from_partitioned") == [-1]


def test_from_partitioned_rebinds_pickled_futures_and_refuses_data(driver):
    # a dict unpickled without a client (futures unbound) still makes the frame; data that
    # is not a future is refused naming the partition
    assert passed(driver, "errors") == [-1]


CHECKS = """
import modin.config
import gpupart
from gpupart.interop import modin as gm

modin.config.Engine.put("Python")
try:
    gm.check_engine()
except gpupart.InteropError as exc:
    print("engine:", exc)
modin.config.Engine.put("Dask")
gm.check_engine()
try:
    gm.default_client()
except gpupart.InteropError as exc:
    print("client:", exc)
"""


def test_modin_not_on_dask_or_without_a_client_is_refused():
    run = subprocess.run(
        [sys.executable, "-c", CHECKS],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr
    engine, client = run.stdout.splitlines()
    assert engine.startswith("engine: Modin: expected the Dask engine") and "'Python'" in engine
    assert client.startswith("client: Modin on Dask: expected a distributed.Client")
