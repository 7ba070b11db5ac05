"""Two simulated hosts on this machine: placement, and which transport carries the bytes.

``tests/netns.py`` builds two hosts ("hostA", "hostB") from network, UTS and IPC namespaces
joined by a veth pair. A 4-rank job runs as a simulated Slurm step, ranks 0, 1 on hostA and
2, 3 on hostB, rank 0 hosting the coordinator on hostA's veth address (found through the
host name, as on a real cluster). Each host's namespace has only ``lo`` and its veth end, so
its byte counters show where a transfer went: a 64 MiB tile fetched across hosts must cross
the veth (UCX over TCP); one fetched within a host must cross neither the veth nor ``lo``, so
it went through shared memory (UCX sysv/posix + cma), not TCP.

The job runs once per module; the tests below each check one claim about its outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from netns import NamespaceError, SimHost, SimHosts, missing_requirements

PY = sys.executable
SCRIPT = Path(__file__).parent / "netns_scripts" / "two_hosts_rank.py"
HOSTS = ["hostA", "hostB"]
RANKS_PER_HOST = 2
MIB = 1 << 20
TILE = 64 * MIB  # two_hosts_rank.TILE_BYTES
QUIET = 1 * MIB  # at most this may cross an interface a transfer must not use
OPERATION_TIMEOUT = 30  # seconds, inside the ranks (< JOB_TIMEOUT < the pytest timeout)
JOB_TIMEOUT = 50.0

pytestmark = [pytest.mark.netns, pytest.mark.multiprocess, pytest.mark.timeout(120)]


def base_env() -> dict[str, str]:
    """The test's environment without launcher variables or UCX settings (e.g. UCX_TLS)."""
    prefixes = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_", "UCX_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@dataclass
