"""A rank killed mid-shuffle (groupby, merge, sort): every survivor raises PeerLostError.

``frame_scripts/shuffle_killed.py`` makes the victim exit as it enters the exchange that
moves the rows; the others are waiting in it and must hear of the loss, naming the rank,
within ``LOST_WITHIN`` seconds (never a hang). The coordinator runs here, so a dead rank does
not stop the job's other ranks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Ranks, records

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "frame_scripts" / "shuffle_killed.py"
LOST_WITHIN = 60.0
JOBS = [("groupby", 2, 1), ("merge", 3, 0), ("sort", 3, 2)]  # (op, ranks, victim)


def killed_job(op: str, n: int, victim: int, workdir: Path) -> list:
    ranks = Ranks(n, str(SCRIPT), (op, str(victim)), workdir)
    try:
        return ranks.wait(timeout=150)
    finally:
        ranks.close()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("shuffle_killed")
    with ThreadPoolExecutor(len(JOBS)) as pool:
        futures = {job: pool.submit(killed_job, *job, root / job[0]) for job in JOBS}
        return {job: f.result() for job, f in futures.items()}


@pytest.mark.parametrize(("op", "n", "victim"), JOBS)
def test_a_rank_killed_mid_shuffle_is_reported_by_every_survivor(outcomes, op, n, victim):
    results = outcomes[(op, n, victim)]
    report = "\n".join(r.describe() for r in results)
    assert results[victim].returncode == 3, report
    assert records(results[victim].stdout, "dying"), report
    for r in results:
        if r.rank == victim:
            continue
        assert r.returncode == 0, report
        (lost,) = records(r.stdout, "lost")
        assert lost["error"] == "PeerLostError", report
        assert lost["lost_rank"] == victim, report
        assert f"rank {victim} was lost" in lost["message"], report
        assert lost["elapsed"] < LOST_WITHIN, report
