"""Rank scripts run under ``mpiexec`` (the interop tests of MPI-based systems).

:class:`MpiCaseJobs` is :class:`conftest.CaseJobs` with the job started by ``mpiexec -n N``
(the ``mpiexec`` beside the interpreter: the MPICH wheel's Hydra) instead of ``gpupart run``: the
same ``@plan``/``@case``/``@done`` records, one job per size, the jobs side by side.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import PY, CaseJobs, clean_env


def mpiexec() -> str:
    """The ``mpiexec`` beside the interpreter (or on PATH); skips the test when there is none."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'gpupart[mpi]')")
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec beside the Python interpreter or on PATH")
    return found


def run_mpi(n: int, script: Path, *args: str, timeout: float) -> tuple[int, str, str]:
    """Run ``script`` as ``n`` MPI ranks; ``(returncode, stdout, stderr)``.

    ``-prepend-rank`` (MPICH's Hydra) keeps each rank's lines whole and prefixed ``[r] ``.
    """
    proc = subprocess.run(
        [mpiexec(), "-prepend-rank", "-n", str(n), PY, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr


class MpiCaseJobs(CaseJobs):
    """A ``@case`` rank script run under ``mpiexec``, one job per size (see the module)."""

    def result(self, n: int) -> tuple[int, str, str]:
        """``(returncode, stdout, stderr)`` of the job of ``n`` ranks."""
        if self._results is None:
            with ThreadPoolExecutor(len(self.sizes)) as pool:
                futures = {
                    k: pool.submit(run_mpi, k, self.script, timeout=self.timeout)
                    for k in self.sizes
                }
                self._results = {k: f.result() for k, f in futures.items()}
        return self._results[n]
