"""MPI launchers: a rank's place from the launcher's variables, and the coordinator exchange.

Open MPI (``OMPI_COMM_WORLD_*``), MPICH/Hydra and Intel MPI (``PMI_RANK``, ``PMI_SIZE``,
``MPI_LOCALRANKID``, ``MPI_LOCALNRANKS``), MVAPICH (``MV2_COMM_WORLD_*``) and PMIx
(``PMIX_RANK`` with ``PMIX_SIZE``) are read, most specific first. Rank 0 hosts the
coordinator; :func:`exchange_via_mpi` broadcasts its address and the job secret over
``MPI.COMM_WORLD`` as one message of ``_BCAST_BYTES`` bytes: a big-endian 2-byte length, then
that many bytes of JSON (``host``, ``port``, ``token`` in hex, ``job_id``, or ``error``),
zero-padded. Processor names are all-gathered alongside to number the nodes.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from gpupart.errors import BootstrapError
from gpupart.job.spec import (
    _DEFAULT_TIMEOUT,
    _LOOPBACK,
    _TOKEN_BYTES,
    JobSpec,
    _check_place,
    _Env,
    _resolve_bind,
)

__all__ = ["exchange_via_mpi"]

#: (rank, size, local rank, local size) variables of each MPI launcher, most specific first.
_MPI_VARIABLES = (
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    (
        "MV2_COMM_WORLD_RANK",
        "MV2_COMM_WORLD_SIZE",
        "MV2_COMM_WORLD_LOCAL_RANK",
        "MV2_COMM_WORLD_LOCAL_SIZE",
    ),
    ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"),
)


def _mpi_place(env: _Env) -> tuple[int, int, int, int] | None:
    """``(rank, size, local rank, local size)`` under an MPI launcher, else ``None``."""
    for rank_var, size_var, local_var, local_size_var in _MPI_VARIABLES:
        if not env.has(rank_var):
            continue
        why = f"the MPI launcher that set {rank_var} sets it too"
        rank = env.integer(rank_var, why)
        size = env.integer(size_var, why, minimum=1)
        _check_place((rank_var, rank), (size_var, size))
        if env.has(local_var) or env.has(local_size_var):
            local_rank = env.integer(local_var, why)
            local_size = env.integer(local_size_var, why, minimum=1)
            _check_place((local_var, local_rank), (local_size_var, local_size))
            if local_size > size:
                raise BootstrapError(
                    f"{local_size_var}: expected at most {size_var}={size}, found {local_size}"
                )
        else:  # locality unknown: one rank per node is the safe guess for device binding
            local_rank, local_size = 0, 1
        return rank, size, local_rank, local_size
    return None


def _detect_mpi(env: _Env, place: tuple[int, int, int, int]) -> JobSpec:
    rank, size, local_rank, local_size = place
    serve = rank == 0
    multinode = local_size < size
    override_host = env.host("GPUPART_COORDINATOR_HOST")
    coordinator: tuple[str, int] | None = None
    token: bytes | None = None
    if env.has("GPUPART_COORDINATOR") or env.has("GPUPART_JOB_TOKEN"):
        why = "the other of GPUPART_COORDINATOR and GPUPART_JOB_TOKEN is set"
        env.require("GPUPART_COORDINATOR", why)
        env.require("GPUPART_JOB_TOKEN", why)
        coordinator = env.address("GPUPART_COORDINATOR")
        token = env.token("GPUPART_JOB_TOKEN")
    elif serve:
        token = secrets.token_bytes(_TOKEN_BYTES)  # broadcast by exchange_via_mpi
    bind_host: str | None = None
    if serve:
        if override_host is not None:
            bind_host = override_host
        elif coordinator is not None:
            bind_host = _resolve_bind(coordinator[0], "GPUPART_COORDINATOR", multinode=multinode)
        elif multinode:
            bind_host = _resolve_bind(socket.gethostname(), "hostname", multinode=True)
        else:
            bind_host = _LOOPBACK
        if coordinator is not None and override_host is None:
            coordinator = (bind_host, coordinator[1])
    job_var = env.first("PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "PMI_JOBID", "SLURM_JOB_ID")
    job_id = env.environ[job_var].strip() if job_var else ""
    return JobSpec(
        rank=rank,
        size=size,
        local_rank=local_rank,
        local_size=local_size,
        node_id=0,
        launcher="mpi",
        job_id=f"mpi-{job_id}" if job_id else "mpi",
        coordinator=coordinator,
        serve_coordinator=serve,
        token=token,
        bind_host=bind_host,
    )


_BCAST_BYTES = 1024
_NAME_BYTES = 256


def exchange_via_mpi(
    spec: JobSpec,
    serve: Callable[[], tuple[str, int]],
    *,
    timeout: float = _DEFAULT_TIMEOUT,
) -> JobSpec:
    """Complete an ``'mpi'`` spec: rank 0 serves the coordinator, MPI tells everyone where.

    Rank 0 calls ``serve()``, which must start a
    :class:`~gpupart.job.coordinator.Coordinator` with ``spec.token`` on
    ``spec.bind_host`` and return its address; that address, the token and the job id are
    broadcast over ``MPI.COMM_WORLD``, and ``node_id`` is filled in from the processor
    names. A spec that already has a coordinator and token (``GPUPART_COORDINATOR`` and
    ``GPUPART_JOB_TOKEN`` set) needs no MPI: rank 0 just serves. Waits at most ``timeout``
    seconds; raises :class:`~gpupart.BootstrapError` (on every rank) if rank 0 could not
    serve, mpi4py is missing, or MPI disagrees with the environment.
    """
    if spec.launcher != "mpi":
        raise BootstrapError(f"exchange_via_mpi: expected an 'mpi' job, found {spec.launcher!r}")
    if spec.coordinator is not None and spec.token is not None:
        if spec.serve_coordinator:
            serve()
        return spec
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BootstrapError(
            "this process was started by an MPI launcher, and joining the job then needs"
            " mpi4py: install it (pip install mpi4py), or start the job with 'gpupart run',"
            " or set GPUPART_COORDINATOR=host:port and GPUPART_JOB_TOKEN on every rank"
        ) from exc
    comm = MPI.COMM_WORLD
    if (comm.Get_rank(), comm.Get_size()) != (spec.rank, spec.size):
        raise BootstrapError(
            f"MPI: expected MPI.COMM_WORLD to hold rank {spec.rank} of {spec.size} as the"
            f" environment says, found rank {comm.Get_rank()} of {comm.Get_size()}"
        )
    deadline = time.monotonic() + timeout

    name = MPI.Get_processor_name().encode()[:_NAME_BYTES]
    names_out = bytearray(struct.pack("!H", len(name)) + name.ljust(_NAME_BYTES, b"\0"))
    names_in = bytearray(len(names_out) * spec.size)
    gather = comm.Iallgather([names_out, MPI.BYTE], [names_in, MPI.BYTE])

    message = bytearray(_BCAST_BYTES)
    failure: BaseException | None = None
    if spec.rank == 0:
        packed, failure = _pack_exchange(spec, serve)
        message[:] = packed
    bcast = comm.Ibcast([message, MPI.BYTE], root=0)
    _wait_mpi(MPI, [gather, bcast], deadline, timeout, spec.rank)

    (length,) = struct.unpack("!H", message[:2])
    payload = json.loads(bytes(message[2 : 2 + length]).decode())
    if "error" in payload:
        raise BootstrapError(
            f"rank 0 could not start the job coordinator: {payload['error']}"
        ) from failure
    step = len(names_out)
    names = []
    for r in range(spec.size):
        (n,) = struct.unpack("!H", names_in[r * step : r * step + 2])
        names.append(bytes(names_in[r * step + 2 : r * step + 2 + n]))
    node_id = spec.node_id
    if names.count(name) == spec.local_size:  # names identify nodes (not so in all containers)
        node_id = list(dict.fromkeys(names)).index(name)
    return dataclasses.replace(
        spec,
        coordinator=(payload["host"], int(payload["port"])),
        token=bytes.fromhex(payload["token"]),
        job_id=payload["job_id"],
        node_id=node_id,
    )


def _pack_exchange(
    spec: JobSpec, serve: Callable[[], tuple[str, int]]
) -> tuple[bytes, BaseException | None]:
    """Rank 0's broadcast (coordinator address, token, job id) or why serving failed."""
    failure: BaseException | None = None
    if spec.token is None:
        failure = BootstrapError("rank 0 has no job token to serve the coordinator with")
        payload: dict[str, Any] = {"error": str(failure)}
    else:
        try:
            host, port = serve()
            payload = {
                "host": str(host),
                "port": int(port),
                "token": spec.token.hex(),
                "job_id": spec.job_id,
            }
        except Exception as exc:  # every rank must hear of it, or they wait out the timeout
            failure = exc
            payload = {"error": f"{type(exc).__name__}: {exc}"[:400]}
    data = json.dumps(payload).encode()
    if len(data) > _BCAST_BYTES - 2:
        data = json.dumps({"error": "the coordinator address is too long"}).encode()
    return (struct.pack("!H", len(data)) + data).ljust(_BCAST_BYTES, b"\0"), failure


def _wait_mpi(mpi: Any, requests: list[Any], deadline: float, timeout: float, rank: int) -> None:
    """Poll MPI requests until all completed or the deadline passed."""
    pause = 0.0005
    while not mpi.Request.Testall(requests):
        if time.monotonic() >= deadline:
            raise BootstrapError(
                f"rank {rank}: the MPI exchange of the coordinator address did not complete"
                f" within {timeout:g} s (GPUPART_BOOTSTRAP_TIMEOUT); is every rank calling"
                " gpupart.init()?"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
