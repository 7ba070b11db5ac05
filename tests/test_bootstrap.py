"""Bootstrap: Slurm syntax, launcher precedence, Slurm token files, MPI variables, errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gpupart.errors import BootstrapError
from gpupart.job.bootstrap import JobSpec, detect, exchange_via_mpi
from gpupart.job.slurm import expand_hostlist, expand_tasks_per_node, slurm_port
from gpupart.job.tokens import slurm_token_file

TOKEN_HEX = "ab" * 32

# -- Slurm syntax ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "hosts"),
    [
        ("gpu01", ["gpu01"]),
        ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
        ("a[1-2]-ib,b3", ["a1-ib", "a2-ib", "b3"]),
        ("node[008-011]", ["node008", "node009", "node010", "node011"]),
        ("n[9-11]", ["n9", "n10", "n11"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        (
            "rack[1-2]-node[01-02]-ib",
            [
                "rack1-node01-ib",
                "rack1-node02-ib",
                "rack2-node01-ib",
                "rack2-node02-ib",
            ],
        ),
        ("x[0]", ["x0"]),
        ("gpu[01-02],login[1,3]", ["gpu01", "gpu02", "login1", "login3"]),
        ("a,b,c", ["a", "b", "c"]),
        ("a, b", ["a", "b"]),
        ("[1-2]", ["1", "2"]),
        ("nid[001000-001002]", ["nid001000", "nid001001", "nid001002"]),
        ("host.example.org", ["host.example.org"]),
    ],
)
def test_expand_hostlist(spec, hosts):
    assert expand_hostlist(spec) == hosts


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "gpu[",
        "gpu]",
        "gpu[1-",
        "gpu[3-1]",
        "gpu[a-b]",
        "gpu[[1]]",
        "gpu[]",
        "gpu[1-2",
        "a,,b",
        "a,",
        "a b",
        "gpu[1,,2]",
        "gpu[-1]",
        "n[0-99999999]",
    ],
)
def test_expand_hostlist_rejects(spec):
    with pytest.raises(BootstrapError, match="expected a Slurm hostlist"):
        expand_hostlist(spec)


@pytest.mark.parametrize(
    ("spec", "counts"),
    [
        ("2(x3),1", [2, 2, 2, 1]),
        ("4", [4]),
        ("1(x2)", [1, 1]),
        ("3,2(x2),1", [3, 2, 2, 1]),
        ("8(x1)", [8]),
    ],
)
def test_expand_tasks_per_node(spec, counts):
    assert expand_tasks_per_node(spec) == counts


@pytest.mark.parametrize("spec", ["", "0", "2(x0)", "x", "2(3)", "-1", "2(x3", "2,,1", "a(x2)"])
def test_expand_tasks_per_node_rejects(spec):
    with pytest.raises(BootstrapError, match=r"expected comma-separated task counts"):
        expand_tasks_per_node(spec)


def test_slurm_port_is_deterministic_and_unprivileged():
    assert slurm_port("4242", "0") == slurm_port("4242", "0")
    ports = {slurm_port("4242", str(step)) for step in range(20)}
    assert len(ports) > 1
    assert all(1024 < p < 32768 for p in ports)


# -- helpers -----------------------------------------------------------------------------


def launcher_env(rank=1, size=3, **extra):
    env = {
        "GPUPART_RANK": str(rank),
        "GPUPART_SIZE": str(size),
        "GPUPART_LOCAL_RANK": str(rank),
        "GPUPART_LOCAL_SIZE": str(size),
        "GPUPART_COORDINATOR": "127.0.0.1:5555",
        "GPUPART_JOB_TOKEN": TOKEN_HEX,
        "GPUPART_JOB_ID": "run-abc",
    }
    env.update(extra)
    return env


def slurm_env(tmp_path, rank, *, nodes="gpu[01-02]", tasks="2(x2)", size=4, **extra):
    per_node = expand_tasks_per_node(tasks)
    node, local = 0, rank
    while local >= per_node[node]:
        local -= per_node[node]
        node += 1
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_NTASKS": str(size),
        "SLURM_STEP_NUM_TASKS": str(size),
        "SLURM_LOCALID": str(local),
        "SLURM_NODEID": str(node),
        "SLURM_STEP_TASKS_PER_NODE": tasks,
        "SLURM_TASKS_PER_NODE": tasks,
        "SLURM_STEP_NODELIST": nodes,
        "SLURM_JOB_NODELIST": nodes,
        "GPUPART_TOKEN_DIR": str(tmp_path / "tokens"),
        "GPUPART_BOOTSTRAP_TIMEOUT": "10",
        "GPUPART_COORDINATOR_HOST": "127.0.0.1",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def mpich_env(rank=1, size=2, **extra):
    env = {
        "PMI_RANK": str(rank),
        "PMI_SIZE": str(size),
        "MPI_LOCALRANKID": str(rank),
        "MPI_LOCALNRANKS": str(size),
        "PMI_FD": "9",
    }
    env.update(extra)
    return env


def ompi_env(rank=1, size=2, **extra):
    env = {
        "OMPI_COMM_WORLD_RANK": str(rank),
        "OMPI_COMM_WORLD_SIZE": str(size),
        "OMPI_COMM_WORLD_LOCAL_RANK": str(rank),
        "OMPI_COMM_WORLD_LOCAL_SIZE": str(size),
    }
    env.update(extra)
    return env


# -- precedence --------------------------------------------------------------------------


def test_single_by_default():
    spec = detect({})
    assert (spec.launcher, spec.rank, spec.size, spec.local_rank, spec.local_size) == (
        "single",
        0,
        1,
        0,
        1,
    )
    assert spec.coordinator is None and spec.token is None and not spec.serve_coordinator


def test_launcher_wins_over_slurm_and_mpi(tmp_path):
    env = {**slurm_env(tmp_path, 2), **mpich_env(0, 2), **launcher_env(1, 3)}
    spec = detect(env)
    assert spec.launcher == "gpupart" and spec.rank == 1
    assert not (tmp_path / "tokens").exists()  # no Slurm token work


def test_slurm_wins_over_mpi_when_they_agree(tmp_path):
    env = {**slurm_env(tmp_path, 0), **mpich_env(0, 4, MPI_LOCALNRANKS="2")}
    assert detect(env).launcher == "slurm"


def test_mpi_wins_when_slurm_disagrees(tmp_path):
    # mpirun inside an allocation: its daemons are srun tasks, one per node.
    env = {
        **slurm_env(tmp_path, 1, size=2, tasks="1(x2)"),
        **ompi_env(5, 8, OMPI_COMM_WORLD_LOCAL_RANK="1", OMPI_COMM_WORLD_LOCAL_SIZE="4"),
    }
    spec = detect(env)
    assert (spec.launcher, spec.rank, spec.size) == ("mpi", 5, 8)


def test_mpi_wins_over_single():
    assert detect(mpich_env()).launcher == "mpi"


def test_batch_script_without_srun_is_single(tmp_path):
    env = slurm_env(tmp_path, 0, SLURM_STEP_ID=None)
    assert detect(env).launcher == "single"
    env = slurm_env(tmp_path, 0, SLURM_STEP_ID="4294967291")  # Slurm's batch step id
    assert detect(env).launcher == "single"
    assert not (tmp_path / "tokens").exists()


# -- the gpupart launcher's variables ----------------------------------------------------


def test_launcher_variables():
    spec = detect(launcher_env(2, 3, GPUPART_NODE_ID="0"))
    assert spec == JobSpec(
        rank=2,
        size=3,
        local_rank=2,
        local_size=3,
        node_id=0,
        launcher="gpupart",
        job_id="run-abc",
        coordinator=("127.0.0.1", 5555),
        serve_coordinator=False,
        token=bytes.fromhex(TOKEN_HEX),
        bind_host=None,
    )
    assert TOKEN_HEX not in repr(spec)


def test_launcher_ipv6_coordinator():
    assert detect(launcher_env(GPUPART_COORDINATOR="[::1]:80")).coordinator == ("::1", 80)


# -- Slurm -------------------------------------------------------------------------------


def test_slurm_rank0_creates_token_and_rank1_reads_it(tmp_path):
    spec0 = detect(slurm_env(tmp_path, 0))
    path = slurm_token_file(tmp_path / "tokens", "4242", "0")
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(spec0.token) == 32
    assert spec0.serve_coordinator and spec0.bind_host == "127.0.0.1"
    assert spec0.job_id == "4242.0"
    assert spec0.coordinator == ("127.0.0.1", slurm_port("4242", "0"))

    spec3 = detect(slurm_env(tmp_path, 3))
    assert spec3.token == spec0.token
    assert (spec3.rank, spec3.size, spec3.local_rank, spec3.local_size, spec3.node_id) == (
        3,
        4,
        1,
        2,
        1,
    )
    assert not spec3.serve_coordinator and spec3.bind_host is None
    assert spec3.coordinator == ("127.0.0.1", slurm_port("4242", "0"))  # GPUPART_COORDINATOR_HOST


def test_slurm_coordinator_on_first_node(tmp_path):
    env = slurm_env(tmp_path, 2, GPUPART_COORDINATOR_HOST=None, GPUPART_JOB_TOKEN=TOKEN_HEX)
    spec = detect(env)
    assert spec.coordinator == ("gpu01", slurm_port("4242", "0"))
    assert spec.token == bytes.fromhex(TOKEN_HEX)
    assert not (tmp_path / "tokens").exists()


def test_slurm_single_node_uses_loopback(tmp_path):
    env = slurm_env(tmp_path, 0, nodes="somenode", tasks="2", size=2, GPUPART_COORDINATOR_HOST=None)
    spec = detect(env)
    assert spec.coordinator == ("127.0.0.1", slurm_port("4242", "0"))
    assert spec.bind_host == "127.0.0.1"


def test_slurm_coordinator_override(tmp_path):
    env = slurm_env(tmp_path, 1, GPUPART_COORDINATOR="10.0.0.7:29500", GPUPART_JOB_TOKEN=TOKEN_HEX)
    assert detect(env).coordinator == ("10.0.0.7", 29500)


def test_slurm_fallback_variables(tmp_path):
    env = slurm_env(
        tmp_path,
        3,
        nodes="n[1-3]",
        tasks="2,1,1",
        SLURM_STEP_TASKS_PER_NODE=None,
        SLURM_STEP_NODELIST=None,
        SLURM_STEP_NUM_TASKS=None,
        GPUPART_JOB_TOKEN=TOKEN_HEX,
        GPUPART_COORDINATOR_HOST=None,
    )
    spec = detect(env)
    assert (spec.local_rank, spec.local_size, spec.node_id) == (0, 1, 2)
    assert spec.coordinator[0] == "n1"


def test_slurm_other_rank_waits_for_the_token(tmp_path):
    result = {}

    def rank1():
        result["spec"] = detect(slurm_env(tmp_path, 1))

    thread = threading.Thread(target=rank1)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # still waiting for rank 0
    spec0 = detect(slurm_env(tmp_path, 0))
    thread.join(10)
    assert not thread.is_alive()
    assert result["spec"].token == spec0.token


def test_slurm_token_wait_times_out(tmp_path):
    env = slurm_env(tmp_path, 1, GPUPART_BOOTSTRAP_TIMEOUT="0.2")
    with pytest.raises(BootstrapError, match="GPUPART_BOOTSTRAP_TIMEOUT") as info:
        detect(env)
    assert "GPUPART_TOKEN_DIR" in str(info.value)


def test_slurm_token_file_with_loose_permissions_is_refused(tmp_path):
    detect(slurm_env(tmp_path, 0))
    path = slurm_token_file(tmp_path / "tokens", "4242", "0")
    path.chmod(0o644)
    with pytest.raises(BootstrapError, match="0644"):
        detect(slurm_env(tmp_path, 1))


def test_slurm_token_dir_with_loose_permissions_is_refused(tmp_path):
    (tmp_path / "tokens").mkdir(mode=0o755)
    (tmp_path / "tokens").chmod(0o755)
    with pytest.raises(BootstrapError, match=r"GPUPART_TOKEN_DIR.*0755"):
        detect(slurm_env(tmp_path, 0))


def test_slurm_stale_token_file_is_refused(tmp_path):
    detect(slurm_env(tmp_path, 0))
    with pytest.raises(BootstrapError, match="already exists"):
        detect(slurm_env(tmp_path, 0))
    # A requeued job (same id, new restart count) gets a new file.
    spec = detect(slurm_env(tmp_path, 0, SLURM_RESTART_COUNT="1"))
    assert slurm_token_file(tmp_path / "tokens", "4242", "0", 1).exists()
    assert len(spec.token) == 32


# -- MPI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make_env", [mpich_env, ompi_env])
def test_mpi_variables(make_env):
    spec1 = detect(make_env(1, 2))
    assert (spec1.launcher, spec1.rank, spec1.size, spec1.local_rank, spec1.local_size) == (
        "mpi",
        1,
        2,
        1,
        2,
    )
    assert spec1.coordinator is None and spec1.token is None and not spec1.serve_coordinator
    spec0 = detect(make_env(0, 2))
    assert spec0.serve_coordinator and spec0.bind_host == "127.0.0.1"
    assert spec0.coordinator is None and len(spec0.token) == 32  # broadcast by the exchange


def test_mvapich_and_pmix_variables():
    env = {"MV2_COMM_WORLD_RANK": "3", "MV2_COMM_WORLD_SIZE": "4"}
    spec = detect(env)
    assert (spec.rank, spec.size, spec.local_rank, spec.local_size) == (3, 4, 0, 1)
    spec = detect({"PMIX_RANK": "1", "PMIX_SIZE": "2", "PMIX_NAMESPACE": "prte-x@1"})
    assert (spec.launcher, spec.rank, spec.size, spec.job_id) == ("mpi", 1, 2, "mpi-prte-x@1")


def test_mpi_with_coordinator_override_needs_no_exchange():
    env = ompi_env(1, 2, GPUPART_COORDINATOR="node1:7000", GPUPART_JOB_TOKEN=TOKEN_HEX)
    spec = detect(env)
    assert spec.coordinator == ("node1", 7000) and spec.token == bytes.fromhex(TOKEN_HEX)


# -- every error names its variable ------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (launcher_env(GPUPART_RANK="x"), "GPUPART_RANK"),
        (launcher_env(GPUPART_RANK="3"), "GPUPART_RANK"),
        (launcher_env(GPUPART_RANK="-1"), "GPUPART_RANK"),
        (launcher_env(GPUPART_SIZE="0"), "GPUPART_SIZE"),
        ({"GPUPART_RANK": "0"}, "GPUPART_SIZE"),
        (
            {k: v for k, v in launcher_env().items() if k != "GPUPART_LOCAL_RANK"},
            "GPUPART_LOCAL_RANK",
        ),
        (launcher_env(GPUPART_LOCAL_RANK="3"), "GPUPART_LOCAL_RANK"),
        (launcher_env(GPUPART_LOCAL_SIZE="4", GPUPART_LOCAL_RANK="0"), "GPUPART_LOCAL_SIZE"),
        (launcher_env(GPUPART_NODE_ID="a"), "GPUPART_NODE_ID"),
        (launcher_env(GPUPART_COORDINATOR="nohostport"), "GPUPART_COORDINATOR"),
        (launcher_env(GPUPART_COORDINATOR="host:0"), "GPUPART_COORDINATOR"),
        (launcher_env(GPUPART_COORDINATOR="host:70000"), "GPUPART_COORDINATOR"),
        (launcher_env(GPUPART_COORDINATOR=":80"), "GPUPART_COORDINATOR"),
        (
            {k: v for k, v in launcher_env().items() if k != "GPUPART_COORDINATOR"},
            "GPUPART_COORDINATOR",
        ),
        (launcher_env(GPUPART_JOB_TOKEN="zz" * 32), "GPUPART_JOB_TOKEN"),
        (launcher_env(GPUPART_JOB_TOKEN="abcd"), "GPUPART_JOB_TOKEN"),
        ({k: v for k, v in launcher_env().items() if k != "GPUPART_JOB_ID"}, "GPUPART_JOB_ID"),
        (launcher_env(GPUPART_JOB_ID=" "), "GPUPART_JOB_ID"),
        (mpich_env(PMI_RANK="a"), "PMI_RANK"),
        ({"PMI_RANK": "0"}, "PMI_SIZE"),
        (mpich_env(PMI_RANK="2"), "PMI_RANK"),
        (mpich_env(MPI_LOCALRANKID="5"), "MPI_LOCALRANKID"),
        (mpich_env(MPI_LOCALNRANKS="x"), "MPI_LOCALNRANKS"),
        (ompi_env(OMPI_COMM_WORLD_SIZE="two"), "OMPI_COMM_WORLD_SIZE"),
        (ompi_env(OMPI_COMM_WORLD_LOCAL_SIZE="3"), "OMPI_COMM_WORLD_LOCAL_SIZE"),
        ({"PMIX_RANK": "0"}, "PMIX_SIZE"),
        (ompi_env(GPUPART_COORDINATOR="h:1"), "GPUPART_JOB_TOKEN"),
        (ompi_env(0, GPUPART_COORDINATOR_HOST=" "), "GPUPART_COORDINATOR_HOST"),
    ],
)
def test_errors_name_their_variable(env, variable):
    with pytest.raises(BootstrapError) as info:
        detect(env)
    message = str(info.value)
    assert message.startswith(variable) or variable in message
    assert "expected" in message and "found" in message
    assert "zz" * 32 not in message  # secrets (even malformed ones) are never echoed


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SLURM_PROCID": "a"}, "SLURM_PROCID"),
        ({"SLURM_PROCID": "4"}, "SLURM_PROCID"),
        ({"SLURM_STEP_NUM_TASKS": None, "SLURM_NTASKS": None}, "SLURM_NTASKS"),
        ({"SLURM_STEP_NUM_TASKS": "0"}, "SLURM_STEP_NUM_TASKS"),
        ({"SLURM_LOCALID": "2"}, "SLURM_LOCALID"),
        ({"SLURM_LOCALID": None}, "SLURM_LOCALID"),
        ({"SLURM_NODEID": "5"}, "SLURM_NODEID"),
        ({"SLURM_STEP_TASKS_PER_NODE": "2(x"}, "SLURM_STEP_TASKS_PER_NODE"),
        ({"SLURM_STEP_TASKS_PER_NODE": "2(x3)"}, "SLURM_STEP_TASKS_PER_NODE"),
        ({"SLURM_STEP_NODELIST": "gpu[01-"}, "SLURM_STEP_NODELIST"),
        ({"SLURM_STEP_NODELIST": "gpu[01-03]"}, "SLURM_STEP_NODELIST"),
        ({"SLURM_STEP_NODELIST": None, "SLURM_JOB_NODELIST": None}, "SLURM_STEP_NODELIST"),
        ({"SLURM_STEP_ID": "abc"}, "SLURM_STEP_ID"),
        ({"SLURM_JOB_ID": None}, "SLURM_JOB_ID"),
        ({"SLURM_RESTART_COUNT": "x"}, "SLURM_RESTART_COUNT"),
        ({"GPUPART_BOOTSTRAP_TIMEOUT": "-1"}, "GPUPART_BOOTSTRAP_TIMEOUT"),
        ({"GPUPART_BOOTSTRAP_TIMEOUT": "soon"}, "GPUPART_BOOTSTRAP_TIMEOUT"),
        ({"GPUPART_COORDINATOR": "x:y"}, "GPUPART_COORDINATOR"),
        ({"GPUPART_COORDINATOR_HOST": "a b"}, "GPUPART_COORDINATOR_HOST"),
        ({"GPUPART_JOB_TOKEN": "0x12"}, "GPUPART_JOB_TOKEN"),
        ({"GPUPART_TOKEN_DIR": ""}, "GPUPART_TOKEN_DIR"),
    ],
)
def test_slurm_errors_name_their_variable(tmp_path, change, variable):
    with pytest.raises(BootstrapError) as info:
        detect(slurm_env(tmp_path, 1, **change))
    message = str(info.value)
    assert variable in message
    assert "expected" in message and "found" in message


def test_errors_pickle():
    import pickle

    try:
        detect(launcher_env(GPUPART_RANK="x"))
    except BootstrapError as exc:
        again = pickle.loads(pickle.dumps(exc))
        assert type(again) is BootstrapError and str(again) == str(exc)


# -- exchange_via_mpi --------------------------------------------------------------------


def test_exchange_without_mpi4py_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    spec = detect(mpich_env(1, 2))
    with pytest.raises(BootstrapError, match=r"install it.*gpupart run.*GPUPART_COORDINATOR"):
        exchange_via_mpi(spec, lambda: ("127.0.0.1", 1))


def test_exchange_with_preset_coordinator_needs_no_mpi(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    env = mpich_env(0, 2, GPUPART_COORDINATOR="127.0.0.1:7000", GPUPART_JOB_TOKEN=TOKEN_HEX)
    spec = detect(env)
    served = []
    assert exchange_via_mpi(spec, lambda: served.append(1) or ("127.0.0.1", 7000)) is spec
    assert served == [1]


def test_exchange_needs_an_mpi_spec():
    with pytest.raises(BootstrapError, match="expected an 'mpi' job"):
        exchange_via_mpi(detect({}), lambda: ("127.0.0.1", 1))


def _mpiexec() -> str:
    pytest.importorskip("mpi4py")
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec next to the Python interpreter or on PATH")
    return found


_EXCHANGE_SCRIPT = """
import json, os, sys
from gpupart.job.bootstrap import detect, exchange_via_mpi
from gpupart.job.coordinator import Coordinator, CoordinatorClient
from gpupart.errors import BootstrapError

