"""Distributed sort/argsort, unique_* and searchsorted at 1, 2 and 3 ranks, against NumPy.

The rank script ``array_scripts/sorting_cases.py`` runs every case in one job per rank count
(duplicates, NaNs, signed zeros, uneven, empty and replicated tiles, a rank with no data,
sorted, reversed and all-equal input, bool/int8/uint64/float32/float64, errors on every
rank); each case is a test here that checks every rank reported it passed. The script also
counts the runtime's exchanges: a sample sort moves its data in exactly one.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
from conftest import PY, records, run_ranks

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "array_scripts" / "sorting_cases.py"
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
def job(n: int) -> tuple[int, str, str]:
    """Run the script at ``n`` ranks once per test session."""
    return run_ranks(n, [PY, str(SCRIPT)])


def test_the_script_has_cases():
    assert len(CASES) >= 7, CASES


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    rc, out, err = job(n)
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
    assert "Traceback" not in err, err
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    assert all(d["size"] == n for d in done)
    for plan in records(out, "plan"):
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


def test_namespace_exports_the_sorting_functions():
    from gpupart.containers import indexing, namespace

    names = {"argsort", "searchsorted", "sort", "unique_all", "unique_counts"}
    names |= {"unique_inverse", "unique_values"}
    assert names <= set(namespace.__all__)
    assert not {"sort", "argsort"} & set(indexing.__all__)  # one home: containers.sorting
