"""Distributed groupby, drop_duplicates and value_counts at 1, 2 and 3 ranks, against pandas.

The rank script ``frame_scripts/groupby_cases.py`` runs every case in one job per rank count
(every aggregation of every dtype, string/float/datetime/nullable/bool keys with nulls both
ways of ``dropna``, one key and ten thousand, Zipf-skewed keys, keys on one rank only, empty
frames and partitions, a rank with no rows, first/last in the global row order, transforms,
``sort=True``, errors on every rank) and counts the runtime's messaging calls (groupby-agg:
one exchange). Each case is a test here that checks every rank reported it passed. The three
jobs start at once (they spend most of their time in pandas, and a job waits on its peers).
"""

from __future__ import annotations

import ast
import functools
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import PY, records, run_ranks

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "frame_scripts" / "groupby_cases.py"
SIZES = [1, 2, 3]
#: One job's limit: the three run together on a loaded 2-core machine.
JOB_TIMEOUT = 240.0


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


@functools.cache
def _jobs() -> dict[int, Future]:
    """Start the script at every rank count at once (once per test session)."""
    pool = ThreadPoolExecutor(len(SIZES))
    jobs = {n: pool.submit(run_ranks, n, [PY, str(SCRIPT)], timeout=JOB_TIMEOUT) for n in SIZES}
    pool.shutdown(wait=False)
    return jobs


def job(n: int) -> tuple[int, str, str]:
    """``(rc, stdout, stderr)`` of the job at ``n`` ranks."""
    return _jobs()[n].result()


def test_the_script_has_cases():
    assert len(CASES) >= 10, CASES


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    rc, out, err = job(n)
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
    assert "Traceback" not in err, err
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    assert all(d["size"] == n for d in done)
    plans = records(out, "plan")
    assert sorted(p["rank"] for p in plans) == list(range(n)), out
    for plan in plans:
        assert plan["cases"] == CASES


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, name):
    _, out, err = job(n)
    passed = [r for r in records(out, "case") if r["name"] == name]
    ranks = sorted(r["rank"] for r in passed)
    assert ranks == list(range(n)), (
        f"{name} passed on ranks {ranks} of {n}\n--- stderr\n{err[-6000:]}"
    )
    assert all(r.get("line_rank", r["rank"]) == r["rank"] for r in passed)


def test_skewed_keys_move_partial_states_not_rows():
    """The Zipf case: each rank received at most one partial row per key and sender."""
    _, out, _ = job(3)
    got = [r for r in records(out, "case") if r["name"].startswith("zipf")]
    assert len(got) == 3, out[-2000:]
    for r in got:
        assert r["partial_rows_received"] < r["rows_held"] / 10, r
