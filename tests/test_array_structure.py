"""tril/triu, meshgrid, nonzero and from_dlpack (``containers/structure.py``) at 1, 2, 3 ranks.

The rank script ``array_scripts/structure_cases.py`` runs every case in one job per rank
count against NumPy: uneven grids cut on every axis, empty tiles, replicated arrays, k
positive/negative/beyond the shape, batched triangles, meshgrid of 1-3 inputs tiled
differently in both indexings, nonzero of 1-d to 3-d arrays of several dtypes with none or
all nonzero, DLPack copies, and errors every rank raises. It checks that tril/triu send no
message, that meshgrid fetches once per input and that nonzero of an array cut only along
its first axis fetches nothing. Each case is a test here that checks every rank passed it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
from conftest import PY, records, run_ranks

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).parent / "array_scripts" / "structure_cases.py"
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
    assert len(CASES) >= 12, CASES


def test_the_namespace_provides_them():
    from gpupart.containers import namespace, structure

    for name in ("tril", "triu", "meshgrid", "nonzero", "from_dlpack"):
        assert name in namespace.__all__
        assert getattr(namespace, name).__wrapped__ is getattr(structure, name)


@pytest.mark.parametrize("n", SIZES)
def test_job_runs_every_case(n):
    rc, out, err = job(n)
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
    assert "Traceback" not in err, err
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    assert all(d["size"] == n for d in done)
    plans = records(out, "plan")
    assert len(plans) == n and all(plan["cases"] == CASES for plan in plans)


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
    if "checked" in passed[0]:  # the loops ran, the same on every rank
        assert len({r["checked"] for r in passed}) == 1 and passed[0]["checked"] >= 50
