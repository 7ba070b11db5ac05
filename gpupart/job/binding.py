"""Bind a rank to its GPU and to the CPUs of that GPU's NUMA node."""

from __future__ import annotations

import logging
import os
from typing import Any

from gpupart import backend as backends
from gpupart import topology
from gpupart.errors import BootstrapError

__all__ = ["bind_process"]

logger = logging.getLogger("gpupart.binding")


def bind_process(
    local_rank: int, topo: topology.HostTopology, options: Any
) -> tuple[int | None, topology.GpuInfo | None]:
    """Choose this rank's GPU by local rank and pin its CPUs; returns ``(ordinal, gpu)``.

    GPUs are identified by PCI bus id (``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is set unless the
    user chose otherwise) so CUDA ordinals agree with NVML. When ``CUDA_VISIBLE_DEVICES``
    already narrows the process to one GPU, that GPU is used whatever the local rank.
    Without a usable GPU, or with ``device='cpu'``, nothing is bound and ``(None, None)`` is
    returned. Must run before any CUDA context exists.
    """
    requested = (options.device or os.environ.get(backends.ENV_DEVICE, "")).strip() or "auto"
    if requested == "cpu":
        return None, None
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    usable = backends.probe()
    if usable.count == 0:
        if requested.startswith("cuda"):
            raise BootstrapError(f"device {requested!r} was requested but {usable.reason}")
        return None, None
    if not options.bind_gpu or usable.count == 1:
        ordinal = 0
    elif local_rank < usable.count:
        ordinal = local_rank
    else:
        raise BootstrapError(
            f"local rank {local_rank} on {topo.hostname} needs its own GPU, but only"
            f" {usable.count} are visible; start at most {usable.count} ranks per host or"
            " narrow CUDA_VISIBLE_DEVICES per rank"
        )
    visible = topology.visible_gpus(topo)
    gpu = visible[ordinal].gpu if ordinal < len(visible) else None
    if options.pin_cpus and gpu is not None and gpu.cpu_affinity:
        _pin_cpus(gpu)
    return ordinal, gpu


def _pin_cpus(gpu: topology.GpuInfo) -> None:
    allowed = os.sched_getaffinity(0)
    wanted = allowed & set(gpu.cpu_affinity)
    if not wanted:
        logger.info(
            "not pinning CPUs: GPU %s is near CPUs %s, none of which this process may use",
            gpu.pci_bus_id,
            list(gpu.cpu_affinity),
        )
        return
    if wanted != allowed:
        os.sched_setaffinity(0, wanted)
