"""Real multi-process jobs: ranks are separate processes talking UCX through the runtime.

The rank scripts are in ``tests/mp_scripts`` and check their own results (contents, identity,
errors); each test checks that every rank reported success and what it reported. The same
scripts run at 1, 2 and 3 ranks (ring and all-to-all patterns).
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PY, clean_env, records, run_job, script_path

from gpupart.job.slurm import slurm_port

pytestmark = pytest.mark.multiprocess

SIZES = [1, 2, 3]
N_SPECS = 17  # len(mp_scripts/_mp.SPECS)
LOST_WITHIN = 30.0  # every survivor hears of a killed rank within this many seconds


def check_done(n: int, rc: int, out: str, err: str) -> list[dict]:
    """The job exited 0 and every rank reported ``@done`` once, from its own output."""
    assert rc == 0, f"job failed with {rc}\n--- stdout\n{out}\n--- stderr\n{err}"
    done = records(out, "done")
    assert sorted(d["rank"] for d in done) == list(range(n)), out
    for d in done:
        assert d["size"] == n
        assert d.get("line_rank", d["rank"]) == d["rank"]  # the launcher's prefix agrees
    assert "Traceback" not in err, err
    return sorted(done, key=lambda d: d["rank"])


# -- tiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_all_to_all_fetch(n):
    rc, out, err = run_job(n, "fetch_alltoall.py")
    done = check_done(n, rc, out, err)
    # every tile of every rank, both ring neighbours' tiles again, and one single get
    assert all(d["tiles"] == N_SPECS * (n + 2) + 1 for d in done)
    jobs = records(out, "job")
    assert sorted(j["rank"] for j in jobs) == list(range(n))
    assert {j["launcher"] for j in jobs} == {"gpupart"}
    assert len({j["job_id"] for j in jobs}) == 1
    assert all(j["peers"] == list(range(n)) and j["device"] is None for j in jobs)


@pytest.mark.parametrize("n", SIZES)
def test_many_fetches_in_flight(n):
    rc, out, err = run_job(n, "fetch_many.py")
    done = check_done(n, rc, out, err)
    assert all(d["fetches"] == 500 and d["small"] == 5000 for d in done)


@pytest.mark.parametrize("n", SIZES)
def test_bulk_batches_with_faults_deliver_every_good_tile(n):
    rc, out, err = run_job(n, "fetch_bulk.py")
    done = check_done(n, rc, out, err)
    # 300 picks per owner minus the freed one when picked, plus 25 duplicates; 3 faults each
    assert all(d["tiles"] >= 299 * n + 25 and d["faults"] == 3 * n for d in done)


@pytest.mark.parametrize("n", SIZES)
def test_random_calls_keep_every_invariant(n):
    rc, out, err = run_job(n, "fetch_random.py")
    done = check_done(n, rc, out, err)
    assert all(d["calls"] == 8 and d["tiles"] >= 8 for d in done)


@pytest.mark.parametrize("n", SIZES)
def test_out_buffers_and_argument_errors(n):
    rc, out, err = run_job(n, "fetch_out.py")
    done = check_done(n, rc, out, err)
    assert all(d["bad_cases"] == 7 for d in done)


@pytest.mark.parametrize("n", SIZES)
def test_missing_tiles_and_malformed_requests_leave_owners_serving(n):
    rc, out, err = run_job(n, "fetch_errors.py")
    check_done(n, rc, out, err)
    sent = {r["rank"]: r["sent"] for r in records(out, "malformed")}
    assert sent == {r: (6 if n > 1 else 0) for r in range(n)}
    # Each owner logged every bad request it rejected (and nothing crashed it: @done above).
    assert err.count("sent a malformed request") == sum(sent.values()), err


# -- collectives and lifetime -----------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_collectives(n):
    rc, out, err = run_job(n, "collectives.py")
    check_done(n, rc, out, err)
    mismatch = records(out, "mismatch")
    if n > 1:  # the same error, word for word, on every rank
        assert sorted(m["rank"] for m in mismatch) == list(range(n))
        assert len({m["message"] for m in mismatch}) == 1
        assert "same shape and dtype" in mismatch[0]["message"]
    else:
        assert mismatch == []


@pytest.mark.parametrize("n", SIZES)
def test_close_leaves_no_threads(n):
    rc, out, err = run_job(n, "close_clean.py")
    check_done(n, rc, out, err)
    for t in records(out, "threads"):
        assert t["after"] == ["MainThread"]
        if n > 1:  # the runtime did run its threads, and close() stopped them
            assert {"gpupart-progress", "gpupart-control"} <= set(t["running"])
    # close() releases the memory the runtime kept for reuse (and every tile).
    assert len(records(out, "kept")) == n, out
    for k in records(out, "kept"):
        assert all(v == 0 for v in k["after"].values()), k
        if n > 1:  # there was something to release
            assert all(v > 0 for v in k["before"].values()), k


def test_closing_over_tcp_resets_no_connection():
    # Ranks close their endpoints and wait for each other before tearing UCX down; dropping
    # them instead made ucxx log "Connection reset by remote peer" in about half the runs.
    for _ in range(3):
        rc, out, err = run_job(3, "close_clean.py", env={"UCX_TLS": "tcp,self"})
        check_done(3, rc, out, err)
        for needle in ("Connection reset", "UCXX ERROR", "UCX  ERROR"):
            assert needle not in out + err, out + err


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "n", "victim"),
    [("get", 3, 1), ("get", 2, 0), ("barrier", 3, 1), ("barrier", 3, 2)],
)
def test_killed_rank_is_reported_to_every_other_rank(start_ranks, mode, n, victim):
    events = []
    job = start_ranks(n, "peer_lost.py", mode, str(victim), on_event=lambda *e: events.append(e))
    results = job.wait(timeout=120)
    report = "\n".join(r.describe() for r in results)
    assert results[victim].returncode == -signal.SIGKILL, report
    assert records(results[victim].stdout, "dying"), report
    for r in results:
        if r.rank == victim:
            continue
        assert r.returncode == 0, report
        (lost,) = records(r.stdout, "lost")
        assert lost["error"] == "PeerLostError", report
        assert lost["lost_rank"] == victim, report
        assert f"rank {victim} was lost" in lost["message"]
        assert lost["elapsed"] < LOST_WITHIN, report
        (closed,) = records(r.stdout, "closed")
        assert closed["threads"] == ["MainThread"] and closed["seconds"] < LOST_WITHIN, report
    assert ("lost", victim) in [e[:2] for e in events]
    survivors = {r for r in range(n) if r != victim}
    assert {e[1] for e in events if e[0] == "left"} == survivors


def test_killed_rank_fails_the_launched_job():
    started = time.monotonic()
    rc, out, err = run_job(3, "peer_lost.py", "get", "1")
    assert rc == 128 + signal.SIGKILL, f"{rc}\n{out}\n{err}"
    assert "gpupart run: rank 1 was killed by SIGKILL" in err, err
    assert records(out, "dying") == [{"kind": "dying", "line_rank": 1, "mode": "get", "rank": 1}]
    assert time.monotonic() - started < 60


def test_wrong_token_fails_the_launched_job():
    rc, out, err = run_job(3, "wrong_token.py", "1", timeout=90)
    assert rc == 1, f"{rc}\n{out}\n{err}"
    failed = {f["rank"]: f for f in records(out, "failed")}
    assert failed[1]["error"] == "AuthenticationError"
    assert "could not prove the job token" in failed[1]["message"]
    assert "[1] gpupart.errors.AuthenticationError" in err
    assert "coordinator refused a join" in err and "rank 1 did not prove the job token" in err
    assert "gpupart run: rank 1 exited with status 1" in err


def test_wrong_token_without_launcher_fails_every_rank(start_ranks, caplog):
    caplog.set_level("WARNING", logger="gpupart.coordinator")
    started = time.monotonic()
    job = start_ranks(3, "wrong_token.py", "1", tokens={1: secrets.token_bytes(32)}, join_timeout=8)
    results = job.wait(timeout=120)
    report = "\n".join(r.describe() for r in results)
    assert [r.returncode for r in results] == [1, 1, 1], report
    assert time.monotonic() - started < 90, "the job took as long as a hang"
    for r in results:
        (failed,) = records(r.stdout, "failed")
        if r.rank == 1:
            assert failed["error"] == "AuthenticationError", report
        else:  # the coordinator gave up on rank 1 and told the ranks that joined
            assert failed["error"] == "PeerLostError", report
            assert "rank 1 was lost" in failed["message"] and "did not join" in failed["message"]
    assert "rank 1 did not prove the job token" in caplog.text


# -- Slurm ------------------------------------------------------------------------------------


def _free_slurm_job_id() -> str:
    """A fake Slurm job id whose coordinator port (a hash of the id) is free right now."""
    for _ in range(50):
        job = str(secrets.randbelow(10**8) + 10**7)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", slurm_port(job, "0")))
            except OSError:
                continue
        return job
    raise AssertionError("no free port for a fake Slurm job in 50 tries")


@pytest.mark.parametrize("n", [2, 3])
def test_simulated_slurm_step(tmp_path: Path, n):
    job = _free_slurm_job_id()
    procs = []
    files = []
    try:
        for rank in range(n):
            env = clean_env(
                {
                    "SLURM_PROCID": str(rank),
                    "SLURM_NTASKS": str(n),
                    "SLURM_LOCALID": str(rank),
                    "SLURM_NODEID": "0",
                    "SLURM_JOB_ID": job,
                    "SLURM_STEP_ID": "0",
                    "SLURM_STEP_NODELIST": "localhost",
                    "SLURM_STEP_TASKS_PER_NODE": str(n),
                    "GPUPART_TOKEN_DIR": str(tmp_path / "tokens"),
                    "GPUPART_BOOTSTRAP_TIMEOUT": "60",
                }
            )
            out = open(tmp_path / f"{rank}.out", "w+")  # noqa: SIM115 - closed below
            files.append(out)
            procs.append(
                subprocess.Popen(
                    [PY, script_path("fetch_alltoall.py")],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        outputs = []
        for f in files:
            f.seek(0)
            outputs.append(f.read())
            f.close()
    report = "\n".join(f"--- rank {r}\n{o}" for r, o in enumerate(outputs))
    assert codes == [0] * n, report
    for rank, output in enumerate(outputs):
        (info,) = records(output, "job")
        assert info["rank"] == rank and info["size"] == n
        assert info["launcher"] == "slurm" and info["job_id"] == f"{job}.0"
        (done,) = records(output, "done")
        assert done["tiles"] == N_SPECS * (n + 2) + 1
    # The user-only token file (its 0600 creation is tested in test_bootstrap) is deleted by
    # rank 0 once every rank has joined: the secret does not outlive the start-up on disk.
    assert (tmp_path / "tokens").is_dir()
    assert list((tmp_path / "tokens").iterdir()) == []


# -- a rank that fails ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "mode", "style"),
    [(2, "barrier", "with"), (3, "barrier", "with"), (3, "fetch", "with"), (3, "fetch", "atexit")],
)
def test_a_failing_rank_tells_every_other_rank_why_at_once(start_ranks, n, mode, style):
    """Without a launcher to stop them, the others raise PeerLostError quoting the error.

    ``atexit``: the error ends the failing rank's program uncaught (no ``with``); the
    runtime's close at exit must still report it instead of leaving as if all were well.
    """
    bad = n - 1
    events = []
    job = start_ranks(
        n, "failing_rank.py", str(bad), mode, style, on_event=lambda *e: events.append(e)
    )
    results = job.wait(timeout=120)
    report = "\n".join(r.describe() for r in results)
    (failing,) = records(results[bad].stdout, "failing")
    assert results[bad].returncode == 1, report
    assert f"ValueError: rank {bad} cannot go on" in results[bad].stderr, report
    for r in results:
        if r.rank == bad:
            continue
        lost = records(r.stdout, "lost")
        assert len(lost) == 1, report
        (lost,) = lost
        assert lost["error"] == "PeerLostError", report
        assert f"rank {bad} was lost" in lost["message"], report
        assert f"ValueError: rank {bad} cannot go on" in lost["message"], report
        assert lost["at"] - failing["at"] < 5.0, report  # at once, not after close_timeout
    assert ("failed", bad) in [e[:2] for e in events], events


@pytest.mark.parametrize("mode", ["barrier", "fetch"])
def test_a_failing_rank_stops_the_launched_job_fast_and_is_named(mode):
    started = time.monotonic()
    rc, out, err = run_job(3, "failing_rank.py", "2", mode, timeout=90)
    took = time.monotonic() - started
    assert rc == 1, f"{rc}\n{out}\n{err}"
    assert records(out, "failing"), out
    assert "[2] ValueError: rank 2 cannot go on" in err, err  # its own traceback, printed
    assert "gpupart run: rank 2 failed (ValueError: rank 2 cannot go on)" in err, err
    print(f"job of 3 ranks ({mode}) ended {took:.1f} s after it started")
    assert took < 60  # loosely: a hang or a close_timeout per rank would show here


@pytest.mark.parametrize("tls", [None, "tcp,self"])
@pytest.mark.parametrize("n", [2, 3])
def test_a_rank_killed_mid_transfer_is_a_peer_lost_error_for_its_readers(start_ranks, n, tls):
    """Readers of a large tile whose owner dies get PeerLostError, never an abort."""
    env = {"UCX_TLS": tls} if tls else None
    for attempt in range(3):  # the death lands at a different point of a transfer each time
        delay = str(1.0 + 0.3 * attempt)
        job = start_ranks(n, "killed_mid_transfer.py", "0", str(256 << 20), delay, env=env)
        results = job.wait(timeout=120)
        report = "\n".join(r.describe() for r in results)
        assert results[0].returncode == -signal.SIGKILL, report
        for r in results[1:]:
            assert r.returncode == 0, report  # not -6 (SIGABRT from UCX)
            (lost,) = records(r.stdout, "lost")
            assert lost["error"] == "PeerLostError" and lost["lost_rank"] == 0, report


# -- collectives that go wrong ---------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
def test_mismatched_collectives_fail_every_rank_at_once(n):
    rc, out, err = run_job(n, "collective_mismatch.py", timeout=120)
    check_done(n, rc, out, err)
    cases = records(out, "case")
    by_case: dict[str, list[dict]] = {}
    for c in cases:
        by_case.setdefault(c["case"], []).append(c)
    assert len(by_case) == 7, by_case.keys()
    for name, ranks in by_case.items():
        assert sorted(c["rank"] for c in ranks) == list(range(n)), name
        for c in ranks:
            assert c["message"] is not None, f"{name}: rank {c['rank']} did not fail"
            assert c["seconds"] < 30, f"{name}: failed only by timeout: {c}"
        messages = " | ".join(c["message"] for c in ranks)
        if name.startswith("unsendable"):
            assert f"rank {n - 1}" in messages and "cannot be sent" in messages, messages
        else:
            assert "called" in messages and f"rank {n - 1}" in messages, messages
    ops = by_case["allreduce_ops"][0]["message"]
    assert "op='sum'" in ops and "op='max'" in ops, ops


@pytest.mark.parametrize(
    ("n", "delays"),
    # 4 ranks: rank 0 enters first and times out first, waiting for rank 2, which waits for
    # the stuck rank 3 and times out about 0.5 s later: rank 0 must not blame rank 2.
    [(3, []), (4, ["0.2,0.5,0.9"])],
)
def test_a_timeout_names_the_rank_that_is_stuck(start_ranks, n, delays):
    stuck = n - 1
    job = start_ranks(n, "collective_stuck.py", str(stuck), *delays)
    deadline = time.monotonic() + 60
    results = None
    try:
        while time.monotonic() < deadline:
            outs = [p.poll() for p in job.procs[:stuck]]
            if all(o is not None for o in outs):
                break
            time.sleep(0.2)
    finally:
        job.kill(stuck, signal.SIGCONT)
        results = job.wait(timeout=60)
    report = "\n".join(r.describe() for r in results)
    timeouts = [t for r in results[:stuck] for t in records(r.stdout, "timeout")]
    assert sorted(t["rank"] for t in timeouts) == list(range(stuck)), report
    for t in timeouts:
        assert f"rank {stuck} did not answer" in t["message"], report  # never a neighbour


def test_requests_beyond_their_bounds_are_rejected_without_pinning_memory():
    rc, out, err = run_job(2, "crafted_requests.py", timeout=120)
    check_done(2, rc, out, err)
    (memory,) = records(out, "memory")
    assert memory["after"] - memory["before"] < 128, memory  # not the 512 MiB announced
    assert "beyond its bounds" in err, err  # the owner logs whom it refused


def test_close_keeps_its_timeout_when_a_peer_never_closes():
    rc, out, err = run_job(2, "close_alone.py", timeout=60)
    assert rc == 0, f"{rc}\n{out}\n{err}"
    (closed,) = records(out, "closed")
    assert closed["seconds"] < 2.0 + 1.0, closed  # close_timeout, not two or three of them


def test_a_get_that_times_out_on_a_stopped_owner_leaves_out_untouched():
    rc, out, err = run_job(2, "stalled_owner.py", timeout=90)
    check_done(2, rc, out, err)
    (after,) = records(out, "after")
    assert after["untouched"], "bytes landed in out= after the get had failed"
    (owner,) = records(out, "owner")
    assert owner["in_flight"] == 0, owner  # the owner's late sends were drained, not stuck


@pytest.mark.slow
def test_soak_mixed_calls_from_many_threads_keep_every_tile_right_and_memory_flat():
    rc, out, err = run_job(3, "soak.py", "60", timeout=300)
    check_done(3, rc, out, err)
    for s in records(out, "soak"):
        print(s)
        assert s["calls"] > 50, s
        assert s["rss_end"] - s["rss_warm"] < 256, s  # loosely: no leak of tiles or packs
