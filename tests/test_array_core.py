"""gpupart.DistArray's core, creation, random and ``__partitioned__`` in and out, in real jobs.

The rank script ``tests/array_scripts/core.py`` checks every case against NumPy itself (each
rank its own tiles, ``to_numpy`` and ``gather`` the whole) and reports. This file runs it at
1, 2 and 3 ranks (one job per rank count and group), checks that every rank ran every case,
and judges what can only be judged from outside one job: random numbers that must be the
same at every rank count, and outcomes where one rank may be left alone with an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from conftest import records, run_job

pytestmark = pytest.mark.multiprocess

SIZES = [1, 2, 3]
SCRIPT = "../array_scripts/core.py"  # relative to tests/mp_scripts, where run_job looks
#: Jobs run side by side (they mostly wait on each other's messages): the file's wall time
#: is about halved on a small machine.
PARALLEL_JOBS = 3

Job = tuple[str, int]  # (group or fault case, number of ranks)


def uses(jobs: Callable[..., list[Job]]) -> Callable[[Any], Any]:
    """Declare the jobs a test reads, from its parameters (the fixture starts them early)."""

    def mark(test: Any) -> Any:
        test.jobs = jobs
        return test

    return mark


@pytest.fixture(scope="module")
def job(request: pytest.FixtureRequest) -> Iterator[Callable[[str, int], tuple[int, str, str]]]:
    """``job(group, n)``: ``(rc, stdout, stderr)`` of the rank script's group at ``n`` ranks.

    Every job the selected tests of this module read is started at once, in test order,
    ``PARALLEL_JOBS`` at a time; each runs once per module.
    """
    wanted: list[Job] = []
    for item in request.session.items:
        declared = getattr(getattr(item, "function", None), "jobs", None)
        if item.module is request.module and declared is not None:
            params = item.callspec.params if hasattr(item, "callspec") else {}
            wanted += [j for j in declared(**params) if j not in wanted]
    pool = ThreadPoolExecutor(PARALLEL_JOBS)
    started: dict[Job, Future] = {j: pool.submit(run_job, j[1], SCRIPT, j[0]) for j in wanted}

    def result(group: str, n: int) -> tuple[int, str, str]:
        if (group, n) not in started:
            started[group, n] = pool.submit(run_job, n, SCRIPT, group)
        return started[group, n].result()

    yield result
    pool.shutdown(cancel_futures=True)


def passed(job: Any, group: str, n: int) -> dict[str, list[dict]]:
    """Every rank of the group's job ran every case it planned; the cases' records by name."""
    rc, out, err = job(group, n)
    assert rc == 0, f"{group} at {n} ranks failed ({rc})\n--- stdout\n{out}\n--- stderr\n{err}"
    assert "Traceback" not in err, err
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    plans = {p["rank"]: p["cases"] for p in records(out, "plan")}
    assert sorted(plans) == list(range(n)) and len({tuple(p) for p in plans.values()}) == 1
    by_name: dict[str, list[dict]] = defaultdict(list)
    for c in records(out, "case"):
        assert c["line_rank"] == c["rank"]  # the launcher's prefix agrees
        by_name[c["name"]].append(c)
    for rank, plan in plans.items():
        ran = [c["name"] for c in records(out, "case") if c["rank"] == rank]
        assert ran == plan, f"rank {rank} ran {ran}, planned {plan}"
    return {name: sorted(cs, key=lambda c: c["rank"]) for name, cs in by_name.items()}


# -- the two groups ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
@uses(lambda n: [("create", n)])
def test_creation_asarray_from_local_and_random(job, n):
    cases = passed(job, "create", n)
    made = cases["zeros_ones_full_empty_every_shape_and_tiling"]
    assert all(c["made"] == ["empty", "full", "ones", "zeros"] for c in made)
    assert all(0.49 < c["mean"] < 0.51 for c in cases["random_statistics"])
    if n == 1:  # a disagreement needs two ranks
        assert "asarray_mismatched_arrays_fail_everywhere" not in cases
        assert "from_local_wrong_piece_fails_everywhere" not in cases
        return
    # The same error, word for word, on every rank, naming the rank that did not fit.
    mismatch = cases["asarray_mismatched_arrays_fail_everywhere"]
    for key in ("shape_message", "dtype_message"):
        assert len({c[key] for c in mismatch}) == 1, mismatch
        assert f"rank {n - 1}" in mismatch[0][key]
    pieces = cases["from_local_wrong_piece_fails_everywhere"]
    for label in ("width", "dtype", "ndim"):
        assert len({c["messages"][label] for c in pieces}) == 1, pieces
        assert f"rank {n - 1}" in pieces[0]["messages"][label]


@pytest.mark.parametrize("n", SIZES)
@uses(lambda n: [("array", n)])
def test_repartition_to_numpy_gather_and_partitioned(job, n):
    cases = passed(job, "array", n)
    assert all(c["steps"] == 12 for c in cases["repartition_through_many_tilings"])
    # Dask-style futures: each rank resolved exactly the tiles it owns (none twice, none lost).
    resolved = [tuple(map(tuple, c["resolved"])) for c in cases["from_partitioned_dask_style"]]
    assert sorted(p for part in resolved for p in part) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    calls = [c["calls"] for c in cases["from_partitioned_ray_style"]]
    assert sorted(k for rank_calls in calls for call in rank_calls for k in call) == [0, 1, 2, 3]
    everywhere = cases["from_partitioned_malformed_everywhere"]
    assert len({tuple(sorted(c["messages"].items())) for c in everywhere}) == 1
    if n > 1:  # the ranks whose dict was fine name the rank whose dict was not
        one = cases["from_partitioned_malformed_on_one_rank"]
        for label, message in one[0]["messages"].items():
            assert f"rank {n - 1}" in message, (label, message)
            assert all(c["messages"][label] == message for c in one[:-1])


# -- random: the same numbers at every rank count ---------------------------------------------


@uses(lambda: [("create", n) for n in SIZES])
def test_random_numbers_do_not_depend_on_the_rank_count(job):
    digests: dict[str, set[str]] = defaultdict(set)
    seen: dict[str, set[int]] = defaultdict(set)
    for n in SIZES:
        cases = passed(job, "create", n)
        for c in cases["random_same_values_under_every_tiling"]:
            for draw in c["draws"]:
                digests[draw["key"]].add(draw["digest"])
                seen[draw["key"]].add(n)
    assert len(digests) == 14
    for key, found in digests.items():
        assert seen[key] == set(SIZES), key
        assert len(found) == 1, f"{key}: different numbers at 1, 2 and 3 ranks: {found}"


# -- outcomes judged here (bugs stay visible: no xfail) ---------------------------------------


@pytest.mark.parametrize("n", SIZES)
@uses(lambda n: [("array", n)])
def test_partitioned_dict_pickles(job, n):
    """The spec (docs/protocol.md): ``__partitioned__`` returns a picklable dict."""
    for c in passed(job, "array", n)["partitioned_out_pickles"]:
        assert c["pickles"], f"rank {c['rank']}: {c['error']}"


@pytest.mark.parametrize("n", SIZES)
@uses(lambda n: [("array", n)])
def test_to_numpy_result_is_the_callers(job, n):
    """Writing into what to_numpy/gather returned leaves the distributed array as it was."""
    for c in passed(job, "array", n)["to_numpy_result_is_a_copy"]:
        assert c["intact"], f"rank {c['rank']}: the array changed to {c['head']}..."


def outcomes(got: list[dict]) -> str:
    """What each rank got, one line per rank (for a failing assertion's message)."""
    return "\n".join(
        f"rank {c['rank']}: {c['error'] or 'no error'}: {c['message'][:160]}" for c in got
    )


@pytest.mark.parametrize("n", [2, 3])
@uses(lambda n: [("array", n)])
def test_from_partitioned_dicts_that_disagree_fail_everywhere(job, n):
    """Valid dicts with different global shapes on different ranks: an error on every rank."""
    got = passed(job, "array", n)["partitioned_dicts_disagree"]
    assert all(c["error"] for c in got), outcomes(got)


@pytest.mark.parametrize("n", [2, 3])
@uses(lambda n: [("array", n)])
def test_from_local_axis_that_disagrees_fails_everywhere(job, n):
    """The last rank passes an axis its piece lacks, the others axis=0: an error everywhere."""
    got = passed(job, "array", n)["from_local_axis_disagrees"]
    assert all(c["error"] for c in got), outcomes(got)


# -- faults: an error on one rank must reach every rank (each case alone in a job) -------------

#: case -> (the error every rank must raise, or None for any but a timeout or a lost peer;
#: words its message must contain on every rank)
FAULTS = {
    "fault_partitioned_bad_data_shape": ("PartitionedError", ("(3, 4)",)),
    "fault_partitioned_local_data_none": ("PartitionedError", ("None",)),
    "fault_asarray_root_unsendable": (None, ("object", "dtype")),
}


@pytest.mark.parametrize("case", sorted(FAULTS))
@uses(lambda case: [(case, 2)])
def test_an_error_on_one_rank_reaches_every_rank(job, case):
    n = 2
    rc, out, err = job(case, n)
    got = sorted(records(out, "fault"), key=lambda f: f["rank"])
    assert [f["rank"] for f in got] == list(range(n)), f"{out}\n{err}"
    kind, needles = FAULTS[case]
    said = outcomes(got)
    for f in got:
        assert f["error"] not in (None, "CommTimeoutError", "PeerLostError"), said
        assert kind is None or f["error"] == kind, said
        assert all(needle in f["message"] for needle in needles), said
    # and the ranks are in step afterwards: a collective works
    assert records(out, "after") == [], outcomes(records(out, "after"))
    assert rc == 0, err
