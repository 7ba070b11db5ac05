"""Who am I in the job: rank, size, locality and where the job's coordinator is.

:func:`detect` reads the environment a launcher leaves behind and returns a :class:`JobSpec`.
The first launcher whose variables are present wins:

1. ``gpupart run`` (``GPUPART_RANK``, ``GPUPART_SIZE``, ``GPUPART_LOCAL_RANK``,
   ``GPUPART_LOCAL_SIZE``, ``GPUPART_COORDINATOR=host:port``, ``GPUPART_JOB_TOKEN`` (hex),
   ``GPUPART_JOB_ID``, optional ``GPUPART_NODE_ID``); the launcher hosts the coordinator.
2. Slurm ``srun`` (``SLURM_PROCID``, ``SLURM_STEP_ID``, ...); rank 0 hosts the coordinator on
   the first node of the step, at port :func:`slurm_port` (``GPUPART_COORDINATOR`` overrides
   the address, ``GPUPART_COORDINATOR_HOST`` the interface). The job secret is
   ``GPUPART_JOB_TOKEN`` or a file that rank 0 writes to ``GPUPART_TOKEN_DIR`` (default
   ``~/.gpupart/tokens``, which must be on a file system every node sees), see
   :func:`read_or_create_slurm_token`. A process of a batch script or ``salloc`` shell that
   ``srun`` did not start is not a Slurm task and falls through.
3. MPI launchers: Open MPI (``OMPI_COMM_WORLD_*``), MPICH/Hydra and Intel MPI (``PMI_RANK``,
   ``PMI_SIZE``, ``MPI_LOCALRANKID``, ``MPI_LOCALNRANKS``), MVAPICH (``MV2_COMM_WORLD_*``),
   PMIx (``PMIX_RANK`` with ``PMIX_SIZE``). Rank 0 hosts the coordinator and
   :func:`exchange_via_mpi` broadcasts its address and the job secret over MPI; setting
   ``GPUPART_COORDINATOR`` and ``GPUPART_JOB_TOKEN`` instead makes MPI unnecessary. When a
   Slurm step and an MPI launcher disagree about rank or size (``mpirun`` inside an
   allocation starts its daemons with ``srun``), the MPI launcher wins.
4. Otherwise a single process (rank 0 of 1).

Every malformed or inconsistent variable raises :class:`~gpupart.BootstrapError` naming the
variable, the form expected and what was found (secrets are never echoed). :func:`detect`
keeps no state: it reads the mapping it is given, plus the token file under Slurm.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pwd
import re
import secrets
import socket
import stat
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpupart.errors import BootstrapError

__all__ = [
    "JobSpec",
    "detect",
    "exchange_via_mpi",
    "expand_hostlist",
    "expand_tasks_per_node",
    "read_or_create_slurm_token",
    "slurm_port",
    "slurm_token_file",
]

logger = logging.getLogger("gpupart.bootstrap")

#: Ports :func:`slurm_port` picks from: unprivileged, below Linux's ephemeral range (32768+).
SLURM_PORT_RANGE = (20000, 32000)
_TOKEN_BYTES = 32
_MIN_TOKEN_BYTES = 16
_DEFAULT_TIMEOUT = 120.0
_MAX_HOSTS = 1 << 20
# Step ids at or above this are Slurm's special steps (batch script, extern, interactive).
_SLURM_SPECIAL_STEP = 0xFFFFFFF0
_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class JobSpec:
    """Where one process sits in the job, as its launcher described it.

    ``rank``/``size`` place the process in the job, ``local_rank``/``local_size`` on its node
    and ``node_id`` says which node (0 when the launcher does not say). ``launcher`` is
    ``'gpupart'``, ``'slurm'``, ``'mpi'`` or ``'single'``; ``job_id`` is the same on every
    rank of the job. ``coordinator`` is the ``(host, port)`` every rank joins (``None`` for
    ``'single'``, and for ``'mpi'`` until :func:`exchange_via_mpi`); ``token`` the job
    secret (under ``'mpi'`` only rank 0 holds it before the exchange).

    When ``serve_coordinator`` is true this process hosts the job's
    :class:`~gpupart.job.coordinator.Coordinator` with ``token``, listening on
    ``bind_host`` at ``coordinator[1]`` (or any free port while ``coordinator`` is
    ``None``), then joins it like every other rank.
    """

    rank: int
    size: int
    local_rank: int
    local_size: int
    node_id: int
    launcher: str
    job_id: str
    coordinator: tuple[str, int] | None
    serve_coordinator: bool
    token: bytes | None
    bind_host: str | None
    #: The user-only file the token was read from (Slurm): the serving rank deletes it
    #: once every rank has joined.
    token_file: str | None = None

    def __repr__(self) -> str:
        token = "None" if self.token is None else f"<{len(self.token)} secret bytes>"
        return (
            f"JobSpec(rank={self.rank}, size={self.size}, local_rank={self.local_rank},"
            f" local_size={self.local_size}, node_id={self.node_id},"
            f" launcher={self.launcher!r}, job_id={self.job_id!r},"
            f" coordinator={self.coordinator!r}, serve_coordinator={self.serve_coordinator},"
            f" token={token}, bind_host={self.bind_host!r})"
        )


# -- Slurm syntax ------------------------------------------------------------------------


def expand_hostlist(spec: str) -> list[str]:
    """Expand Slurm's hostlist syntax: ``'gpu[01-03,07],login'`` -> ``['gpu01', ...]``.

    Ranges keep the zero padding of their lower bound (``[08-10]`` -> ``08 09 10``); several
    bracket groups in one name expand to their product (``r[1-2]n[1-2]`` -> ``r1n1 r1n2 r2n1
    r2n2``). Raises :class:`~gpupart.BootstrapError` on malformed input.
    """
    return _expand_hostlist(spec, "hostlist")


def _expand_hostlist(spec: str, var: str) -> list[str]:
    def bad(why: str) -> BootstrapError:
        return BootstrapError(
            f"{var}: expected a Slurm hostlist such as 'gpu[01-04,07],login1', found {spec!r}"
            f" ({why})"
        )

    if not isinstance(spec, str):
        raise BootstrapError(f"{var}: expected a Slurm hostlist string, found {spec!r}")
    hosts: list[str] = []
    for item in _split_top_level(spec, bad):
        if not item:
            raise bad("empty host name")
        if any(ch.isspace() for ch in item):
            raise bad("white space in a host name")
        # Brackets balance and never nest here: split gives literal, group, literal, ...
        pieces = re.split(r"\[([^\[\]]*)\]", item)
        names = [pieces[0]]
        for group, literal in zip(pieces[1::2], pieces[2::2], strict=True):
            options = _expand_ranges(group, bad)
            if len(hosts) + len(names) * len(options) > _MAX_HOSTS:
                raise bad(f"more than {_MAX_HOSTS} hosts")
            names = [name + option + literal for name in names for option in options]
        hosts.extend(names)
    return hosts


def _split_top_level(spec: str, bad: Callable[[str], BootstrapError]) -> list[str]:
    """Split at commas outside brackets, checking that brackets balance and never nest."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        if ch == "[":
            if depth:
                raise bad("nested '['")
            depth = 1
        elif ch == "]":
            if not depth:
                raise bad("']' without '['")
            depth = 0
        elif ch == "," and not depth:
            items.append(spec[start:i])
            start = i + 1
    if depth:
        raise bad("'[' without ']'")
    items.append(spec[start:])
    return [item.strip() for item in items]


def _expand_ranges(group: str, bad: Callable[[str], BootstrapError]) -> list[str]:
    out: list[str] = []
    for part in group.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise bad(f"bad range {part!r} in brackets; expected N or N-M")
        lo_text, hi_text = match.group(1), match.group(2)
        lo = int(lo_text)
        hi = lo if hi_text is None else int(hi_text)
        if hi < lo:
            raise bad(f"range {part!r} runs backwards")
        if len(out) + hi - lo + 1 > _MAX_HOSTS:
            raise bad(f"more than {_MAX_HOSTS} hosts")
        width = len(lo_text)
        out.extend(f"{n:0{width}d}" for n in range(lo, hi + 1))
    return out


def expand_tasks_per_node(spec: str) -> list[int]:
    """Expand ``SLURM_TASKS_PER_NODE`` syntax: ``'2(x3),1'`` -> ``[2, 2, 2, 1]``."""
    return _expand_tasks_per_node(spec, "tasks per node")


def _expand_tasks_per_node(spec: str, var: str) -> list[int]:
    counts: list[int] = []
    for part in str(spec).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:\(\s*x\s*(\d+)\s*\))?\s*", part)
        if match is None or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
            raise BootstrapError(
                f"{var}: expected comma-separated task counts >= 1, each optionally repeated"
                f" as N(xR), e.g. '2(x3),1', found {spec!r}"
            )
        repeat = int(match.group(2) or 1)
        if len(counts) + repeat > _MAX_HOSTS:
            raise BootstrapError(f"{var}: more than {_MAX_HOSTS} nodes in {spec!r}")
        counts.extend([int(match.group(1))] * repeat)
    return counts


