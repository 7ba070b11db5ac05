"""GPU binding by local rank and CPU pinning, with fake topologies (real GPUs: test_cluster_gpu)."""

from __future__ import annotations

import os

import pytest

from gpupart import BootstrapError, topology
from gpupart.backend import CudaProbe
from gpupart.job import binding
from gpupart.options import RuntimeOptions


def _gpu(index: int, cpus: tuple[int, ...]) -> topology.GpuInfo:
    return topology.GpuInfo(
        index=index,
        pci_bus_id=f"0000:{index + 1:02x}:00.0",
        uuid=f"GPU-{index:08d}-0000-0000-0000-000000000000",
        name="Fake GPU",
        numa_node=index // 2,
        cpu_affinity=cpus,
        memory_total=80 << 30,
    )


@pytest.fixture
def four_gpus() -> topology.HostTopology:
    return topology.HostTopology(
        hostname="node1",
        primary_ip="10.0.0.1",
        numa_nodes=(topology.NumaNode(0, (0, 1)), topology.NumaNode(1, (2, 3))),
        gpus=tuple(_gpu(i, (0, 1) if i < 2 else (2, 3)) for i in range(4)),
    )


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> list[set[int]]:
    calls: list[set[int]] = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: calls.append(set(cpus)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("GPUPART_DEVICE", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return calls


def _usable(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    reason = None if count else "CuPy cannot be imported"
    monkeypatch.setattr(binding.backends, "probe", lambda: CudaProbe(count, reason))


@pytest.mark.parametrize("local_rank", [0, 1, 2, 3])
def test_one_gpu_per_local_rank_and_cpus_of_its_numa_node(
    monkeypatch, four_gpus, pinned, local_rank
):
    _usable(monkeypatch, 4)
    ordinal, gpu = binding.bind_process(local_rank, four_gpus, RuntimeOptions())
    assert ordinal == local_rank
    assert gpu.index == local_rank
    assert pinned == [{0, 1} if local_rank < 2 else {2, 3}]


def test_a_single_visible_gpu_is_used_whatever_the_local_rank(monkeypatch, four_gpus, pinned):
    _usable(monkeypatch, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    ordinal, gpu = binding.bind_process(3, four_gpus, RuntimeOptions())
    assert ordinal == 0
    assert gpu.index == 2
    assert pinned == [{2, 3}]


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch, four_gpus, pinned):
    _usable(monkeypatch, 4)
    with pytest.raises(BootstrapError, match="local rank 5 on node1 needs its own GPU"):
        binding.bind_process(5, four_gpus, RuntimeOptions())


def test_cpu_device_binds_nothing(monkeypatch, four_gpus, pinned):
    _usable(monkeypatch, 4)
    assert binding.bind_process(0, four_gpus, RuntimeOptions(device="cpu")) == (None, None)
    assert pinned == []


def test_no_usable_gpu_falls_back_to_cpu_unless_cuda_was_asked_for(monkeypatch, four_gpus, pinned):
    _usable(monkeypatch, 0)
    assert binding.bind_process(0, four_gpus, RuntimeOptions()) == (None, None)
    with pytest.raises(BootstrapError, match="'cuda' was requested but CuPy cannot be imported"):
        binding.bind_process(0, four_gpus, RuntimeOptions(device="cuda"))


def test_pinning_can_be_turned_off_and_never_widens_the_allowed_cpus(
    monkeypatch, four_gpus, pinned
):
    _usable(monkeypatch, 4)
    binding.bind_process(2, four_gpus, RuntimeOptions(pin_cpus=False))
    assert pinned == []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # e.g. a cgroup limit
    binding.bind_process(2, four_gpus, RuntimeOptions())
    assert pinned == []  # GPU 2 is near CPUs 2-3, none allowed: leave the affinity alone


def test_location_numa_node_of_a_cpu_only_rank(monkeypatch, four_gpus):
    from gpupart import core as runtime

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3})
    assert runtime._numa_of_this_cpu(four_gpus) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 2})  # spans both nodes
    assert runtime._numa_of_this_cpu(four_gpus) is None
