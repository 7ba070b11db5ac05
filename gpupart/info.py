"""``gpupart info``: this host as a gpupart job would see it, and the traps that slow a job down.

:func:`collect` gathers a :class:`HostReport`: the GPUs (PCI bus id, UUID, NUMA node, CPUs,
memory, NVLinks) and their peer-to-peer matrix from :func:`gpupart.topology.local`, the CPUs
this process may use, the InfiniBand ports (``/sys/class/infiniband``), the UCX a rank would
load and its transports (:func:`gpupart.comm.ucx_info.describe_ucx`), the container and
IPC namespace, the Slurm job, and the environment variables that steer all of these.
:func:`find_traps` turns them into warnings for the known traps:

* Slurm ``--gpus-per-task``: each task sees only its own GPU, so CUDA IPC between the tasks
  of a node fails and GPU transfers go through host memory;
* a pip UCX wheel (built without verbs) on a host with InfiniBand;
* an expected transport that is not active: CUDA on a GPU host, ``cuda_ipc``, InfiniBand
  with ports present, shared memory left out by ``UCX_TLS``, GPU pairs without P2P;
* a private IPC namespace (Docker's default): no shared memory with other containers;
  a small ``/dev/shm``.

Nothing here raises: what could not be read is said in ``notes``. :func:`render_text` prints
the report for people (with ``rich``), ``HostReport.to_dict`` is the ``--json`` output, whose
top-level keys are :data:`JSON_KEYS`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gpupart import topology
from gpupart._version import __version__
from gpupart.comm.ucx_info import UCXInfo
from gpupart.errors import BootstrapError
from gpupart.job.slurm import expand_tasks_per_node

__all__ = [
    "JSON_KEYS",
    "ContainerInfo",
    "HostReport",
    "IbPort",
    "collect",
    "default_nprocs",
    "find_traps",
    "read_container",
    "read_infiniband",
    "render_text",
]

#: Top-level keys of ``gpupart info --json`` (documented in deploy/README.md).
JSON_KEYS = (
    "gpupart",
    "hostname",
    "primary_ip",
    "cpu_affinity",
    "numa_nodes",
    "driver_version",
    "cuda_visible_devices",
    "gpus",
    "p2p",
    "infiniband",
    "ucx",
    "container",
    "slurm",
    "environment",
    "default_nprocs",
    "notes",
    "warnings",
)
#: The inode of the initial (host) IPC namespace: ``PROC_IPC_INIT_INO`` in Linux.
HOST_IPC_NAMESPACE = 0xEFFFFFFF
_SMALL_SHM = 1 << 30
_NS_RE = re.compile(r"^ipc:\[(\d+)\]$")
_ENV_PREFIXES = ("UCX_", "GPUPART_", "NCCL_")
_ENV_NAMES = (
    "RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "LD_LIBRARY_PATH",
)
_SECRETS = ("GPUPART_JOB_TOKEN",)
_SLURM_NAMES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_JOB_NODELIST",
    "SLURM_NNODES",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_TASKS_PER_NODE",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_NODEID",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_CPUS_PER_TASK",
    "SLURM_GPUS_PER_TASK",
    "SLURM_GPUS_PER_NODE",
    "SLURM_GPUS_ON_NODE",
    "SLURM_TRES_PER_TASK",
    "SLURM_GRES_FLAGS",
    "SLURM_CPU_BIND",
)


@dataclass(frozen=True)
class IbPort:
    """One InfiniBand/RoCE port: ``device:port`` as UCX names it, its state and link layer."""

    device: str
    port: int
    state: str
    link_layer: str

    @property
    def name(self) -> str:
        """The port as ``UCX_NET_DEVICES`` names it, e.g. ``mlx5_0:1``."""
        return f"{self.device}:{self.port}"

    @property
    def active(self) -> bool:
        """Whether the port is up (``ACTIVE``)."""
        return self.state.upper().endswith("ACTIVE")


@dataclass(frozen=True)
class ContainerInfo:
    """The container this process runs in (``runtime`` ``None``: none detected).

    ``private_ipc`` is True when the process is not in the host's IPC namespace (Docker's
    default, Kubernetes pods): it shares memory only with processes of the same namespace.
    ``shm_bytes`` is the size of ``/dev/shm``.
    """

    runtime: str | None
    ipc_namespace: int | None
    private_ipc: bool | None
    shm_bytes: int | None


@dataclass(frozen=True)
class HostReport:
    """Everything ``gpupart info`` shows; :meth:`to_dict` is its JSON form."""

    topology: topology.HostTopology
    cpu_affinity: tuple[int, ...]
    infiniband: tuple[IbPort, ...]
    ucx: UCXInfo
    container: ContainerInfo
    slurm: dict[str, str]
    environment: dict[str, str]
    default_nprocs: int
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and scalars with the keys of :data:`JSON_KEYS`."""
        topo = self.topology.to_dict()
        out = {
            "gpupart": __version__,
            "hostname": topo["hostname"],
            "primary_ip": topo["primary_ip"],
            "cpu_affinity": list(self.cpu_affinity),
            "numa_nodes": topo["numa_nodes"],
            "driver_version": topo["driver_version"],
            "cuda_visible_devices": topo["cuda_visible_devices"],
            "gpus": topo["gpus"],
            "p2p": topo["p2p"],
            "infiniband": [
                {"name": p.name, "state": p.state, "link_layer": p.link_layer, "active": p.active}
                for p in self.infiniband
            ],
            "ucx": self.ucx.to_dict(),
            "container": {
                "runtime": self.container.runtime,
                "ipc_namespace": self.container.ipc_namespace,
                "private_ipc": self.container.private_ipc,
                "shm_bytes": self.container.shm_bytes,
            },
            "slurm": dict(self.slurm),
            "environment": dict(self.environment),
            "default_nprocs": self.default_nprocs,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }
        return {key: out[key] for key in JSON_KEYS}


