"""``DistFrame.merge`` and ``sort_values`` (containers/joins.py) at 1, 2 and 3 ranks, vs pandas.

The rank script ``frame_scripts/join_cases.py`` runs every case in one job per rank count:
merges for every ``how``, ``on``/``left_on``/``right_on``, suffixes, multi-column, string,
datetime and nullable keys, null keys (they match, as in pandas), keys absent on some ranks,
empty sides, a rank with no rows, key dtypes that differ (int32 with int64 after a common
cast; int with a string refused on every rank), skewed keys (refused with
``JoinSkewError``, or salted), the broadcast path forced and chosen by size; sorts by one and
several columns, ascending and descending, ``na_position``, stable among ties, strings,
datetimes, nullable and categorical columns, duplicate-heavy keys. Merges are compared with
pandas after sorting by every column (a distributed merge does not give pandas' row order);
sorts are compared in order. Each case is a test here that checks every rank reported it.
The three jobs run side by side (they mostly wait on each other's messages).
"""

from __future__ import annotations

import ast
import functools
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import PY, records, run_ranks

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "frame_scripts" / "join_cases.py"
SIZES = [1, 2, 3]


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
def started() -> dict[int, Future]:
    """Start the script at every rank count at once (once per test session)."""
    pool = ThreadPoolExecutor(len(SIZES))
    jobs = {n: pool.submit(run_ranks, n, [PY, str(SCRIPT)]) for n in SIZES}
    pool.shutdown(wait=False)
    return jobs


def job(n: int) -> tuple[int, str, str]:
    """``(rc, stdout, stderr)`` of the script's job at ``n`` ranks."""
    return started()[n].result()


def test_the_script_has_cases():
    assert len(CASES) >= 15, CASES
    assert any(name.startswith("merge_") for name in CASES)
    assert any(name.startswith("sort_") for name in CASES)


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    rc, out, err = job(n)
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
    assert "Traceback" not in err, err
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    assert all(d["size"] == n for d in done)
    plans = records(out, "plan")
    assert sorted(p["rank"] for p in plans) == list(range(n))
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