spec = detect()
served = []

def serve():
    served.append(spec.rank)
    if sys.argv[1] == "fail":
        raise OSError("port in use")
    return ("10.1.2.3", 4567)

def serve_for_real():
    # What the runtime does: host the coordinator with rank 0's token on spec.bind_host.
    coordinator = Coordinator(spec.size, spec.token, job_id=spec.job_id, host=spec.bind_host)
    served.append(coordinator.start())
    return coordinator.address

try:
    done = exchange_via_mpi(spec, serve_for_real if sys.argv[1] == "join" else serve, timeout=30)
    if sys.argv[1] == "join":
        client = CoordinatorClient(
            done.coordinator, done.token, job_id=done.job_id, rank=done.rank, timeout=30
        )
        table = client.join({"rank": done.rank})
        client.close()
        for coordinator in served:
            coordinator.close()
        served[:] = [row["rank"] for row in table]
except BootstrapError as exc:
    row = {"rank": spec.rank, "error": str(exc)}
else:
    row = {
        "rank": done.rank, "size": done.size, "launcher": done.launcher,
        "coordinator": done.coordinator, "token": done.token.hex(), "job_id": done.job_id,
        "node_id": done.node_id, "served": served,
    }
# One file per rank: mpiexec interleaves the ranks' stdout, even within a line.
with open(os.path.join(sys.argv[2], f"rank{spec.rank}.json"), "w") as f:
    json.dump(row, f)
