"""gpupart.interop.ray against the real Ray: a local cluster, a job of 2 ranks as Ray drivers.

The fixture starts a one-node Ray cluster (``ray start --head --block --num-cpus 2``, no
dashboard, a 100 MB object store, its own temp dir so no other Ray user finds it) and stops
it by its process. ``interop_scripts/ray_driver.py`` is the Ray program: it puts a 2 x 2
grid of NumPy blocks and 3 pandas frames, checks ``to_partitioned`` where they live, and
starts ``gpupart run -n 2 -- python ray_rank.py``; each rank adopts the blocks
(``to_partitioned`` + ``gpupart.from_partitioned``), checks values and that its tiles are the
object store's memory, and puts results back with ``to_ray``; the driver reads the ones an
actor owns after the job has ended. One run serves every test here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clean_env, passed, records

pytest.importorskip("ray", reason="the interop extra is not installed (no ray)")

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]  # a real cluster beside the job

DRIVER = Path(__file__).parent / "interop_scripts" / "ray_driver.py"
RANKS = 2
START_TIMEOUT = 120.0
#: the cluster, the driver and the ranks: no token (a ~/.ray/auth_token of another cluster
#: would otherwise be sent to this one, or demanded by it)
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A one-node Ray cluster for this module; its address. Stopped by its own process."""
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip(f"no ray command next to {sys.executable}")
    # short: Ray's socket paths live under it and must fit in 107 bytes
    temp = tempfile.mkdtemp(prefix="gpr", dir="/tmp")
    log = open(os.path.join(temp, "start.log"), "wb")  # noqa: SIM115 (closed below)
    command = [str(ray_cli), "start", "--head", "--block", "--num-cpus", "2", "--port", "0"]
    command += ["--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp]
    command += ["--object-store-memory", str(100 * 1024 * 1024)]
    proc = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=clean_env(RAY_ENV),
        start_new_session=True,
    )
    address_file = Path(temp) / "ray_current_cluster"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not address_file.exists() or not address_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                text = Path(temp, "start.log").read_text(errors="replace")
                pytest.fail(f"ray start did not come up (rc {proc.poll()}):\n{text[-4000:]}")
            time.sleep(0.2)
        yield address_file.read_text().strip()
    finally:
        proc.terminate()  # ray start --block stops the cluster's processes on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(ray_address: str) -> subprocess.CompletedProcess[str]:
    """One run of the Ray program and its gpupart job (the scripts check, the tests read)."""
    return subprocess.run(
        [sys.executable, str(DRIVER), str(RANKS)],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env({**RAY_ENV, "RAY_ADDRESS": ray_address}),
        stdin=subprocess.DEVNULL,
    )


def test_to_partitioned_where_the_blocks_live(driver):
    # shapes read on the blocks' node or given; node IPs as locations; grids and row lists;
    # shapes that do not form a grid, ragged lists and non-refs name the offending block
    assert passed(driver, "driver_side") == [-1]


def test_ray_blocks_into_gpupart_job(driver):
    # each rank ray.gets the blocks it owns; its tiles are those arrays (read-only views)
    assert passed(driver, "array_in") == list(range(RANKS))


def test_ray_frames_into_gpupart_job(driver):
    assert passed(driver, "frame_in") == list(range(RANKS))


def test_gpupart_array_to_ray(driver):
    # a grid of refs every rank can ray.get, a Ray task can take, and gpupart adopt again
    assert passed(driver, "array_out") == list(range(RANKS))


def test_gpupart_frame_to_ray(driver):
    assert passed(driver, "frame_out") == list(range(RANKS))


def test_errors_name_what_is_wrong(driver):
    assert passed(driver, "errors") == list(range(RANKS))
    done = records(driver.stdout, "done")
    assert sorted(d["rank"] for d in done) == list(range(RANKS))


def test_objects_an_actor_owns_outlive_the_job(driver):
    assert passed(driver, "after_job") == [-1]
