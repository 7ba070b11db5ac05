"""gpupart.ml linear models, StandardScaler, metrics and train_test_split at 1, 2 and 3 ranks.

The rank scripts in ``ml_scripts/`` (``linear_cases.py``: LinearRegression and Ridge;
``metrics_cases.py``: StandardScaler, the metrics and train_test_split) compare with
scikit-learn on the same data under many layouts and check errors on every rank. Every job
(two scripts at three sizes) starts at once on first use; each case is a test here that
checks every rank reported it passed.
"""

from __future__ import annotations

import ast
import functools
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import PY, records, run_ranks

pytestmark = pytest.mark.multiprocess

SCRIPTS = {
    name: Path(__file__).parent / "ml_scripts" / f"{name}_cases.py"
    for name in ("linear", "metrics")
}
SIZES = [1, 2, 3]


def case_names(script: Path) -> list[str]:
    """The script's cases, in order: its functions decorated with ``@case``."""
    tree = ast.parse(script.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "case" for d in node.decorator_list)
    ]


CASES = {name: case_names(path) for name, path in SCRIPTS.items()}


@functools.cache
def _jobs() -> dict[tuple[str, int], Future]:
    """Start every script at every rank count (first call only; three jobs at a time)."""
    pool = ThreadPoolExecutor(3)
    jobs = {
        (name, n): pool.submit(run_ranks, n, [PY, str(path)])
        for n in SIZES
        for name, path in SCRIPTS.items()
    }
    pool.shutdown(wait=False)
    return jobs


def job(name: str, n: int) -> tuple[int, str, str]:
    """``(rc, stdout, stderr)`` of script ``name`` at ``n`` ranks (run once per session)."""
    return _jobs()[(name, n)].result()


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_script_has_cases(name):
    assert len(CASES[name]) >= 9, CASES[name]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", SCRIPTS)
def test_job_runs_every_case(name, n):
    rc, out, err = job(name, n)
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
    assert "Traceback" not in err, err
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    assert all(d["size"] == n for d in done)
    for plan in records(out, "plan"):
        assert plan["cases"] == CASES[name]


@pytest.mark.parametrize(
    ("script", "case"), [(name, case) for name, cases in CASES.items() for case in cases]
)
@pytest.mark.parametrize("n", SIZES)
def test_case(n, script, case):
    _, out, err = job(script, n)
    passed = [r for r in records(out, "case") if r["name"] == case]
    ranks = sorted(r["rank"] for r in passed)
    assert ranks == list(range(n)), (
        f"{case} passed on ranks {ranks} of {n}\n--- stderr\n{err[-6000:]}"
    )
    assert all(r.get("line_rank", r["rank"]) == r["rank"] for r in passed)


def test_a_seeded_split_picks_the_same_rows_at_every_job_size():
    picked = {}
    for n in SIZES:
        _, out, _ = job("metrics", n)
        found = records(out, "split")
        assert sorted(r["rank"] for r in found) == list(range(n)), out[-2000:]
        assert all(r["picked"] == found[0]["picked"] for r in found), "ranks disagree"
        picked[n] = found[0]["picked"]
    assert picked[1] == picked[2] == picked[3]


def test_the_package_exports_them():
    import gpupart.ml

    for name in ("LinearRegression", "Ridge", "StandardScaler", "train_test_split"):
        assert callable(getattr(gpupart.ml, name)), name
    assert callable(gpupart.ml.metrics.r2_score)