"""


def _run_mpi(tmp_path, mode):
    script = tmp_path / "exchange.py"
    script.write_text(textwrap.dedent(_EXCHANGE_SCRIPT))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_"))
    }
    proc = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(script), mode, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    return sorted(rows, key=lambda row: row["rank"])


@pytest.mark.slow
def test_exchange_via_mpi_for_real(tmp_path):
    rows = _run_mpi(tmp_path, "ok")
    assert [row["rank"] for row in rows] == [0, 1]
    for row in rows:
        assert row["launcher"] == "mpi" and row["size"] == 2
        assert row["coordinator"] == ["10.1.2.3", 4567]
        assert row["node_id"] == 0
    assert rows[0]["token"] == rows[1]["token"] and len(rows[0]["token"]) == 64
    assert rows[0]["job_id"] == rows[1]["job_id"]
    assert rows[0]["served"] == [0] and rows[1]["served"] == []


@pytest.mark.slow
def test_exchange_via_mpi_reports_a_failed_serve_on_every_rank(tmp_path):
    rows = _run_mpi(tmp_path, "fail")
    assert [row["rank"] for row in rows] == [0, 1]
    for row in rows:
        assert "rank 0 could not start the job coordinator" in row["error"]
        assert "port in use" in row["error"]


@pytest.mark.slow
def test_exchange_via_mpi_then_join_the_coordinator(tmp_path):
    rows = _run_mpi(tmp_path, "join")
    assert [row["rank"] for row in rows] == [0, 1]
    assert rows[0]["coordinator"] == rows[1]["coordinator"]
    assert rows[0]["coordinator"][0] == "127.0.0.1"  # one node: the loopback interface
    assert rows[0]["served"] == rows[1]["served"] == [0, 1]  # both got the full table


# -- a whole Slurm job, task by task, as srun starts it ----------------------------------


def _eight_gpus():
    """One node's eight GPUs (NVML index i at PCI bus 0000:<i+1>:00.0), four per NUMA node."""
    from gpupart import topology

    gpus = tuple(
        topology.GpuInfo(
            index=i,
            pci_bus_id=f"0000:{i + 1:02x}:00.0",
            uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000",
            name="NVIDIA H100",
            numa_node=i // 4,
            cpu_affinity=tuple(range(i // 4 * 16, i // 4 * 16 + 16)),
            memory_total=80 << 30,
        )
        for i in range(8)
    )
    numa = (topology.NumaNode(0, tuple(range(16))), topology.NumaNode(1, tuple(range(16, 32))))
    return topology.HostTopology(hostname="node", primary_ip="10.1.0.9", numa_nodes=numa, gpus=gpus)


def srun_tasks(nodelist, tasks_per_node, *, visible, **extra):
    """The environment srun gives each task of one step, in rank order.

    ``visible(node_index, local_rank)`` is the task's ``CUDA_VISIBLE_DEVICES`` (None: unset).
    """
    nodes = expand_hostlist(nodelist)
    counts = expand_tasks_per_node(tasks_per_node)
    size = sum(counts)
    envs, rank = [], 0
    for node, (name, count) in enumerate(zip(nodes, counts, strict=True)):
        for local in range(count):
            env = {
                "SLURM_JOB_ID": "777",
                "SLURM_STEP_ID": "3",
                "SLURM_PROCID": str(rank),
                "SLURM_NTASKS": str(size),
                "SLURM_STEP_NUM_TASKS": str(size),
                "SLURM_LOCALID": str(local),
                "SLURM_NODEID": str(node),
                "SLURMD_NODENAME": name,
                "SLURM_STEP_TASKS_PER_NODE": tasks_per_node,
                "SLURM_TASKS_PER_NODE": tasks_per_node,
                "SLURM_STEP_NODELIST": nodelist,
                "SLURM_JOB_NODELIST": nodelist,
                "GPUPART_JOB_TOKEN": TOKEN_HEX,
                "CUDA_VISIBLE_DEVICES": visible(node, local),
                **extra,
            }
            envs.append({k: v for k, v in env.items() if v is not None})
            rank += 1
    return envs


def _place(monkeypatch, env):
    """Rank, size, node, local rank, coordinator, and the GPU index bind_process chooses."""
    from gpupart import topology
    from gpupart.backend import CudaProbe
    from gpupart.job import binding
    from gpupart.options import RuntimeOptions

    spec = detect(env)
    topo = _eight_gpus()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if "CUDA_VISIBLE_DEVICES" in env:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env["CUDA_VISIBLE_DEVICES"])
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.delenv("GPUPART_DEVICE", raising=False)
    count = len(topology.visible_gpus(topo))
    monkeypatch.setattr(binding.backends, "probe", lambda: CudaProbe(count, None))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: None)
    _, gpu = binding.bind_process(spec.local_rank, topo, RuntimeOptions())
    host = expand_hostlist(env["SLURM_STEP_NODELIST"])[spec.node_id]
    return spec, host, gpu.index