def slurm_port(job_id: str, step_id: str) -> int:
    """Return the coordinator port of a Slurm job step (the same on every node).

    A hash of ``job_id.step_id`` into :data:`SLURM_PORT_RANGE`, so that concurrent steps on
    one node rarely collide; set ``GPUPART_COORDINATOR`` when one does.
    """
    lo, hi = SLURM_PORT_RANGE
    digest = hashlib.sha256(f"{job_id}.{step_id}".encode()).digest()
    return lo + int.from_bytes(digest[:8], "big") % (hi - lo)


def slurm_token_file(
    token_dir: str | os.PathLike[str], job_id: str, step_id: str, restart: int = 0
) -> Path:
    """Return the path of a Slurm job step's token file (see :func:`read_or_create_slurm_token`).

    ``restart`` is ``SLURM_RESTART_COUNT``: a requeued job keeps its id, not its token.
    """
    name = f"{job_id}.{step_id}" + (f".r{restart}" if restart else "")
    return Path(token_dir) / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".token")


def read_or_create_slurm_token(
    path: str | os.PathLike[str], *, create: bool, timeout: float = _DEFAULT_TIMEOUT
) -> bytes:
    """Create (rank 0, ``create=True``) or wait for and read the job step's token file.

    The file holds the secret in hex, is readable only by its owner (mode 0600) and lives in
    a directory only its owner may enter (0700). Rank 0 creates both; the file is created
    with ``O_CREAT | O_EXCL``, so a file left by another run is an error, not a reuse. The
    other ranks poll for it (listing the directory, which revalidates NFS caches) until
    ``timeout`` seconds; a file owned by someone else or readable by others is refused.
    """
    path = Path(path)
    return _create_token(path) if create else _wait_for_token(path, timeout)