# --------------------------------------------------------------------------- reading the host


def read_infiniband(sys_root: str | os.PathLike[str] = "/sys") -> tuple[IbPort, ...]:
    """Return the InfiniBand/RoCE ports under ``<sys_root>/class/infiniband``; never raises."""
    base = Path(sys_root) / "class" / "infiniband"
    ports = []
    try:
        devices = sorted(base.iterdir())
    except OSError:
        return ()
    for device in devices:
        try:
            numbers = sorted(int(p.name) for p in (device / "ports").iterdir() if p.name.isdigit())
        except OSError:
            continue
        for number in numbers:
            where = device / "ports" / str(number)
            ports.append(
                IbPort(
                    device.name,
                    number,
                    _read(where / "state") or "unknown",
                    _read(where / "link_layer") or "unknown",
                )
            )
    return tuple(ports)


def read_container(
    *,
    root: str | os.PathLike[str] = "/",
    proc_root: str | os.PathLike[str] = "/proc",
    environ: Mapping[str, str] | None = None,
) -> ContainerInfo:
    """Detect the container runtime, the IPC namespace and ``/dev/shm``'s size; never raises."""
    env = os.environ if environ is None else environ
    base = Path(root)
    runtime = None
    if env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER"):
        runtime = "apptainer"
    elif (base / ".dockerenv").exists():
        runtime = "docker"
    elif (base / "run" / ".containerenv").exists():
        runtime = "podman"
    elif env.get("KUBERNETES_SERVICE_HOST"):
        runtime = "kubernetes"
    elif env.get("container"):
        runtime = env["container"]
    namespace = None
    try:
        match = _NS_RE.match(os.readlink(Path(proc_root) / "self" / "ns" / "ipc"))
        namespace = int(match.group(1)) if match else None
    except OSError:
        pass
    shm = None
    try:
        stat = os.statvfs(base / "dev" / "shm")
        shm = stat.f_blocks * stat.f_frsize
    except OSError:
        pass
    private = None if namespace is None else namespace != HOST_IPC_NAMESPACE
    return ContainerInfo(runtime, namespace, private, shm)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _allowed_cpus() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


