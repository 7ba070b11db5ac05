"""Slurm: hostlist and tasks-per-node syntax, the step's coordinator port, an srun task's place.

A process is a Slurm task only when ``srun`` started it: ``SLURM_PROCID`` is set and
``SLURM_STEP_ID`` names a job step, not one of Slurm's special steps (batch script, extern,
interactive). Rank 0 hosts the coordinator on the first node of the step at
:func:`slurm_port`; the job secret comes from ``GPUPART_JOB_TOKEN`` or from the step's token
file (:mod:`gpupart.job.tokens`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from gpupart.errors import BootstrapError
from gpupart.job.spec import (
    _DEFAULT_TIMEOUT,
    _LOOPBACK,
    JobSpec,
    _check_place,
    _Env,
    _resolve_bind,
)
from gpupart.job.tokens import _token_dir, read_or_create_slurm_token, slurm_token_file

__all__ = ["SLURM_PORT_RANGE", "expand_hostlist", "expand_tasks_per_node", "slurm_port"]

#: Ports :func:`slurm_port` picks from: unprivileged, below Linux's ephemeral range (32768+).
SLURM_PORT_RANGE = (20000, 32000)
_MAX_HOSTS = 1 << 20
# Step ids at or above this are Slurm's special steps (batch script, extern, interactive).
_SLURM_SPECIAL_STEP = 0xFFFFFFF0


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
