"""Describe the host's GPUs, NUMA nodes and network identity; choose one GPU per process.

:func:`local` reads everything on demand (NVML through ``nvidia-ml-py``, ``/sys``, the
environment); importing this module does nothing. On a host without NVML or without a GPU,
:func:`local` returns a CPU-only description and says why in ``notes``; it never raises.
Known configuration traps are listed in ``warnings`` (for ``gpupart info``).

GPU numbering: ``GpuInfo.index`` is NVML's index, which follows PCI bus order. CUDA numbers the
devices it can see (after ``CUDA_VISIBLE_DEVICES``) ``0..n-1``; integer entries of
``CUDA_VISIBLE_DEVICES`` name NVML indices only under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (CUDA's
default, ``FASTEST_FIRST``, may order unlike GPUs differently; :func:`local` warns then).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpupart.errors import BootstrapError

__all__ = [
    "GpuInfo",
    "HostTopology",
    "NumaNode",
    "NvLink",
    "VisibleGpu",
    "gpu_for_local_rank",
    "local",
    "normalize_pci_bus_id",
    "parse_cpulist",
    "parse_cuda_visible_devices",
    "primary_ip",
    "read_numa_nodes",
    "visible_gpus",
]

_PCI_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<dev>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])$"
)
_CPU_RANGE_RE = re.compile(r"^(\d+)(?:-(\d+))?$")
_NODE_DIR_RE = re.compile(r"^node(\d+)$")
# NVML's P2P capability index for reads. pynvml spells NVML_P2P_CAPS_INDEX_READ as ``0,`` (a
# tuple), so the plain value is used here.
_P2P_CAPS_INDEX_READ = 0
_P2P_STATUS_OK = 0
_NVLINK_REMOTE_KINDS = {0: "gpu", 1: "npu", 2: "switch"}
# Addresses reserved for documentation (RFC 5737 / RFC 3849): never routed, so a UDP
# ``connect`` to them only asks the kernel which local address the default route uses.
_PROBE_ADDRESSES = ((socket.AF_INET, ("192.0.2.1", 9)), (socket.AF_INET6, ("2001:db8::1", 9)))


class _Record:
    """Mixin: ``to_dict()`` for the frozen dataclasses below (JSON-serialisable)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the record as plain dicts, lists, strings, numbers, booleans and ``None``."""
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class NumaNode(_Record):
    """A NUMA node: its id and its CPUs (empty for memory-only nodes, e.g. GPU or CXL memory)."""

    id: int
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class NvLink(_Record):
    """One active NVLink of a GPU: its link number and what is at the other end.

    ``remote_kind`` is ``'gpu'``, ``'switch'`` (NVSwitch), ``'npu'`` or ``None`` (unknown).
    """

    link: int
    remote_pci_bus_id: str | None
    remote_kind: str | None = None


@dataclass(frozen=True)
class GpuInfo(_Record):
    """One physical GPU as NVML sees it (``index`` is NVML's, i.e. PCI bus order).

    ``pci_bus_id`` is normalised by :func:`normalize_pci_bus_id`; ``memory_total`` is in
    bytes; ``mig_devices`` holds the UUIDs of its MIG instances when MIG is enabled.
    """

    index: int
    pci_bus_id: str
    uuid: str
    name: str
    numa_node: int | None
    cpu_affinity: tuple[int, ...]
    memory_total: int | None
    compute_capability: tuple[int, int] | None = None
    nvlinks: tuple[NvLink, ...] = ()
    mig_devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostTopology(_Record):
    """What :func:`local` found on this host.

    ``p2p[i][j]`` says whether ``gpus[i]`` can read ``gpus[j]``'s memory peer-to-peer
    (``None`` when NVML cannot tell). ``cuda_visible_devices`` holds the entries of that
    variable when :func:`local` ran (``None`` when unset). ``notes`` say why information is
    missing; ``warnings`` name configuration traps.
    """

    hostname: str
    primary_ip: str
    numa_nodes: tuple[NumaNode, ...]
    gpus: tuple[GpuInfo, ...] = ()
    p2p: tuple[tuple[bool, ...], ...] | None = None
    cuda_visible_devices: tuple[str, ...] | None = None
    driver_version: str | None = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def has_gpus(self) -> bool:
        """True if NVML reported at least one GPU."""
        return bool(self.gpus)


@dataclass(frozen=True)
class VisibleGpu(_Record):
    """A GPU as this process's CUDA sees it: its CUDA ordinal and the physical GPU behind it.

    ``visible_id`` is the ``CUDA_VISIBLE_DEVICES`` entry that named it (the NVML index as a
    string when the variable is unset); ``mig_uuid`` is set when the entry names a MIG instance
    (``gpu`` is then its parent GPU). Unpacks as ``ordinal, gpu = choice``.
    """

    ordinal: int
    gpu: GpuInfo
    visible_id: str
    mig_uuid: str | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.ordinal, self.gpu))


# --------------------------------------------------------------------------- parsing helpers


def parse_cpulist(text: str) -> list[int]:
    """Parse a Linux CPU list such as ``'0-3,8,10-11'`` into sorted, unique CPU ids.

    An empty or blank string gives ``[]``. Raises :class:`ValueError` on malformed text.
    """
    cpus: set[int] = set()
    for raw in text.strip().split(","):
        item = raw.strip()
        if not item:
            continue
        m = _CPU_RANGE_RE.match(item)
        if m is None:
            raise ValueError(f"CPU list {text!r}: expected items like '3' or '0-7', found {item!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"CPU list {text!r}: range {item!r} ends before it starts")
        cpus.update(range(lo, hi + 1))
    return sorted(cpus)


def normalize_pci_bus_id(bus_id: str | bytes) -> str:
    """Return a PCI bus id in one form: lower case, 4-digit domain, e.g. ``'0000:3b:00.0'``.

    Accepts NVML's ``'00000000:3B:00.0'``, CUDA's and sysfs's ``'0000:3b:00.0'`` and the
    domain-less ``'3b:00.0'`` (domain 0); bytes are decoded. Domains wider than 16 bits keep
    their digits, as sysfs writes them. Raises :class:`ValueError` otherwise.
    """
    text = bus_id.decode("ascii", "replace") if isinstance(bus_id, bytes) else str(bus_id)
    m = _PCI_RE.match(text.strip().rstrip("\x00"))
    if m is None:
        raise ValueError(f"expected a PCI bus id such as '0000:3b:00.0', found {bus_id!r}")
    domain = int(m.group("domain") or "0", 16)
    bus, dev, fn = int(m.group("bus"), 16), int(m.group("dev"), 16), int(m.group("fn"))
    return f"{domain:04x}:{bus:02x}:{dev:02x}.{fn}"


def parse_cuda_visible_devices(value: str | None) -> tuple[str, ...] | None:
    """Split ``CUDA_VISIBLE_DEVICES`` into stripped entries; ``None`` when it is unset.

    An empty value gives ``()`` (no GPU visible). Entries are not resolved here: see
    :func:`visible_gpus`.
    """
    if value is None:
        return None
    return tuple(item.strip() for item in value.split(",")) if value.strip() else ()


# --------------------------------------------------------------------------- host facts


def primary_ip() -> str:
    """Return the address of the interface the default route uses, else ``'127.0.0.1'``.

    A UDP socket is ``connect``-ed to a documentation address that is never routed: no packet
    is sent and nothing listens. IPv4 is tried first, then IPv6.
    """
    for family, address in _PROBE_ADDRESSES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                ip = sock.getsockname()[0]
        except OSError:
            continue
        if ip and ip not in ("0.0.0.0", "::"):
            return str(ip)
    return "127.0.0.1"


def read_numa_nodes(sys_root: str | os.PathLike[str] = "/sys") -> tuple[NumaNode, ...]:
    """NUMA nodes from ``<sys_root>/devices/system/node``; never raises.

    Without that directory (containers, non-Linux) one node 0 holding the CPUs this process
    may run on is returned.
    """
    base = Path(sys_root) / "devices" / "system" / "node"
    nodes: list[NumaNode] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        m = _NODE_DIR_RE.match(entry.name)
        if m is None:
            continue
        try:
            cpus = parse_cpulist((entry / "cpulist").read_text())
        except (OSError, ValueError):
            continue
        nodes.append(NumaNode(int(m.group(1)), tuple(cpus)))
    if nodes:
        return tuple(sorted(nodes, key=lambda n: n.id))
    return (NumaNode(0, tuple(sorted(_allowed_cpus()))),)


def _allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _sysfs_pci(sys_root: Path, bus_id: str, name: str) -> str | None:
    try:
        return (sys_root / "bus" / "pci" / "devices" / bus_id / name).read_text().strip()
    except OSError:
        return None


def _sysfs_numa_node(sys_root: Path, bus_id: str) -> int | None:
    text = _sysfs_pci(sys_root, bus_id, "numa_node")
    try:
        node = int(text) if text is not None else -1
    except ValueError:
        return None
    return node if node >= 0 else None


def _sysfs_cpus(sys_root: Path, bus_id: str) -> tuple[int, ...]:
    text = _sysfs_pci(sys_root, bus_id, "local_cpulist")
    try:
        return tuple(parse_cpulist(text)) if text else ()
    except ValueError:
        return ()


# --------------------------------------------------------------------------- NVML


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    return str(value)


def _mask_to_cpus(words: Any) -> tuple[int, ...]:
    cpus = []
    for w, word in enumerate(words):
        value = int(word)
        bit = 0
        while value:
            if value & 1:
                cpus.append(w * 64 + bit)
            value >>= 1
            bit += 1
    return tuple(cpus)


class _Nvml:
    """Queries NVML for one :func:`local` call; ``try_`` swallows NVML errors into ``None``."""

    def __init__(self, nvml: Any, sys_root: Path, notes: list[str]) -> None:
        self.nvml = nvml
        self.sys_root = sys_root
        self.notes = notes

    def try_(self, fn: Callable[..., Any], *args: Any, note: str | None = None) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            if note is not None:
                self.notes.append(f"{note}: {exc}")
            return None

    def gpu(self, index: int) -> tuple[GpuInfo, Any]:
        nv = self.nvml
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        pci = normalize_pci_bus_id(nv.nvmlDeviceGetPciInfo(handle).busId)
        where = f"GPU {index} ({pci})"
        numa = self.try_(getattr(nv, "nvmlDeviceGetNumaNodeId", _missing), handle)
        if numa is None or numa < 0:
            numa = _sysfs_numa_node(self.sys_root, pci)
        words = (os.cpu_count() or 1) // 64 + 1  # 64-bit words, with room for sparse CPU ids
        mask = self.try_(nv.nvmlDeviceGetCpuAffinity, handle, words)
        cpus = _mask_to_cpus(mask) if mask is not None else _sysfs_cpus(self.sys_root, pci)
        memory = self.try_(nv.nvmlDeviceGetMemoryInfo, handle, note=f"{where}: memory unknown")
        capability = self.try_(nv.nvmlDeviceGetCudaComputeCapability, handle)
        info = GpuInfo(
            index=index,
            pci_bus_id=pci,
            uuid=_text(nv.nvmlDeviceGetUUID(handle)),
            name=_text(nv.nvmlDeviceGetName(handle)),
            numa_node=numa,
            cpu_affinity=cpus,
            memory_total=int(memory.total) if memory is not None else None,
            compute_capability=tuple(capability) if capability is not None else None,
            nvlinks=self.nvlinks(handle),
            mig_devices=self.mig_devices(handle),
        )
        return info, handle

    def nvlinks(self, handle: Any) -> tuple[NvLink, ...]:
        nv = self.nvml
        links = []
        for link in range(int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))):
            try:
                active = nv.nvmlDeviceGetNvLinkState(handle, link)
            except nv.NVMLError:
                continue  # not supported, or past this GPU's link count
            if not active:
                continue
            remote = self.try_(nv.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
            get_kind = getattr(nv, "nvmlDeviceGetNvLinkRemoteDeviceType", _missing)
            kind = self.try_(get_kind, handle, link)
            bus = None
            if remote is not None:
                try:
                    bus = normalize_pci_bus_id(remote.busId)
                except ValueError:
                    bus = None
            links.append(NvLink(link, bus, _NVLINK_REMOTE_KINDS.get(kind)))
        return tuple(links)

    def mig_devices(self, handle: Any) -> tuple[str, ...]:
        nv = self.nvml
        mode = self.try_(nv.nvmlDeviceGetMigMode, handle)
        if not mode or mode[0] != getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1):
            return ()
        uuids = []
        for i in range(self.try_(nv.nvmlDeviceGetMaxMigDeviceCount, handle) or 0):
            mig = self.try_(nv.nvmlDeviceGetMigDeviceHandleByIndex, handle, i)
            uuid = self.try_(nv.nvmlDeviceGetUUID, mig) if mig is not None else None
            if uuid is not None:
                uuids.append(_text(uuid))
        return tuple(uuids)

    def p2p(self, handles: list[Any]) -> tuple[tuple[bool, ...], ...] | None:
        nv = self.nvml
        rows = []
        for i, hi in enumerate(handles):
            row = []
            for j, hj in enumerate(handles):
                if i == j:
                    row.append(True)
                    continue
                try:
                    status = nv.nvmlDeviceGetP2PStatus(hi, hj, _P2P_CAPS_INDEX_READ)
                except nv.NVMLError as exc:
                    self.notes.append(f"P2P matrix unknown: nvmlDeviceGetP2PStatus failed: {exc}")
                    return None
                row.append(status == _P2P_STATUS_OK)
            rows.append(tuple(row))
        return tuple(rows)


def _missing(*_args: Any) -> Any:
    """Stand-in for an NVML function this nvidia-ml-py lacks: behaves like 'not supported'."""
    return None


def _read_gpus(
    sys_root: Path, notes: list[str]
) -> tuple[tuple[GpuInfo, ...], tuple[tuple[bool, ...], ...] | None, str | None]:
    try:
        import pynvml
    except ImportError as exc:
        notes.append(f"no GPU information: nvidia-ml-py (pynvml) cannot be imported ({exc})")
        return (), None, None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        notes.append(f"no GPU information: NVML unavailable ({exc}); no NVIDIA driver here?")
        return (), None, None
    try:
        query = _Nvml(pynvml, sys_root, notes)
        driver = query.try_(pynvml.nvmlSystemGetDriverVersion)
        gpus, handles = [], []
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                info, handle = query.gpu(index)
            except pynvml.NVMLError as exc:  # e.g. a GPU fallen off the bus: skip it, say so
                notes.append(f"GPU {index} skipped: NVML could not describe it ({exc})")
                continue
            gpus.append(info)
            handles.append(handle)
        p2p = query.p2p(handles) if handles else None
        return tuple(gpus), p2p, _text(driver) if driver is not None else None
    except Exception as exc:  # never raise from local(): report what went wrong instead
        notes.append(f"GPU enumeration through NVML failed: {type(exc).__name__}: {exc}")
        return (), None, None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _traps(
    gpus: tuple[GpuInfo, ...], numa: tuple[NumaNode, ...], environ: Mapping[str, str]
) -> list[str]:
    found = []
    if len({g.name for g in gpus}) > 1 and environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        found.append(
            "GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA ordinals and "
            "integer CUDA_VISIBLE_DEVICES entries may not match NVML indices; "
            "set CUDA_DEVICE_ORDER=PCI_BUS_ID"
        )
    if gpus:
        _, problems = _resolve_visible(gpus, environ.get("CUDA_VISIBLE_DEVICES"))
        found.extend(problems)
    if sum(1 for n in numa if n.cpus) > 1:
        found.extend(
            f"GPU {g.index} ({g.pci_bus_id}): NUMA node unknown on a multi-NUMA host; "
            "CPU/memory pinning for it will be a guess"
            for g in gpus
            if g.numa_node is None
        )
    found.extend(
        f"GPU {g.index} ({g.pci_bus_id}) has MIG enabled; name its instances (MIG-...) in "
        "CUDA_VISIBLE_DEVICES to choose one per process"
        for g in gpus
        if g.mig_devices
    )
    return found


def local(
    *, sys_root: str | os.PathLike[str] = "/sys", environ: Mapping[str, str] | None = None
) -> HostTopology:
    """Describe this host: GPUs (through NVML), NUMA nodes, host name, primary IP.

    Never raises: without NVML or GPUs it returns a CPU-only description whose ``notes`` say
    why. ``sys_root`` and ``environ`` exist for tests (defaults: ``/sys``, ``os.environ``).
    """
    env = os.environ if environ is None else environ
    root = Path(sys_root)
    notes: list[str] = []
    try:
        hostname = socket.gethostname()
    except OSError:
        hostname = "localhost"
    numa = read_numa_nodes(root)
    gpus, p2p, driver = _read_gpus(root, notes)
    return HostTopology(
        hostname=hostname,
        primary_ip=primary_ip(),
        numa_nodes=numa,
        gpus=gpus,
        p2p=p2p,
        cuda_visible_devices=parse_cuda_visible_devices(env.get("CUDA_VISIBLE_DEVICES")),
        driver_version=driver,
        notes=tuple(notes),
        warnings=tuple(_traps(gpus, numa, env)),
    )


# --------------------------------------------------------------------------- choosing a GPU


def _match_entry(entry: str, gpus: tuple[GpuInfo, ...]) -> tuple[GpuInfo, str | None] | None:
    """Find the GPU (and MIG instance) one ``CUDA_VISIBLE_DEVICES`` entry names, or ``None``."""
    if entry.isdigit():
        index = int(entry)
        return next(((g, None) for g in gpus if g.index == index), None)
    lowered = entry.lower()
    if lowered.startswith("gpu-"):
        # CUDA accepts any unambiguous prefix of a GPU UUID.
        hits = [g for g in gpus if g.uuid.lower().startswith(lowered)]
        return (hits[0], None) if len(hits) == 1 else None
    if lowered.startswith("mig-gpu-"):
        # Legacy form: MIG-GPU-<gpu uuid>/<gpu instance>/<compute instance>.
        parent = lowered[len("mig-") :].split("/", 1)[0]
        hits = [g for g in gpus if g.uuid.lower() == parent]
        return (hits[0], entry) if len(hits) == 1 else None
    if lowered.startswith("mig-"):
        hits = [(g, m) for g in gpus for m in g.mig_devices if m.lower().startswith(lowered)]
        return hits[0] if len(hits) == 1 else None
    return None


def _resolve_visible(
    gpus: tuple[GpuInfo, ...], value: str | None
) -> tuple[list[VisibleGpu], list[str]]:
    entries = parse_cuda_visible_devices(value)
    if entries is None:
        return [VisibleGpu(i, g, str(g.index)) for i, g in enumerate(gpus)], []
    visible: list[VisibleGpu] = []
    seen: set[tuple[str, str | None]] = set()
    for entry in entries:
        match = _match_entry(entry, gpus)
        key = (match[0].uuid, match[1]) if match is not None else None
        if match is None or key in seen:
            why = "names no GPU of this host" if match is None else "repeats an earlier entry"
            return visible, [
                f"CUDA_VISIBLE_DEVICES={value!r}: entry {entry!r} {why}; CUDA ignores it and "
                f"every entry after it, so {len(visible)} GPU(s) are visible"
            ]
        seen.add(key)  # type: ignore[arg-type]
        visible.append(VisibleGpu(len(visible), match[0], entry, match[1]))
    return visible, []


def visible_gpus(topo: HostTopology, environ: Mapping[str, str] | None = None) -> list[VisibleGpu]:
    """List the GPUs CUDA will show this process, in CUDA ordinal order.

    Follows CUDA's reading of ``CUDA_VISIBLE_DEVICES`` (taken from ``environ``, default
    ``os.environ``, at call time): entries are NVML indices, GPU UUIDs or unambiguous UUID
    prefixes (``GPU-...``), or MIG instances (``MIG-...``); the first entry that names no GPU,
    or repeats one, hides itself and every entry after it. Unset means every GPU.
    """
    env = os.environ if environ is None else environ
    visible, _ = _resolve_visible(topo.gpus, env.get("CUDA_VISIBLE_DEVICES"))
    return visible


def gpu_for_local_rank(
    local_rank: int, topo: HostTopology, *, environ: Mapping[str, str] | None = None
) -> VisibleGpu:
    """Choose the GPU of the process with this local rank: CUDA ordinal ``local_rank``.

    One GPU per process: local rank ``r`` gets the ``r``-th visible GPU (see
    :func:`visible_gpus`). A launcher that already narrows ``CUDA_VISIBLE_DEVICES`` to one GPU
    per process should pass ``local_rank=0``. Raises :class:`~gpupart.BootstrapError` when
    fewer GPUs are visible than this rank needs.
    """
    if isinstance(local_rank, bool) or not isinstance(local_rank, int):
        raise TypeError(f"local_rank: expected an int, found {type(local_rank).__name__}")
    if local_rank < 0:
        raise ValueError(f"local_rank: expected an int >= 0, found {local_rank}")
    env = os.environ if environ is None else environ
    value = env.get("CUDA_VISIBLE_DEVICES")
    visible, problems = _resolve_visible(topo.gpus, value)
    if local_rank < len(visible):
        return visible[local_rank]
    shown = "unset" if value is None else repr(value)
    detail = f"; {problems[0]}" if problems else ""
    if not visible:
        raise BootstrapError(
            f"local rank {local_rank} on {topo.hostname} needs a GPU, but none is visible "
            f"(NVML found {len(topo.gpus)}, CUDA_VISIBLE_DEVICES {shown}{detail}). "
            "Run on a GPU host, fix CUDA_VISIBLE_DEVICES, or set GPUPART_DEVICE=cpu"
        )
    raise BootstrapError(
        f"local rank {local_rank} on {topo.hostname} needs its own GPU, but only {len(visible)} "
        f"GPU(s) are visible (CUDA_VISIBLE_DEVICES {shown}{detail}). Start at most "
        f"{len(visible)} process(es) on this host, or make more GPUs visible"
    )
