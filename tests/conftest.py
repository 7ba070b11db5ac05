"""Shared helpers for the multi-process runtime tests.

Two ways to start a job:

* :func:`run_job` runs ``python -m gpupart run -n N -- python script args`` (the real
  launcher; one failing rank stops the job);
* :func:`start_ranks` hosts a :class:`~gpupart.job.coordinator.Coordinator` in the test
  process and starts the ranks itself with the ``GPUPART_*`` variables that
  ``bootstrap._detect_gpupart`` reads, so that a test can kill one rank and watch the others
  (the launcher would stop them).

Rank scripts live in ``tests/mp_scripts`` and report with :func:`_mp.emit`: lines
``@kind {json}`` that :func:`records` parses out of (prefixed or raw) output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpupart.job.coordinator import Coordinator

PY = sys.executable
SCRIPTS = Path(__file__).parent / "mp_scripts"
#: Generous limit for one job on a slow, loaded 2-core machine (the test's own limit is larger).
JOB_TIMEOUT = 150.0
_LAUNCH_PREFIXES = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_")
_RECORD = re.compile(r"^(?:\[(\d+)\] )?@(\w+) (.*)$")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any launcher's variables, CPU device, unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCH_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env["GPUPART_DEVICE"] = "cpu"  # these tests check the host path; GPU tests are marked gpu
    env.update(extra or {})
    return env


def script_path(script: str) -> str:
    path = SCRIPTS / script
    assert path.is_file(), f"no rank script {path}"
    return str(path)


def records(output: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Parse ``@kind {json}`` lines; each record gets ``kind`` (and ``line_rank`` if prefixed)."""
    found = []
    for line in output.splitlines():
        match = _RECORD.match(line)
        if match is None:
            continue
        data = json.loads(match.group(3))
        data["kind"] = match.group(2)
        if match.group(1) is not None:
            data["line_rank"] = int(match.group(1))
        if kind is None or data["kind"] == kind:
            found.append(data)
    return found


def run_ranks(
    n: int,
    rank_command: list[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = JOB_TIMEOUT,
    launcher_args: tuple[str, ...] = (),
) -> tuple[int, str, str]:
    """Run ``rank_command`` as ``n`` ranks through ``gpupart run``; ``(rc, stdout, stderr)``."""
    command = [PY, "-m", "gpupart", "run", "-n", str(n), *launcher_args, "--", *rank_command]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_job(
    n: int,
    script: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = JOB_TIMEOUT,
    launcher_args: tuple[str, ...] = (),
) -> tuple[int, str, str]:
    """Run the rank script ``script`` (in mp_scripts/) as ``n`` ranks through ``gpupart run``."""
    return run_ranks(
        n, [PY, script_path(script), *args], env=env, timeout=timeout, launcher_args=launcher_args
    )


@dataclass
class RankResult:
    """How one rank of a :class:`Ranks` job ended."""

    rank: int
    returncode: int | None
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"rank {self.rank} returncode {self.returncode}\n--- stdout\n{self.stdout}"
            f"--- stderr\n{self.stderr}"
        )


