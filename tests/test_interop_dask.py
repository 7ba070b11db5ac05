"""gpupart.interop.dask against the real Dask: a LocalCluster of 2 workers, a job of 2 ranks.

``interop_scripts/dask_driver.py`` is the Dask program: it starts the cluster, publishes a
persisted dask array (irregular 3 x 2 chunks), its ``__partitioned__`` dict and a dask
DataFrame, and starts ``gpupart run -n 2 -- python dask_rank.py`` with
``DASK_SCHEDULER_ADDRESS`` set; each rank (a Dask client) adopts them with
``to_partitioned`` + ``gpupart.from_partitioned``, checks values and that its tiles are what
``get`` returned, and publishes results with ``to_dask``, which the driver reads after the
job has ended. One run serves every test here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env, passed, records

pytest.importorskip("dask.array", reason="the interop extra is not installed (no dask.array)")
pytest.importorskip("distributed", reason="the interop extra is not installed (no distributed)")

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]  # a real cluster beside the job

DRIVER = Path(__file__).parent / "interop_scripts" / "dask_driver.py"
RANKS = 2


@pytest.fixture(scope="module")
def driver() -> subprocess.CompletedProcess[str]:
    """One run of the Dask program and its gpupart job (the scripts check, the tests read)."""
    return subprocess.run(
        [sys.executable, str(DRIVER), str(RANKS)],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )


def test_to_partitioned_where_the_collection_lives(driver):
    # persists a lazy collection (the caller's left as it was), get takes one future or a
    # list, a chunk that fails to compute is a PartitionedError caused by the task's error
    assert passed(driver, "driver_side") == [-1]


def test_dask_array_into_gpupart_job(driver):
    # futures as data, (host, pid) of each holding worker as location; each rank gathers
    # the chunks it owns and adopts what get returned without a copy
    assert passed(driver, "array_in") == list(range(RANKS))


def test_pickled_partitioned_dict_through_the_scheduler(driver):
    assert passed(driver, "spec_in") == list(range(RANKS))


def test_dask_dataframe_into_gpupart_job(driver):
    assert passed(driver, "frame_in") == list(range(RANKS))


def test_gpupart_array_to_dask(driver):
    # same chunks as the tiling; without a name nothing stays published
    assert passed(driver, "array_out") == list(range(RANKS))


def test_gpupart_frame_to_dask(driver):
    # a global RangeIndex and its divisions; unknown divisions with empty partitions
    assert passed(driver, "frame_out") == list(range(RANKS))


def test_errors_name_what_is_wrong(driver):
    # wrong types, an unbound future, a step failing on one rank raises on every rank
    assert passed(driver, "errors") == list(range(RANKS))
    done = records(driver.stdout, "done")
    assert sorted(d["rank"] for d in done) == list(range(RANKS))


def test_published_results_outlive_the_job(driver):
    assert passed(driver, "after_job") == [-1]