class Job:
    """What the 4-rank job left behind."""

    hosts: list[SimHost]
    returncodes: dict[int, int | None] = field(default_factory=dict)
    stdout: dict[int, str] = field(default_factory=dict)
    stderr: dict[int, str] = field(default_factory=dict)
    results: dict[int, dict] = field(default_factory=dict)
    #: Interface byte counters read from outside, per host, before and after the job.
    before: dict[str, dict] = field(default_factory=dict)
    after: dict[str, dict] = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        for rank in sorted(self.returncodes):
            parts.append(
                f"--- rank {rank}: exit status {self.returncodes[rank]}\n"
                f"stdout:\n{self.stdout[rank][-3000:]}\nstderr:\n{self.stderr[rank][-3000:]}"
            )
        return "\n".join(parts)

    def result(self, rank: int) -> dict:
        if rank not in self.results:
            pytest.fail(f"rank {rank} printed no RESULT line\n{self.describe()}")
        return self.results[rank]

    def host_of(self, rank: int) -> SimHost:
        return self.hosts[rank // RANKS_PER_HOST]


@pytest.fixture(scope="module")
def sim_hosts():
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    try:
        built = SimHosts(HOSTS, tag=f"gp{os.getpid() % 10**8}")
    except NamespaceError as exc:  # e.g. an unprivileged container: no CAP_SYS_ADMIN
        pytest.skip(f"cannot build network namespaces here: {exc}")
    try:
        yield built.hosts
    finally:
        built.close()


def rank_env(rank: int, token_dir: Path) -> dict[str, str]:
    env = base_env()
    env.update(
        SLURM_JOB_ID=f"netns{os.getpid()}",
        SLURM_STEP_ID="0",
        SLURM_PROCID=str(rank),
        SLURM_NTASKS=str(len(HOSTS) * RANKS_PER_HOST),
        SLURM_LOCALID=str(rank % RANKS_PER_HOST),
        SLURM_NODEID=str(rank // RANKS_PER_HOST),
        SLURM_STEP_NODELIST=",".join(HOSTS),
        SLURM_STEP_TASKS_PER_NODE=f"{RANKS_PER_HOST}(x{len(HOSTS)})",
        GPUPART_TOKEN_DIR=str(token_dir),
        GPUPART_DEVICE="cpu",
        GPUPART_BOOTSTRAP_TIMEOUT=str(OPERATION_TIMEOUT),
        GPUPART_TIMEOUT=str(OPERATION_TIMEOUT),
        GPUPART_FETCH_TIMEOUT=str(OPERATION_TIMEOUT),
    )
    return env


def stop(proc: subprocess.Popen) -> None:
    """Kill a rank's session (the rank is its leader) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def job(sim_hosts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("netns-job")
    outcome = Job(hosts=sim_hosts)
    outcome.before = {h.name: h.counters() for h in sim_hosts}
    procs: dict[int, subprocess.Popen] = {}
    with contextlib.ExitStack() as files:
        try:
            for rank in range(len(HOSTS) * RANKS_PER_HOST):
                procs[rank] = subprocess.Popen(
                    outcome.host_of(rank).command([PY, str(SCRIPT)]),
                    env=rank_env(rank, tmp / "tokens"),
                    stdin=subprocess.DEVNULL,
                    stdout=files.enter_context((tmp / f"rank{rank}.out").open("w")),
                    stderr=files.enter_context((tmp / f"rank{rank}.err").open("w")),
                    start_new_session=True,  # its own process group: stop() kills all of it
                )
            deadline = time.monotonic() + JOB_TIMEOUT
            for rank, proc in procs.items():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                outcome.returncodes[rank] = proc.returncode  # None: still running, killed below
        finally:
            for proc in procs.values():
                stop(proc)
    for rank in procs:
        outcome.stdout[rank] = (tmp / f"rank{rank}.out").read_text(errors="replace")
        outcome.stderr[rank] = (tmp / f"rank{rank}.err").read_text(errors="replace")
        for line in outcome.stdout[rank].splitlines():
            if line.startswith("RESULT "):
                outcome.results[rank] = json.loads(line.removeprefix("RESULT "))
    outcome.after = {h.name: h.counters() for h in sim_hosts}
    return outcome


def test_every_rank_exits_cleanly(job):
    assert job.returncodes == dict.fromkeys(range(4), 0), job.describe()
    assert all(job.result(rank)["closed"] for rank in range(4))


def test_placement_reports_two_hosts(job):
    for rank in range(4):
        got = job.result(rank)
        assert got["host"] == job.host_of(rank).name
        assert got["local"] == [rank % RANKS_PER_HOST, RANKS_PER_HOST]
        peers = got["peers"]
        assert [p["rank"] for p in peers] == [0, 1, 2, 3]
        assert [p["host"] for p in peers] == ["hostA", "hostA", "hostB", "hostB"]
        assert len({p["host"] for p in peers}) == 2
        assert [p["ip"] for p in peers] == [job.host_of(r).address for r in range(4)]
        assert [p["pid"] for p in peers] == [job.result(r)["pid"] for r in range(4)]
        assert got["handle_hosts"] == ["hostA", "hostA", "hostB", "hostB"]


def phases(job) -> dict[tuple[str, str], dict]:
    """``{(phase, host name): {ifname: {'rx': n, 'tx': n}}}`` as the ranks measured them."""
    out = {}
    for rank in (0, RANKS_PER_HOST):  # the first rank of each host measures its counters
        for phase in job.result(rank)["phases"]:
            out[phase["name"], job.host_of(rank).name] = phase["delta"]
    return out


def test_ranks_listen_only_on_the_interface_the_job_uses(job):
    """UCX (and rank 0's coordinator) listen on the host's veth address only: not on lo or *."""
    for rank in range(4):
        listening = job.result(rank)["listening"]
        assert listening, (rank, "UCX over TCP listens somewhere")
        addresses = {entry.rsplit(":", 1)[0] for entry in listening}
        assert addresses == {job.host_of(rank).address}, (rank, listening)


def test_cross_host_fetch_goes_over_tcp_on_the_veth(job):
    deltas = phases(job)
    print(
        "netns counter deltas (bytes): "
        + json.dumps({f"{p}@{h}": d for (p, h), d in deltas.items()})
    )
    for name, owner, dst in (("cross-a-to-b", 0, 2), ("cross-b-to-a", 3, 1)):
        src_host, dst_host = job.host_of(owner), job.host_of(dst)
        sent = deltas[name, src_host.name]
        received = deltas[name, dst_host.name]
        assert TILE <= sent[src_host.veth]["tx"] < 1.5 * TILE, (name, sent)
        assert TILE <= received[dst_host.veth]["rx"] < 1.5 * TILE, (name, received)
        for measured in (sent, received):
            assert sum(measured["lo"].values()) < QUIET, (name, measured)


def test_same_host_fetch_goes_through_shared_memory(job):
    deltas = phases(job)
    for name, host in (("same-host-a", job.hosts[0]), ("same-host-b", job.hosts[1])):
        measured = deltas[name, host.name]
        assert set(measured) == {"lo", host.veth}, measured  # no other way out of the host
        assert sum(measured[host.veth].values()) < QUIET, (name, measured)
        assert sum(measured["lo"].values()) < QUIET, (name, measured)  # not TCP over loopback
        other = job.hosts[1] if host is job.hosts[0] else job.hosts[0]
        assert sum(deltas[name, other.name][other.veth].values()) < QUIET, (name, deltas)


def test_counters_read_from_outside_agree(job):
    """Over the whole job, counted by the test: two tiles crossed the veth, none used lo."""
    assert job.returncodes == dict.fromkeys(range(4), 0), job.describe()
    for host in job.hosts:
        before, after = job.before[host.name], job.after[host.name]
        veth = {way: after[host.veth][way] - before[host.veth][way] for way in ("rx", "tx")}
        lo = {way: after["lo"][way] - before["lo"][way] for way in ("rx", "tx")}
        # One tile left each host and one arrived: the same-host tiles added nothing.
        assert TILE <= veth["tx"] < 1.5 * TILE, (host.name, veth)
        assert TILE <= veth["rx"] < 1.5 * TILE, (host.name, veth)
        assert sum(lo.values()) < 16 * MIB, (host.name, lo)  # joining the coordinator, no tile


def test_collectives_across_hosts(job):
    for rank in range(4):
        got = job.result(rank)["collectives"]
        assert got["sum"] == [6.0, 4.0]
        assert got["max"] == 3
        assert got["hosts"] == ["hostA", "hostA", "hostB", "hostB"]
        assert got["word"] == "from hostB"


def test_no_ucx_errors(job):
    """Nothing went wrong quietly: no UCX or UCXX ERROR line, also not at close."""
    errors = [
        f"rank {rank}: {line}"
        for rank, text in job.stderr.items()
        for line in text.splitlines()
        if "ERROR" in line
    ]
    assert not errors, "\n".join(errors)