@pytest.fixture
def resolve_first_node(monkeypatch):
    """Rank 0 resolves the first node's name to its address (no DNS here for node01)."""
    import gpupart.job.spec as spec_module

    def fake(host):
        if host == "node01":
            return ("node01", [], ["10.1.0.1"])
        raise OSError(f"unknown host {host}")

    monkeypatch.setattr(spec_module.socket, "gethostbyname_ex", fake)


@pytest.mark.parametrize(
    ("how", "visible", "gpu_of"),
    [
        # --gpus-per-node=8: every task sees all eight GPUs and binds the one of its local rank
        ("gpus-per-node", lambda node, local: ",".join(map(str, range(8))), lambda local: local),
        # no GPU request that narrows anything: CUDA_VISIBLE_DEVICES unset, same binding
        ("unset", lambda node, local: None, lambda local: local),
        # --gpus-per-task=1 (no device cgroup): each task sees its own GPU only
        ("gpus-per-task", lambda node, local: str(local), lambda local: local),
        # a site's prolog narrowing in reverse order: the task's one visible GPU is used
        ("reversed", lambda node, local: str(7 - local), lambda local: 7 - local),
    ],
)
def test_slurm_job_every_task_knows_its_rank_host_coordinator_and_gpu(
    monkeypatch, resolve_first_node, how, visible, gpu_of
):
    nodelist, tasks = "node[01-04,07]", "8(x4),3"
    envs = srun_tasks(nodelist, tasks, visible=visible)
    assert len(envs) == 35
    port = slurm_port("777", "3")
    hosts = []
    for rank, env in enumerate(envs):
        spec, host, gpu = _place(monkeypatch, env)
        assert (spec.launcher, spec.rank, spec.size, spec.job_id) == ("slurm", rank, 35, "777.3")
        assert host == env["SLURMD_NODENAME"]  # the node index names the task's own host
        assert spec.local_rank == int(env["SLURM_LOCALID"]) and gpu == gpu_of(spec.local_rank)
        assert spec.local_size == (3 if host == "node07" else 8)
        if rank == 0:
            assert spec.serve_coordinator and spec.bind_host == "10.1.0.1"
            assert spec.coordinator == ("10.1.0.1", port)
        else:
            assert not spec.serve_coordinator and spec.coordinator == ("node01", port)
        assert spec.token == bytes.fromhex(TOKEN_HEX)
        hosts.append(host)
    assert (
        hosts == ["node01"] * 8 + ["node02"] * 8 + ["node03"] * 8 + ["node04"] * 8 + ["node07"] * 3
    )