class Ranks:
    """A job whose coordinator runs in the test process and whose ranks the test starts.

    ``tokens`` replaces the job token of some ranks (e.g. a wrong one); ``join_timeout`` is
    the coordinator's limit for every rank to join. Output goes to files in ``workdir`` (no
    pipe can fill up). :meth:`close` kills what is left and stops the coordinator.
    """

    def __init__(
        self,
        n: int,
        script: str,
        args: tuple[str, ...],
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        tokens: Mapping[int, bytes] | None = None,
        join_timeout: float = 60.0,
        on_event: Callable[..., None] | None = None,
    ) -> None:
        self.n = n
        self.token = secrets.token_bytes(32)
        self.job_id = f"test-{secrets.token_hex(4)}"
        self.coordinator = Coordinator(
            n, self.token, job_id=self.job_id, join_timeout=join_timeout, on_event=on_event
        ).start()
        host, port = self.coordinator.address
        self.procs: list[subprocess.Popen[bytes]] = []
        self._files: list[tuple[Path, Path]] = []
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            for rank in range(n):
                token = (tokens or {}).get(rank, self.token)
                rank_env = clean_env(env)
                rank_env.update(
                    GPUPART_RANK=str(rank),
                    GPUPART_SIZE=str(n),
                    GPUPART_LOCAL_RANK=str(rank),
                    GPUPART_LOCAL_SIZE=str(n),
                    GPUPART_COORDINATOR=f"{host}:{port}",
                    GPUPART_JOB_TOKEN=token.hex(),
                    GPUPART_JOB_ID=self.job_id,
                )
                out, err = workdir / f"rank{rank}.out", workdir / f"rank{rank}.err"
                self._files.append((out, err))
                with open(out, "wb") as fout, open(err, "wb") as ferr:
                    self.procs.append(
                        subprocess.Popen(
                            [PY, script_path(script), *args],
                            env=rank_env,
                            stdin=subprocess.DEVNULL,
                            stdout=fout,
                            stderr=ferr,
                        )
                    )
        except BaseException:
            self.close()
            raise

    def kill(self, rank: int, signum: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.procs[rank].send_signal(signum)

    def wait(self, timeout: float = JOB_TIMEOUT) -> list[RankResult]:
        """Wait for every rank (raises ``subprocess.TimeoutExpired`` after ``timeout``)."""
        for proc in self.procs:
            proc.wait(timeout=timeout)
        return self.results()

    def results(self) -> list[RankResult]:
        return [
            RankResult(
                rank,
                proc.poll(),
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )
            for rank, (proc, (out, err)) in enumerate(zip(self.procs, self._files, strict=True))
        ]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        self.coordinator.close()


@pytest.fixture
def start_ranks(tmp_path: Path) -> Iterator[Callable[..., Ranks]]:
    """Factory ``start_ranks(n, script, *args, env=None, tokens=None, join_timeout=60)``."""
    jobs: list[Ranks] = []

    def start(n: int, script: str, *args: str, **kwargs: Any) -> Ranks:
        job = Ranks(n, script, args, tmp_path / f"job{len(jobs)}", **kwargs)
        jobs.append(job)
        return job

    yield start
    for job in jobs:
        job.close()


class CaseJobs:
    """A rank script whose ``@case`` functions run in one job per size, the jobs side by side.

    The script emits ``@plan`` (its case names), ``@case`` after each case passed and
    ``@done`` on every rank; :meth:`check_job` and :meth:`check_case` are the assertions of a
    driver's two tests. Jobs start on first use and run once per test session.
    """

    def __init__(
        self, script: Path, sizes: tuple[int, ...] = (1, 2, 3), timeout: float = 300.0
    ) -> None:
        self.script, self.sizes, self.timeout = script, tuple(sizes), timeout
        self._results: dict[int, tuple[int, str, str]] | None = None

    @property
    def names(self) -> list[str]:
        """The script's cases, in order: its functions decorated with ``@case``."""
        import ast

        tree = ast.parse(self.script.read_text())
        return [
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef)
            and any(isinstance(d, ast.Name) and d.id == "case" for d in node.decorator_list)
        ]

    def result(self, n: int) -> tuple[int, str, str]:
        """``(returncode, stdout, stderr)`` of the job of ``n`` ranks."""
        if self._results is None:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(self.sizes)) as pool:
                futures = {
                    k: pool.submit(run_ranks, k, [PY, str(self.script)], timeout=self.timeout)
                    for k in self.sizes
                }
                self._results = {k: f.result() for k, f in futures.items()}
        return self._results[n]

    def check_job(self, n: int) -> None:
        """The job exited 0 and every rank planned every case and reported done."""
        rc, out, err = self.result(n)
        assert rc == 0, (
            f"job failed with {rc}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-6000:]}"
        )
        assert "Traceback" not in err, err
        done = records(out, "done")
        assert sorted(d["rank"] for d in done) == list(range(n)), out
        assert all(d["size"] == n for d in done)
        plans = records(out, "plan")
        assert sorted(p["rank"] for p in plans) == list(range(n)), out
        for plan in plans:
            assert plan["cases"] == self.names

    def check_case(self, n: int, name: str) -> None:
        """Every rank of the job of ``n`` ranks reported case ``name`` passed."""
        _, out, err = self.result(n)
        passed = [r for r in records(out, "case") if r["name"] == name]
        ranks = sorted(r["rank"] for r in passed)
        assert ranks == list(range(n)), (
            f"{name} passed on ranks {ranks} of {n}\n--- stderr\n{err[-6000:]}"
        )
        assert all(r.get("line_rank", r["rank"]) == r["rank"] for r in passed)


@pytest.fixture
def one_rank(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A runtime of one process on the CPU, whatever launcher variables the test runs under."""
    import gpupart

    for name in list(os.environ):
        if name.startswith(_LAUNCH_PREFIXES):
            monkeypatch.delenv(name)
    runtime = gpupart.init(device="cpu")
    yield runtime
    runtime.close()


#: checks scikit-learn itself skips here (it raises SkipTest), and why
SKIPPED_BY_SKLEARN = {
    "check_array_api_input": "needs SCIPY_ARRAY_API=1 set before SciPy is imported",
}


def assert_sklearn_checks(estimator: Any, expected_failed: Mapping[str, str]) -> None:
    """Run scikit-learn's ``check_estimator``: only ``expected_failed`` may fail (with reasons)."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(
        estimator, expected_failed_checks=dict(expected_failed), on_fail=None, on_skip=None
    )
    failed = [r for r in results if r["status"] == "failed"]
    assert not failed, "\n\n".join(f"{r['check_name']}: {r['exception']!r}" for r in failed)
    xfailed = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert xfailed <= set(expected_failed), xfailed
    skipped = {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "skipped"}
    assert set(skipped) <= set(SKIPPED_BY_SKLEARN), skipped


@pytest.fixture
def cuda_gpus() -> int:
    """How many CUDA GPUs CuPy can use here; skips the test where there is none."""
    from gpupart import backend

    count = backend.probe().count
    if count == 0:
        pytest.skip("needs a CUDA GPU with CuPy")
    return count


def passed(run: subprocess.CompletedProcess[str], name: str) -> list[int]:
    """The ranks (-1: a driver process) that reported case ``name``, after checking the run."""
    assert run.returncode == 0, (
        f"--- stdout\n{run.stdout[-4000:]}\n--- stderr\n{run.stderr[-6000:]}"
    )
    return sorted(r["rank"] for r in records(run.stdout, "case") if r["name"] == name)