def _create_token(path: Path) -> bytes:
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(directory)
    except OSError as exc:
        raise BootstrapError(
            f"GPUPART_TOKEN_DIR: could not create the token directory {directory}: {exc}"
        ) from exc
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise BootstrapError(
            f"GPUPART_TOKEN_DIR: expected a directory owned by you (uid {os.getuid()}) with"
            f" mode 0700, found {directory} owned by uid {info.st_uid} with mode"
            f" {stat.S_IMODE(info.st_mode):04o}; run 'chmod 700 {directory}' or point"
            " GPUPART_TOKEN_DIR elsewhere"
        )
    token = secrets.token_bytes(_TOKEN_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise BootstrapError(
            f"token file {path} already exists (left by an earlier run of this job step?);"
            " remove it and start the step again"
        ) from exc
    except OSError as exc:
        raise BootstrapError(f"could not create the token file {path}: {exc}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.hex().encode() + b"\n")
        os.fsync(fd)
    except OSError as exc:
        raise BootstrapError(f"could not write the token file {path}: {exc}") from exc
    finally:
        os.close(fd)
    return token


def _wait_for_token(path: Path, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        token = _try_read_token(path)
        if token is not None:
            return token
        if time.monotonic() >= deadline:
            raise BootstrapError(
                f"token file {path} did not appear within {timeout:g} s"
                " (GPUPART_BOOTSTRAP_TIMEOUT); rank 0 writes it, so GPUPART_TOKEN_DIR must be"
                " a directory every node of the job sees, or set GPUPART_JOB_TOKEN"
            )
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.25)


def _try_read_token(path: Path) -> bytes | None:
    """Return the token, ``None`` while the file is missing or still being written."""
    try:
        if path.name not in os.listdir(path.parent):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BootstrapError(f"could not read the token file {path}: {exc}") from exc
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise BootstrapError(
                f"token file {path}: expected a file owned by you (uid {os.getuid()}) with mode"
                f" 0600, found one owned by uid {info.st_uid} with mode"
                f" {stat.S_IMODE(info.st_mode):04o}; refusing to trust it"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    if not data.endswith(b"\n"):
        return None  # rank 0 is still writing it
    try:
        token = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        token = b""
    if len(token) < _MIN_TOKEN_BYTES:
        raise BootstrapError(
            f"token file {path}: expected a line of at least {2 * _MIN_TOKEN_BYTES} hex digits,"
            f" found {len(data)} bytes that are not one"
        )
    return token


# -- reading variables -------------------------------------------------------------------


class _Env:
    """Typed, validating reads of one environment mapping (errors name the variable)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def has(self, *names: str) -> bool:
        return any(name in self.environ for name in names)

    def first(self, *names: str) -> str | None:
        """Name of the first variable of ``names`` that is set, else ``None``."""
        return next((name for name in names if name in self.environ), None)

    def require(self, name: str, why: str) -> str:
        if name not in self.environ:
            raise BootstrapError(f"{name}: expected it to be set ({why}), found it unset")
        return self.environ[name]

    def integer(self, name: str, why: str, *, minimum: int = 0) -> int:
        text = self.require(name, why)
        if re.fullmatch(r"\s*\d+\s*", text) is None or int(text) < minimum:
            raise BootstrapError(f"{name}: expected an integer >= {minimum}, found {text!r}")
        return int(text)

    def seconds(self, name: str, default: float) -> float:
        if name not in self.environ:
            return default
        text = self.environ[name]
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise BootstrapError(f"{name}: expected a number of seconds > 0, found {text!r}")
        return value

    def address(self, name: str) -> tuple[str, int]:
        text = self.environ[name]
        match = re.fullmatch(r"\s*(?:\[([^\]]+)\]|([^\s:\[\]]+)):(\d{1,5})\s*", text)
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise BootstrapError(
                f"{name}: expected host:port (or [ipv6]:port) with a port in 1-65535,"
                f" found {text!r}"
            )
        return match.group(1) or match.group(2), int(match.group(3))

    def host(self, name: str) -> str | None:
        if name not in self.environ:
            return None
        text = self.environ[name]
        host = text.strip().removeprefix("[").removesuffix("]")
        if not host or any(ch.isspace() or ch in "[]/" for ch in host):
            raise BootstrapError(f"{name}: expected a host name or IP address, found {text!r}")
        return host

    def token(self, name: str) -> bytes:
        text = self.environ[name].strip()
        try:
            token = bytes.fromhex(text)
        except ValueError:
            token = b""
        if len(token) < _MIN_TOKEN_BYTES:
            raise BootstrapError(
                f"{name}: expected at least {2 * _MIN_TOKEN_BYTES} hex digits (a secret of"
                f" {_MIN_TOKEN_BYTES}+ bytes), found {len(text)} characters that are not one"
            )
        return token


def _check_place(rank: tuple[str, int], size: tuple[str, int]) -> None:
    """Check ``rank < size`` for two ``(variable, value)`` pairs."""
    if rank[1] >= size[1]:
        raise BootstrapError(
            f"{rank[0]}: expected a value below {size[0]}={size[1]}, found {rank[1]}"
        )


def _resolve_bind(host: str, var: str, *, multinode: bool) -> str:
    """Address to listen on for ``host``: a non-loopback one when other nodes must reach it."""
    try:
        _, _, addresses = socket.gethostbyname_ex(host)
    except OSError as exc:
        raise BootstrapError(
            f"{var}: could not resolve coordinator host {host!r} ({exc}); set"
            " GPUPART_COORDINATOR_HOST to this node's address on the job's network"
        ) from exc
    routable = [a for a in addresses if not a.startswith("127.")]
    if routable:
        return routable[0]
    if multinode:
        raise BootstrapError(
            f"{var}: coordinator host {host!r} resolves only to loopback {addresses}, which"
            " other nodes cannot reach; set GPUPART_COORDINATOR_HOST to this node's address"
            " on the job's network"
        )
    return addresses[0]


# -- detection ---------------------------------------------------------------------------


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


def _slurm_place(env: _Env) -> tuple[int, int, str, str] | None:
    """``(rank, size, size variable, step id)`` of an srun task, else ``None``."""
    step_var = env.first("SLURM_STEP_ID", "SLURM_STEPID")
    if not env.has("SLURM_PROCID") or step_var is None:
        return None
    step = env.environ[step_var].strip()
    if step in ("batch", "extern", "interactive"):
        return None
    if not step.isdigit():
        raise BootstrapError(f"{step_var}: expected a job step number, found {step!r}")
    if int(step) >= _SLURM_SPECIAL_STEP:
        return None
    why = "srun sets it for every task"
    size_var = env.first("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")
    if size_var is None:
        raise BootstrapError(
            f"SLURM_NTASKS: expected it to be set ({why}; or SLURM_STEP_NUM_TASKS), found it unset"
        )
    rank = env.integer("SLURM_PROCID", why)
    size = env.integer(size_var, why, minimum=1)
    _check_place(("SLURM_PROCID", rank), (size_var, size))
    return rank, size, size_var, step


def _detect_slurm(env: _Env, place: tuple[int, int, str, str]) -> JobSpec:
    rank, size, size_var, step = place
    why = "srun sets it for every task"
    local_rank = env.integer("SLURM_LOCALID", why)
    node_id = env.integer("SLURM_NODEID", why)
    tpn_var = env.first("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    if tpn_var is None:
        raise BootstrapError(
            f"SLURM_STEP_TASKS_PER_NODE: expected it to be set ({why}; or"
            " SLURM_TASKS_PER_NODE), found it unset"
        )
    tasks_per_node = _expand_tasks_per_node(env.environ[tpn_var], tpn_var)
    if node_id >= len(tasks_per_node):
        raise BootstrapError(
            f"SLURM_NODEID: expected a node below the {len(tasks_per_node)} nodes of"
            f" {tpn_var}={env.environ[tpn_var]!r}, found {node_id}"
        )
    local_size = tasks_per_node[node_id]
    _check_place(("SLURM_LOCALID", local_rank), (f"{tpn_var}[{node_id}]", local_size))
    nodes_var = env.first("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    if nodes_var is None:
        raise BootstrapError(
            f"SLURM_STEP_NODELIST: expected it to be set ({why}; or SLURM_JOB_NODELIST),"
            " found it unset"
        )
    nodes = _expand_hostlist(env.environ[nodes_var], nodes_var)
    if tpn_var == "SLURM_STEP_TASKS_PER_NODE" and sum(tasks_per_node) != size:
        raise BootstrapError(
            f"{tpn_var}: expected task counts adding up to {size_var}={size}, found"
            f" {env.environ[tpn_var]!r} (sum {sum(tasks_per_node)})"
        )
    if (tpn_var, nodes_var) == ("SLURM_STEP_TASKS_PER_NODE", "SLURM_STEP_NODELIST") and len(
        nodes
    ) != len(tasks_per_node):
        raise BootstrapError(
            f"{nodes_var}: expected the {len(tasks_per_node)} nodes that {tpn_var} counts"
            f" tasks for, found {len(nodes)} in {env.environ[nodes_var]!r}"
        )
    multinode = len(nodes) > 1 or local_size < size
    job_var = env.first("SLURM_JOB_ID", "SLURM_JOBID")
    if job_var is None:
        raise BootstrapError(f"SLURM_JOB_ID: expected it to be set ({why}), found it unset")
    job = env.environ[job_var].strip()
    if not job:
        raise BootstrapError(f"{job_var}: expected a job id, found ''")
    restart = env.integer("SLURM_RESTART_COUNT", why) if env.has("SLURM_RESTART_COUNT") else 0
    serve = rank == 0
    override_host = env.host("GPUPART_COORDINATOR_HOST")
    if env.has("GPUPART_COORDINATOR"):
        host, port = env.address("GPUPART_COORDINATOR")
        source = "GPUPART_COORDINATOR"
    else:
        host, port = nodes[0], slurm_port(job, step)
        source = nodes_var
        if override_host is not None:
            host = override_host
        elif not multinode:
            host = _LOOPBACK
    bind_host: str | None = None
    if serve:
        if override_host is not None:
            bind_host = override_host
        else:
            bind_host = _resolve_bind(host, source, multinode=multinode)
            host = bind_host  # rank 0 may see its own name map to loopback; use the address
    token_file = None
    if env.has("GPUPART_JOB_TOKEN"):
        token = env.token("GPUPART_JOB_TOKEN")
    else:
        token_dir = _token_dir(env)
        path = slurm_token_file(token_dir, job, step, restart)
        timeout = env.seconds("GPUPART_BOOTSTRAP_TIMEOUT", _DEFAULT_TIMEOUT)
        token = read_or_create_slurm_token(path, create=serve, timeout=timeout)
        token_file = str(path)
    return JobSpec(
        rank=rank,
        size=size,
        local_rank=local_rank,
        local_size=local_size,
        node_id=node_id,
        launcher="slurm",
        job_id=f"{job}.{step}",
        coordinator=(host, port),
        serve_coordinator=serve,
        token=token,
        bind_host=bind_host,
        token_file=token_file,
    )


def _token_dir(env: _Env) -> Path:
    if env.has("GPUPART_TOKEN_DIR"):
        text = env.environ["GPUPART_TOKEN_DIR"].strip()
        if not text:
            raise BootstrapError("GPUPART_TOKEN_DIR: expected a directory, found ''")
        return Path(text).expanduser()
    home = env.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / ".gpupart" / "tokens"


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


# -- the MPI exchange --------------------------------------------------------------------

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