def test_slurm_one_node_eight_tasks_binds_gpus_and_uses_loopback(monkeypatch):
    envs = srun_tasks("gpu17", "8", visible=lambda node, local: None)
    for rank, env in enumerate(envs):
        spec, host, gpu = _place(monkeypatch, env)
        assert (spec.rank, spec.local_rank, spec.node_id, host, gpu) == (
            rank,
            rank,
            0,
            "gpu17",
            rank,
        )
        assert spec.coordinator == ("127.0.0.1", slurm_port("777", "3"))


def test_slurm_more_tasks_than_gpus_on_a_node_is_a_clear_error(monkeypatch):
    envs = srun_tasks("gpu17", "9", visible=lambda node, local: None)
    for env in envs[:8]:
        _place(monkeypatch, env)
    with pytest.raises(BootstrapError, match="local rank 8 on node needs its own GPU, but only 8"):
        _place(monkeypatch, envs[8])


def test_slurm_gpus_per_task_is_flagged_by_gpupart_info():
    from gpupart import info
    from gpupart.comm.ucx_info import UCXInfo

    def warned(env):
        topo = _eight_gpus()
        ucx = UCXInfo(
            directory="/x", transports=("posix/memory", "cuda_copy/cuda", "cuda_ipc/cuda")
        )
        container = info.ContainerInfo(None, info.HOST_IPC_NAMESPACE, False, 1 << 40)
        return [w for w in info.find_traps(topo, ucx, (), container, env) if "Slurm" in w]

    narrowed = srun_tasks(
        "node[01-02]", "4(x2)", visible=lambda node, local: str(local), SLURM_GPUS_PER_TASK="1"
    )
    assert all(warned(env) for env in narrowed)
    shared = srun_tasks("node[01-02]", "4(x2)", visible=lambda node, local: "0,1,2,3")
    assert not any(warned(env) for env in shared)