def default_nprocs(
    topo: topology.HostTopology | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """Ranks ``gpupart run`` starts without ``-n``: one per GPU this process sees, else 1.

    GPUs are counted as CUDA will show them (after ``CUDA_VISIBLE_DEVICES``); with
    ``GPUPART_DEVICE=cpu`` or no GPU the answer is 1.
    """
    env = os.environ if environ is None else environ
    if env.get("GPUPART_DEVICE", "").strip() == "cpu":
        return 1
    topo = topology.local(environ=env) if topo is None else topo
    return max(1, len(topology.visible_gpus(topo, env)))


def collect(
    *,
    environ: Mapping[str, str] | None = None,
    sys_root: str | os.PathLike[str] = "/sys",
    root: str | os.PathLike[str] = "/",
    ucx: UCXInfo | None = None,
) -> HostReport:
    """Gather the :class:`HostReport` of this host (``ucx`` given: use it instead of UCX's)."""
    env = os.environ if environ is None else environ
    topo = topology.local(sys_root=sys_root, environ=env)
    if ucx is None:
        from gpupart.comm.ucx_info import describe_ucx

        ucx = describe_ucx(env)
    ib = read_infiniband(sys_root)
    container = read_container(root=root, environ=env)
    notes = list(topo.notes)
    if ucx.error:
        notes.append(ucx.error)
    return HostReport(
        topology=topo,
        cpu_affinity=_allowed_cpus(),
        infiniband=ib,
        ucx=ucx,
        container=container,
        slurm={k: env[k] for k in _SLURM_NAMES if k in env},
        environment=_environment(env),
        default_nprocs=default_nprocs(topo, env),
        notes=tuple(notes),
        warnings=tuple([*topo.warnings, *find_traps(topo, ucx, ib, container, env)]),
    )


def _environment(env: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}
    for key in _SECRETS:
        if key in out:
            out[key] = "<set>"
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- the traps


def find_traps(
    topo: topology.HostTopology,
    ucx: UCXInfo,
    infiniband: tuple[IbPort, ...],
    container: ContainerInfo,
    environ: Mapping[str, str],
) -> list[str]:
    """Warnings for the configurations known to break or slow down a gpupart job."""
    found = _slurm_traps(environ)
    found += _ucx_traps(topo, ucx, infiniband)
    found += _p2p_traps(topo)
    if container.private_ipc:
        where = f"a {container.runtime} container" if container.runtime else "a container"
        found.append(
            f"this process runs in {where} with a private IPC namespace (Docker's default):"
            " shared memory and CUDA IPC work only between ranks inside this container. Run"
            " every rank of a node in one container, or start the containers with --ipc=host"
            " (Kubernetes: hostIPC: true)"
        )
    if container.shm_bytes is not None and container.shm_bytes < _SMALL_SHM:
        found.append(
            f"/dev/shm holds only {container.shm_bytes >> 20} MiB: UCX's shared-memory"
            " transport needs more for large messages between ranks; start the container"
            " with --ipc=host or --shm-size=16g"
        )
    return found


def _slurm_traps(env: Mapping[str, str]) -> list[str]:
    if "SLURM_JOB_ID" not in env:
        return []
    per_task = env.get("SLURM_GPUS_PER_TASK") or (
        "gpu" if "gpu" in env.get("SLURM_TRES_PER_TASK", "") else ""
    )
    flags = env.get("SLURM_GRES_FLAGS", "") + "," + env.get("SBATCH_GRES_FLAGS", "")
    if not per_task or "allow-task-sharing" in flags:
        return []
    tasks_here = _slurm_tasks_on_this_node(env)
    if tasks_here is not None and tasks_here < 2:
        return []
    count = f"{tasks_here} tasks" if tasks_here is not None else "several tasks"
    return [
        f"Slurm --gpus-per-task (SLURM_GPUS_PER_TASK={env.get('SLURM_GPUS_PER_TASK', '?')})"
        f" with {count} on this node: each task sees only its own GPU, so CUDA IPC between"
        " tasks fails and GPU transfers go through host memory. Add"
        " --gres-flags=allow-task-sharing (Slurm >= 23.11), or request --gpus-per-node and"
        " let gpupart bind one GPU per local rank"
    ]


def _slurm_tasks_on_this_node(env: Mapping[str, str]) -> int | None:
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if spec:
        try:
            counts = expand_tasks_per_node(spec)
            node = int(env.get("SLURM_NODEID", "0"))
            return counts[node] if node < len(counts) else None
        except (BootstrapError, ValueError):  # malformed: unknown here, detect() reports it
            return None
    per_node = env.get("SLURM_NTASKS_PER_NODE", "")
    return int(per_node) if per_node.isdigit() else None


def _ucx_traps(
    topo: topology.HostTopology, ucx: UCXInfo, infiniband: tuple[IbPort, ...]
) -> list[str]:
    found: list[str] = []
    if ucx.directory is None:
        return found  # UCX could not be loaded: the note says why
    have = ucx.available
    tls = f"UCX_TLS={ucx.tls!r}" if ucx.tls is not None else "UCX_TLS unset"
    if ucx.source == "wheel" and not ucx.has_infiniband_module and infiniband:
        system = f" (the loader finds {ucx.system_library})" if ucx.system_library else ""
        found.append(
            f"this host has InfiniBand/RoCE ports ({', '.join(p.name for p in infiniband)}) but"
            f" the pip UCX wheel in use ({ucx.directory}) was built without verbs: between"
            " nodes UCX falls back to TCP. Install a UCX built with verbs and rdmacm and set"
            f" RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY=true so that ucxx loads it{system}"
        )
    if ucx.prefer_system and ucx.source == "wheel":
        found.append(
            "RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY is set, but the loader found no system UCX,"
            f" so the wheel's ({ucx.directory}) is in use: put the system UCX's lib directory"
            " on LD_LIBRARY_PATH"
        )
    if ucx.has_infiniband_module and infiniband and not have["infiniband"]:
        found.append(
            f"InfiniBand ports are present ({', '.join(p.name for p in infiniband)}) and UCX"
            f" has verbs, but no rc/dc/ud transport is active ({tls}): check UCX_TLS and"
            " UCX_NET_DEVICES, that rdma-core is installed and that /dev/infiniband is visible"
            " (containers: --device=/dev/infiniband)"
        )
    down = [p.name for p in infiniband if not p.active]
    if down:
        found.append(f"InfiniBand/RoCE ports not active: {', '.join(down)}")
    if topo.gpus and not have["cuda_copy"]:
        found.append(
            f"UCX here cannot move GPU memory (no cuda_copy transport, {tls}): a UCX wheel for"
            " another CUDA major version (pick ucxx-cu12 or ucxx-cu13 to match the driver), a"
            " UCX built without CUDA, or UCX_TLS leaving it out"
        )
    elif topo.gpus and not have["cuda_ipc"]:
        found.append(
            f"cuda_ipc is not active ({tls}): GPU transfers between processes of this node go"
            " through host memory. Check UCX_TLS; under Slurm or in containers make every"
            " GPU of the node visible to every rank"
        )
    if ucx.tls is not None and not (have["shared_memory"] or have["cma"]) and have["tcp"]:
        found.append(f"{tls} leaves out shared memory: ranks on one node talk over TCP")
    return found


def _p2p_traps(topo: topology.HostTopology) -> list[str]:
    if topo.p2p is None:
        return []
    pairs = [
        (topo.gpus[i].index, topo.gpus[j].index)
        for i, row in enumerate(topo.p2p)
        for j, ok in enumerate(row)
        if i < j and not (ok and topo.p2p[j][i])
    ]
    if not pairs:
        return []
    shown = ", ".join(f"{a}-{b}" for a, b in pairs[:8]) + (" ..." if len(pairs) > 8 else "")
    return [
        f"no peer-to-peer access between GPUs {shown}: cuda_ipc transfers between them stage"
        " through host memory (PCIe switches or ACS/IOMMU settings; see nvidia-smi topo -m)"
    ]


# --------------------------------------------------------------------------- text output


def _cpus(cpus: tuple[int, ...] | list[int]) -> str:
    """``(0, 1, 2, 5)`` -> ``'0-2,5'``."""
    items: list[str] = []
    values = sorted(cpus)
    start = prev = None
    for c in [*values, None]:
        if start is None:
            start = prev = c
        elif c is not None and prev is not None and c == prev + 1:
            prev = c
        else:
            items.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = c
    return ",".join(items) or "-"


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _link(topo: topology.HostTopology, i: int, j: int) -> str:
    if i == j:
        return "X"
    a, b = topo.gpus[i], topo.gpus[j]
    direct = sum(1 for link in a.nvlinks if link.remote_pci_bus_id == b.pci_bus_id)
    if direct:
        return f"NV{direct}"
    if any(link.remote_kind == "switch" for link in a.nvlinks) and any(
        link.remote_kind == "switch" for link in b.nvlinks
    ):
        return "NVSW"
    if topo.p2p is None:
        return "?"
    return "P2P" if topo.p2p[i][j] else "-"


def render_text(report: HostReport, file: IO[str] | None = None) -> None:
    """Print the report for people (``rich`` tables; plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    stream = sys.stdout if file is None else file
    wide = None if stream.isatty() else 200  # not a terminal: keep UUIDs and bus ids whole
    console = Console(file=stream, highlight=False, soft_wrap=True, width=wide)

    def say(text: str) -> None:
        console.print(text, markup=False)

    topo = report.topology
    console.print(
        f"[bold]gpupart {__version__}[/bold] on {_escape(topo.hostname)} ({topo.primary_ip})"
    )
    numa = "; ".join(f"{n.id}: {_cpus(n.cpus)}" for n in topo.numa_nodes)
    say(
        f"CPUs this process may use: {_cpus(report.cpu_affinity)}"
        f" ({len(report.cpu_affinity)}); NUMA nodes: {numa}"
    )
    if topo.gpus:
        cvd = topo.cuda_visible_devices
        shown = "unset" if cvd is None else ",".join(cvd)
        say(
            f"GPUs: {len(topo.gpus)}, driver {topo.driver_version or '?'};"
            f" CUDA_VISIBLE_DEVICES {shown}"
        )
        table = Table("GPU", "name", "PCI bus id", "UUID", "NUMA", "CPUs", "memory", "NVLinks")
        for g in topo.gpus:
            table.add_row(
                str(g.index),
                g.name,
                g.pci_bus_id,
                g.uuid,
                "?" if g.numa_node is None else str(g.numa_node),
                _cpus(g.cpu_affinity),
                _bytes(g.memory_total),
                str(len(g.nvlinks)),
            )
        console.print(table)
        matrix = Table("", *(f"GPU{g.index}" for g in topo.gpus), title="NVLink / P2P")
        for i, g in enumerate(topo.gpus):
            matrix.add_row(f"GPU{g.index}", *(_link(topo, i, j) for j in range(len(topo.gpus))))
        console.print(matrix)
    else:
        say("GPUs: none (a CPU-only host: ranks run with NumPy/pandas)")
    if report.infiniband:
        ports = ", ".join(f"{p.name} {p.state} ({p.link_layer})" for p in report.infiniband)
        say(f"InfiniBand/RoCE: {ports}")
    else:
        say("InfiniBand/RoCE: none")
    ucx = report.ucx
    if ucx.directory is not None:
        source = "pip wheel" if ucx.source == "wheel" else "system library"
        say(f"UCX {ucx.version or '?'} ({source}, {ucx.directory})")
        say(
            f"  modules built: {', '.join(ucx.modules) or 'none'} (self, tcp, posix, sysv built in)"
        )
        if not ucx.has_infiniband_module:
            say("  built without InfiniBand (verbs): between nodes this UCX uses TCP")
        say(f"  transports active here: {', '.join(ucx.transports) or 'none'}")
        marks = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in ucx.available.items())
        say(f"  {marks}")
        default = "" if ucx.tls is not None else " (gpupart's default: ^cma)"
        say(f"  UCX_TLS: {ucx.tls if ucx.tls is not None else 'unset'}{default}")
    else:
        say("UCX: not available")
    c = report.container
    ipc = {None: "unknown", True: "private", False: "the host's"}[c.private_ipc]
    say(
        f"Container: {c.runtime or 'none detected'}; IPC namespace {ipc}; /dev/shm"
        f" {_bytes(c.shm_bytes)}"
    )
    if report.slurm:
        say("Slurm: " + " ".join(f"{k}={v}" for k, v in report.slurm.items()))
    else:
        say("Slurm: not in a Slurm job")
    say(f"gpupart run without -n starts {report.default_nprocs} rank(s)")
    if report.environment:
        say("Environment: " + " ".join(f"{k}={v}" for k, v in report.environment.items()))
    for note in report.notes:
        say(f"note: {note}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {_escape(warning)}")
    if not report.warnings:
        say("no warnings")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
