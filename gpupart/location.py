"""Where a tile lives: the spec's ``(ip, pid, device)`` extended with what RAPIDS needs.

The first three fields are the ``__partitioned__`` spec's location tuple, so a consumer that
reads ``loc[0]`` (IP), ``loc[1]`` (PID) or ``loc[2]`` (DLPack device string) keeps working.
gpupart adds host name, rank, PCI bus id, device UUID, NUMA node, memory kind and stream.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from gpupart.errors import PartitionedError, PartitionedTypeError

__all__ = ["DLPACK_DEVICE_TYPES", "MEMORY_KINDS", "Location", "dlpack_device_string"]

#: DLPack device type codes and the names used in the spec's device strings.
DLPACK_DEVICE_TYPES: dict[int, str] = {
    1: "kDLCPU",
    2: "kDLCUDA",
    3: "kDLCUDAHost",
    10: "kDLROCM",
    13: "kDLCUDAManaged",
    14: "kDLOneAPI",
}
_DEVICE_NAMES = frozenset(DLPACK_DEVICE_TYPES.values())
_DEVICE_RE = re.compile(r"^(kDL[A-Za-z]+)(?::(\d+))?$")

#: Memory kinds a location may report.
MEMORY_KINDS = frozenset({"device", "host", "pinned", "managed", "disk"})


def dlpack_device_string(device_type: int, device_id: int = 0) -> str:
    """Return the spec's device string for a DLPack ``(device_type, device_id)`` pair."""
    try:
        name = DLPACK_DEVICE_TYPES[int(device_type)]
    except KeyError:
        raise PartitionedError(
            "device_type",
            f"a DLPack device type in {sorted(DLPACK_DEVICE_TYPES)}",
            repr(device_type),
        ) from None
    return name if name == "kDLCPU" else f"{name}:{int(device_id)}"


def _check_device(device: Any, path: str) -> str:
    if not isinstance(device, str):
        raise PartitionedTypeError(path, "a DLPack device string such as 'kDLCUDA:0'", repr(device))
    m = _DEVICE_RE.match(device)
    if m is None or m.group(1) not in _DEVICE_NAMES:
        raise PartitionedError(
            path, f"a DLPack device string ({', '.join(sorted(_DEVICE_NAMES))}[:N])", repr(device)
        )
    return device


class Location(NamedTuple):
    """A place where a partition can be read without communication.

    Fields after the spec's first three default to ``None`` (unknown). ``stream`` is the
    integer ``cudaStream_t`` on which the tile may still be written (CUDA Array Interface v3
    meaning: ``None`` = nothing pending); it means something only inside process ``pid``.
    """

    ip: str | None
    pid: int | None
    device: str = "kDLCPU"
    host: str | None = None
    rank: int | None = None
    pci_bus_id: str | None = None
    device_uuid: str | None = None
    numa_node: int | None = None
    memory: str = "host"
    stream: int | None = None

    @classmethod
    def parse(cls, value: Any, *, path: str = "location") -> Location:
        """Normalise any location format met in the wild.

        Accepts a :class:`Location`, the spec's ``(ip, pid[, device])`` tuple, a rank ``int``
        (Heat) or an IP ``str`` (Modin). Raises :class:`~gpupart.PartitionedError` naming
        ``path`` otherwise.
        """
        if isinstance(value, Location):
            return value.checked(path=path)
        if isinstance(value, bool):
            raise PartitionedTypeError(
                path, "a rank int, an IP string or an (ip, pid[, device]) tuple", "a bool"
            )
        if isinstance(value, int):
            if value < 0:
                raise PartitionedError(path, "a rank >= 0", repr(value))
            return cls(ip=None, pid=None, rank=value)
        if isinstance(value, str):
            if not value:
                raise PartitionedError(path, "a non-empty IP or host string", "''")
            return cls(ip=value, pid=None)
        if isinstance(value, tuple):
            if not 2 <= len(value) <= 3:
                raise PartitionedError(
                    path, "an (ip, pid[, device]) tuple", f"a tuple of length {len(value)}"
                )
            ip, pid = value[0], value[1]
            if not isinstance(ip, str):
                raise PartitionedTypeError(f"{path}[0]", "an IP string", repr(ip))
            if isinstance(pid, bool) or not isinstance(pid, int):
                raise PartitionedTypeError(f"{path}[1]", "a process id int", repr(pid))
            device = _check_device(value[2], f"{path}[2]") if len(value) == 3 else "kDLCPU"
            memory = "host" if device in ("kDLCPU", "kDLCUDAHost") else "device"
            if device.startswith("kDLCUDAHost"):
                memory = "pinned"
            elif device.startswith("kDLCUDAManaged"):
                memory = "managed"
            return cls(ip=ip, pid=pid, device=device, memory=memory)
        raise PartitionedTypeError(
            path, "a rank int, an IP string or an (ip, pid[, device]) tuple", type(value).__name__
        )

    def checked(self, *, path: str = "location") -> Location:
        """Return ``self`` after checking every field's type and value."""
        if self.ip is not None and not isinstance(self.ip, str):
            raise PartitionedTypeError(f"{path}.ip", "a str or None", repr(self.ip))
        if self.pid is not None and (isinstance(self.pid, bool) or not isinstance(self.pid, int)):
            raise PartitionedTypeError(f"{path}.pid", "an int or None", repr(self.pid))
        _check_device(self.device, f"{path}.device")
        if self.rank is not None and (
            isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0
        ):
            raise PartitionedError(f"{path}.rank", "an int >= 0 or None", repr(self.rank))
        if self.memory not in MEMORY_KINDS:
            raise PartitionedError(
                f"{path}.memory", f"one of {sorted(MEMORY_KINDS)}", repr(self.memory)
            )
        if self.stream is not None and (
            isinstance(self.stream, bool) or not isinstance(self.stream, int) or self.stream == 0
        ):
            raise PartitionedError(
                f"{path}.stream", "an int cudaStream_t other than 0, or None", repr(self.stream)
            )
        return self

    @property
    def spec(self) -> tuple[str | None, int | None, str]:
        """The spec's three-field ``(ip, pid, device)`` form."""
        return (self.ip, self.pid, self.device)

    @property
    def is_cuda(self) -> bool:
        """True if the data sits in CUDA device or managed memory."""
        return self.device.startswith(("kDLCUDA:", "kDLCUDAManaged"))

    def same_process(self, other: Location) -> bool:
        """Tell whether both locations name one process (same rank, or same IP and PID)."""
        if self.rank is not None and other.rank is not None:
            hosts = (self.host, other.host)
            return self.rank == other.rank and (None in hosts or hosts[0] == hosts[1])
        return self.pid is not None and (self.ip, self.pid) == (other.ip, other.pid)
