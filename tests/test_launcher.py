"""``gpupart run``: real launcher, real ranks; no mocks."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PY = sys.executable
SCRIPTS = Path(__file__).parent / "launcher_scripts"
STOP_WITHIN = 10.0  # generous bound for "the ranks are gone"


def clean_env() -> dict[str, str]:
    """The test's environment without any launcher's variables."""
    prefixes = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def gpupart_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "gpupart", "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )


def start_gpupart(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "gpupart", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: nobody may be left to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_gone(pids: list[int], within: float = STOP_WITHIN) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def wait_pid_files(directory: Path, count: int, within: float = 30.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        files = [f for f in directory.iterdir() if f.suffix == ".pid"]
        if len(files) == count:
            texts = [f.read_text() for f in files]
            if all(texts):
                return [int(t) for t in texts]
        time.sleep(0.05)
    raise AssertionError(f"ranks did not write {count} pid files within {within} s")


def rank_code(body: str, piddir: Path | None = None) -> str:
    """Python source for a rank: records its pid (atomically) in ``piddir``, then ``body``."""
    head = """
        import os, signal, sys, time
        rank = int(os.environ["GPUPART_RANK"])
    """
    if piddir is not None:
        head += f"""
        piddir = {str(piddir)!r}
        tmp = os.path.join(piddir, f"{{rank}}.tmp")
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.rename(tmp, os.path.join(piddir, f"{{rank}}.pid"))
        def wait_for(*ranks):
            while not all(os.path.exists(os.path.join(piddir, f"{{r}}.pid")) for r in ranks):
                time.sleep(0.02)
    """
    return textwrap.dedent(head) + textwrap.dedent(body)


def recorded_pids(directory: Path) -> list[int]:
    return [int(f.read_text()) for f in directory.iterdir() if f.suffix == ".pid"]


# -- success ---------------------------------------------------------------------------


def test_env_prefix_and_success():
    code = rank_code(
        """
        names = ["GPUPART_RANK", "GPUPART_SIZE", "GPUPART_LOCAL_RANK", "GPUPART_LOCAL_SIZE",
                 "GPUPART_COORDINATOR", "GPUPART_JOB_TOKEN", "GPUPART_JOB_ID",
                 "PYTHONUNBUFFERED"]
        print(json.dumps({n: os.environ.get(n) for n in names}))
        print(f"to stderr from {rank}", file=sys.stderr)
        sys.stdout.write(f"partial line from {rank}")
        """
    ).replace("import os,", "import json, os,")
    proc = gpupart_run("-n", "3", "--", PY, "-c", code)
    assert proc.returncode == 0, proc.stderr

    envs = {}
    partial = set()
    for line in proc.stdout.splitlines():
        prefix, _, rest = line.partition(" ")
        rank = int(prefix.strip("[]"))
        assert prefix == f"[{rank}]"
        if rest.startswith("{"):
            envs[rank] = json.loads(rest)
        else:
            assert rest == f"partial line from {rank}"
            partial.add(rank)
    assert sorted(envs) == [0, 1, 2] and partial == {0, 1, 2}
    assert sorted(proc.stderr.splitlines()) == [f"[{r}] to stderr from {r}" for r in range(3)]

    first = envs[0]
    host, port = first["GPUPART_COORDINATOR"].rsplit(":", 1)
    assert host == "127.0.0.1" and 0 < int(port) < 65536
    assert len(bytes.fromhex(first["GPUPART_JOB_TOKEN"])) == 32
    assert first["GPUPART_JOB_ID"]
    for rank, env in envs.items():
        assert env["GPUPART_RANK"] == env["GPUPART_LOCAL_RANK"] == str(rank)
        assert env["GPUPART_SIZE"] == env["GPUPART_LOCAL_SIZE"] == "3"
        assert env["PYTHONUNBUFFERED"] == "1"
        for name in ("GPUPART_COORDINATOR", "GPUPART_JOB_TOKEN", "GPUPART_JOB_ID"):
            assert env[name] == first[name]


def test_ranks_join_the_launchers_coordinator():
    code = textwrap.dedent(
        """
        from gpupart.job.bootstrap import detect
        from gpupart.job.coordinator import CoordinatorClient

        spec = detect()
        assert spec.launcher == "gpupart"
        client = CoordinatorClient(
            spec.coordinator, spec.token, job_id=spec.job_id, rank=spec.rank, timeout=30
        )
        table = client.join({"rank": spec.rank, "pid": __import__("os").getpid()})
        print("joined", [row["rank"] for row in table])
        client.close()
        """
    )
    proc = gpupart_run("-n", "3", "--", PY, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == [f"[{r}] joined [0, 1, 2]" for r in range(3)]


def test_no_prefix_cpu_and_env():
    # One write per line: unprefixed ranks share the terminal, and print() writes in pieces.
    code = textwrap.dedent(
        """
        import os
        line = f"{os.environ['FOO']} {os.environ['GPUPART_DEVICE']}\\n"
        os.write(1, line.encode())
        """
    )
    proc = gpupart_run("-n", "2", "--no-prefix", "--cpu", "--env", "FOO=a=b", "--", PY, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["a=b cpu", "a=b cpu"]


# -- failures --------------------------------------------------------------------------


def test_failing_rank_stops_the_others(tmp_path):
    code = rank_code(
        """
        if rank == 1:
            wait_for(0, 2)
            sys.exit(3)
        time.sleep(60)
        """,
        tmp_path,
    )
    started = time.monotonic()
    proc = gpupart_run("-n", "3", "--", PY, "-c", code)
    assert proc.returncode == 3, proc.stderr
    assert "gpupart run: rank 1 exited with status 3; stopped ranks 0, 2" in proc.stderr
    assert time.monotonic() - started < 30
    assert wait_gone(recorded_pids(tmp_path)) == []


def test_rank_killed_by_a_signal(tmp_path):
    code = rank_code(
        """
        if rank == 2:
            wait_for(0, 1)
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
        """,
        tmp_path,
    )
    proc = gpupart_run("-n", "3", "--", PY, "-c", code)
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr
    assert "rank 2 was killed by SIGKILL" in proc.stderr
    assert wait_gone(recorded_pids(tmp_path)) == []


def test_rank_ignoring_sigterm_is_killed_after_grace(tmp_path):
    code = rank_code(
        """
        if rank == 1:
            wait_for(0)
            sys.exit(1)
        time.sleep(60)
        """,
        tmp_path,
    )
    # Rank 0 ignores SIGTERM before it records its pid, so rank 1 fails only after that.
    code = code.replace("rank = int(", "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nrank = int(")
    proc = gpupart_run("-n", "2", "--grace", "0.5", "--", PY, "-c", code)
    assert proc.returncode == 1, proc.stderr
    assert "rank 1 exited with status 1; stopped rank 0 (SIGKILL after 0.5 s for 0)" in (
        proc.stderr
    )
    assert wait_gone(recorded_pids(tmp_path)) == []


def test_timeout_stops_the_job(tmp_path):
    code = rank_code("time.sleep(60)", tmp_path)
    proc = gpupart_run("-n", "2", "--timeout", "1", "--", PY, "-c", code)
    assert proc.returncode == 124, proc.stderr
    assert "--timeout 1 s" in proc.stderr
    assert wait_gone(recorded_pids(tmp_path)) == []


def test_a_reported_failure_is_the_jobs_cause_though_the_others_exit_first():
    # Rank 1 reports "ValueError: bad input" and exits (3) a second later; ranks 0 and 2
    # hear of it at once, ignore the SIGTERM and exit 1 first. The summary names rank 1.
    started = time.monotonic()
    proc = gpupart_run("-n", "3", "--grace", "5", "--", PY, str(SCRIPTS / "report_failure.py"), "1")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "[1] noted True" in lines, proc.stdout
    for rank in (0, 2):
        assert f"[{rank}] heard 1 it failed: ValueError: bad input" in lines, proc.stdout
    summary = [line for line in proc.stderr.splitlines() if line.startswith("gpupart run:")]
    assert summary == [
        "gpupart run: rank 1 failed (ValueError: bad input) and exited with status 3;"
        " stopped ranks 0, 2"
    ], proc.stderr
    assert time.monotonic() - started < STOP_WITHIN


def test_missing_program():
    proc = gpupart_run("-n", "2", "--", "/nonexistent/program")
    assert proc.returncode == 127
    assert "could not start rank 0" in proc.stderr and "/nonexistent/program" in proc.stderr


# -- signals to the launcher -----------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_launcher_stops_all_ranks(tmp_path, signum, status):
    launcher = start_gpupart("-n", "3", "--", PY, "-c", rank_code("time.sleep(60)", tmp_path))
    try:
        pids = wait_pid_files(tmp_path, 3)
        launcher.send_signal(signum)
        _, err = launcher.communicate(timeout=STOP_WITHIN)
    finally:
        launcher.kill()
        launcher.communicate()
    assert launcher.returncode == status, err
    assert f"received {signal.Signals(signum).name}; stopped ranks 0, 1, 2" in err
    assert wait_gone(pids) == []


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_killed_launcher_takes_its_ranks_along(tmp_path):
    launcher = start_gpupart("-n", "3", "--", PY, "-c", rank_code("time.sleep(60)", tmp_path))
    try:
        pids = wait_pid_files(tmp_path, 3)
        launcher.kill()
        launcher.communicate(timeout=STOP_WITHIN)
        assert wait_gone(pids) == []
    finally:
        launcher.kill()
        launcher.communicate()
        for pid in recorded_pids(tmp_path):  # never leave a rank behind, even on failure
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_killed_launcher_takes_the_ranks_own_children_along(tmp_path):
    # Each rank starts a helper (sleep 300) in its process group: PDEATHSIG kills the rank
    # when the launcher is SIGKILLed, and the launcher's watchdog must kill the helper.
    code = rank_code(
        """
        import subprocess
        helper = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(piddir, f"{rank}.tmp2"), "w") as f:
            f.write(str(helper.pid))
        os.rename(os.path.join(piddir, f"{rank}.tmp2"), os.path.join(piddir, f"{rank}.helper"))
        time.sleep(60)
        """,
        tmp_path,
    )
    launcher = start_gpupart("-n", "2", "--", PY, "-c", code)
    helpers: list[int] = []
    try:
        ranks = wait_pid_files(tmp_path, 2)
        deadline = time.monotonic() + 30
        while len(helpers) < 2 and time.monotonic() < deadline:
            helpers = [int(f.read_text()) for f in tmp_path.glob("*.helper")]
            time.sleep(0.05)
        assert len(helpers) == 2, "the ranks did not start their helpers"
        started = set(children_of(launcher.pid))  # the ranks and the watchdog
        assert set(ranks) < started
        launcher.kill()
        launcher.communicate(timeout=STOP_WITHIN)
        assert wait_gone(helpers) == [], "a rank's helper outlived the killed launcher"
        assert wait_gone(sorted(started)) == [], "a process the launcher started outlived it"
    finally:
        launcher.kill()
        launcher.communicate()
        for pid in recorded_pids(tmp_path) + helpers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_normal_end_takes_the_ranks_own_children_along(tmp_path):
    code = rank_code(
        """
        import subprocess
        helper = subprocess.Popen(["sleep", "300"])
        print("helper", helper.pid)
        """
    )
    proc = gpupart_run("-n", "2", "--", PY, "-c", code)
    helpers = [int(line.split()[-1]) for line in proc.stdout.splitlines() if "helper" in line]
    try:
        assert proc.returncode == 0, proc.stderr
        assert len(helpers) == 2, proc.stdout
        assert wait_gone(helpers) == [], "a rank's helper outlived the job"
    finally:
        for pid in helpers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_no_watchdog_is_left_after_a_normal_run(tmp_path):
    launcher = start_gpupart("-n", "2", "--", PY, "-c", rank_code("time.sleep(1)", tmp_path))
    try:
        ranks = wait_pid_files(tmp_path, 2)
        watchdogs = [p for p in children_of(launcher.pid) if p not in ranks]
        _, err = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
        launcher.communicate()
    assert launcher.returncode == 0, err
    assert len(watchdogs) == 1, watchdogs
    assert wait_gone(watchdogs) == []


# -- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0", "--", "true"], "expected an integer >= 1, found '0'"),
        (["-n", "two", "--", "true"], "expected an integer >= 1, found 'two'"),
        (["-n", "2"], "missing the command to run"),
        (["-n", "2", "--"], "missing the command to run"),
        (["--"], "missing the command to run"),  # without -n: the default count, no command
        (["-n", "2", "--grace", "-1", "--", "true"], "--grace"),
        (["-n", "2", "--timeout", "0", "--", "true"], "--timeout"),
        (["-n", "2", "--env", "NOEQUALS", "--", "true"], "expected KEY=VALUE"),
        (["-n", "2", "--env", "GPUPART_RANK=1", "--", "true"], "GPUPART_RANK is set by"),
    ],
)
def test_bad_arguments(args, message):
    proc = gpupart_run(*args)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script():
    script = Path(PY).parent / "gpupart"
    if not script.exists():
        script = shutil.which("gpupart")
        if script is None:
            pytest.skip("the gpupart console script is not installed")
    proc = subprocess.run(
        [str(script), "run", "-n", "2", "--", PY, "-c", "print('hi')"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["[0] hi", "[1] hi"]


def test_unfinished_line_is_shown_while_rank0_reads_stdin():
    # Rank 0 prompts without a newline and waits for an answer on its stdin (the launcher's):
    # the answer can only come once the prompt got through.
    code = textwrap.dedent(
        """
        import sys
        sys.stdout.write("name? ")
        print("hello", sys.stdin.readline().strip())
        """
    )
    launcher = subprocess.Popen(
        [PY, "-m", "gpupart", "run", "-n", "1", "--", PY, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    try:
        assert launcher.stdout is not None and launcher.stdin is not None
        ready, _, _ = select.select([launcher.stdout], [], [], 30)
        assert ready, "the unfinished line was not relayed"
        first = os.read(launcher.stdout.fileno(), 100)
        assert first == b"[0] name? "
        launcher.stdin.write(b"world\n")
        launcher.stdin.flush()
        rest, err = launcher.communicate(timeout=30)
    finally:
        launcher.kill()
        launcher.communicate()
    assert launcher.returncode == 0, err
    assert (first + rest).decode().splitlines() == ["[0] name? hello world"]


# -- thread pools ------------------------------------------------------------------------------


def test_ranks_share_the_cpus_between_their_thread_pools(monkeypatch):
    from gpupart.job.launcher import THREAD_VARIABLES, thread_limits

    cpus = len(os.sched_getaffinity(0))
    assert thread_limits({}, 1) == dict.fromkeys(THREAD_VARIABLES, str(cpus))
    assert thread_limits({}, cpus * 4) == dict.fromkeys(THREAD_VARIABLES, "1")
    assert thread_limits({"MKL_NUM_THREADS": "3"}, 2) == {}  # the user has chosen
    code = rank_code(
        """
        print("threads", os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS"))
        """
    )
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    proc = gpupart_run("-n", "2", "--", PY, "-c", code)
    assert proc.returncode == 0, proc.stderr
    share = str(max(1, cpus // 2))
    assert proc.stdout.count(f"threads {share} {share}") == 2, proc.stdout
