"""Who am I in the job: rank, size, locality and where the job's coordinator is.

:func:`detect` reads the environment a launcher leaves behind and returns a :class:`JobSpec`.
The first launcher whose variables are present wins:

1. ``gpupart run`` (``GPUPART_RANK``, ``GPUPART_SIZE``, ``GPUPART_LOCAL_RANK``,
   ``GPUPART_LOCAL_SIZE``, ``GPUPART_COORDINATOR=host:port``, ``GPUPART_JOB_TOKEN`` (hex),
   ``GPUPART_JOB_ID``, optional ``GPUPART_NODE_ID``); the launcher hosts the coordinator.
2. Slurm ``srun`` (``SLURM_PROCID``, ``SLURM_STEP_ID``, ...); rank 0 hosts the coordinator on
   the first node of the step, at port :func:`~gpupart.job.slurm.slurm_port`
   (``GPUPART_COORDINATOR`` overrides the address, ``GPUPART_COORDINATOR_HOST`` the
   interface). The job secret is ``GPUPART_JOB_TOKEN`` or a file that rank 0 writes to
   ``GPUPART_TOKEN_DIR`` (default ``~/.gpupart/tokens``, which must be on a file system every
   node sees), see :func:`~gpupart.job.tokens.read_or_create_slurm_token`. A process of a
   batch script or ``salloc`` shell that ``srun`` did not start is not a Slurm task and falls
   through.
3. MPI launchers: Open MPI (``OMPI_COMM_WORLD_*``), MPICH/Hydra and Intel MPI (``PMI_RANK``,
   ``PMI_SIZE``, ``MPI_LOCALRANKID``, ``MPI_LOCALNRANKS``), MVAPICH (``MV2_COMM_WORLD_*``),
   PMIx (``PMIX_RANK`` with ``PMIX_SIZE``). Rank 0 hosts the coordinator and
   :func:`~gpupart.job.mpi.exchange_via_mpi` broadcasts its address and the job secret over
   MPI; setting ``GPUPART_COORDINATOR`` and ``GPUPART_JOB_TOKEN`` instead makes MPI
   unnecessary. When a Slurm step and an MPI launcher disagree about rank or size (``mpirun``
   inside an allocation starts its daemons with ``srun``), the MPI launcher wins.
4. Otherwise a single process (rank 0 of 1).

Every malformed or inconsistent variable raises :class:`~gpupart.BootstrapError` naming the
variable, the form expected and what was found (secrets are never echoed). :func:`detect`
keeps no state: it reads the mapping it is given, plus the token file under Slurm.

This module holds the precedence and the ``gpupart run`` and single-process cases. Slurm
(:mod:`~gpupart.job.slurm`, its token files in :mod:`~gpupart.job.tokens`) and MPI
(:mod:`~gpupart.job.mpi`) have modules of their own; :mod:`~gpupart.job.spec` holds
:class:`JobSpec` and the validating reader of the environment that they all share.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from gpupart.errors import BootstrapError
from gpupart.job.mpi import _detect_mpi, _mpi_place, exchange_via_mpi
from gpupart.job.slurm import _detect_slurm, _slurm_place
from gpupart.job.spec import JobSpec, _check_place, _Env

__all__ = ["JobSpec", "detect", "exchange_via_mpi"]

logger = logging.getLogger("gpupart.bootstrap")


def detect(environ: Mapping[str, str] | None = None) -> JobSpec:
    """Describe this process's place in the job from ``environ`` (default ``os.environ``).

    Under Slurm this also creates (rank 0) or waits for (other ranks) the token file unless
    ``GPUPART_JOB_TOKEN`` is set. See the module docstring for the precedence of launchers.
    """
    env = _Env(os.environ if environ is None else environ)
    spec = _detect_gpupart(env)
    if spec is not None:
        return spec
    slurm = _slurm_place(env)
    mpi = _mpi_place(env)
    if slurm is not None and mpi is not None and slurm[:2] != mpi[:2]:
        logger.debug(
            "Slurm says rank %d of %d, the MPI launcher rank %d of %d: following MPI",
            slurm[0],
            slurm[1],
            mpi[0],
            mpi[1],
        )
        slurm = None
    if slurm is not None:
        return _detect_slurm(env, slurm)
    if mpi is not None:
        return _detect_mpi(env, mpi)
    if env.has("SLURM_JOB_ID", "SLURM_JOBID") and env.has("SLURM_PROCID"):
        logger.info("not started by srun (no SLURM_STEP_ID): running as a single process")
    return JobSpec(
        rank=0,
        size=1,
        local_rank=0,
        local_size=1,
        node_id=0,
        launcher="single",
        job_id=f"single-{os.getpid()}",
        coordinator=None,
        serve_coordinator=False,
        token=None,
        bind_host=None,
    )


def _detect_gpupart(env: _Env) -> JobSpec | None:
    if not env.has("GPUPART_RANK", "GPUPART_SIZE"):
        return None
    why = "gpupart run sets it for every rank"
    rank = env.integer("GPUPART_RANK", why)
    size = env.integer("GPUPART_SIZE", why, minimum=1)
    local_rank = env.integer("GPUPART_LOCAL_RANK", why)
    local_size = env.integer("GPUPART_LOCAL_SIZE", why, minimum=1)
    _check_place(("GPUPART_RANK", rank), ("GPUPART_SIZE", size))
    _check_place(("GPUPART_LOCAL_RANK", local_rank), ("GPUPART_LOCAL_SIZE", local_size))
    if local_size > size:
        raise BootstrapError(
            f"GPUPART_LOCAL_SIZE: expected at most GPUPART_SIZE={size}, found {local_size}"
        )
    node_id = env.integer("GPUPART_NODE_ID", why) if env.has("GPUPART_NODE_ID") else 0
    env.require("GPUPART_COORDINATOR", why)
    env.require("GPUPART_JOB_TOKEN", why)
    job_id = env.require("GPUPART_JOB_ID", why).strip()
    if not job_id:
        raise BootstrapError("GPUPART_JOB_ID: expected a non-empty job id, found ''")
    return JobSpec(
        rank=rank,
        size=size,
        local_rank=local_rank,
        local_size=local_size,
        node_id=node_id,
        launcher="gpupart",
        job_id=job_id,
        coordinator=env.address("GPUPART_COORDINATOR"),
        serve_coordinator=False,
        token=env.token("GPUPART_JOB_TOKEN"),
        bind_host=None,
    )
