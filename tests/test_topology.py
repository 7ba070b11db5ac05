"""gpupart.topology: host description (real and with a fake NVML), parsing, GPU choice."""

from __future__ import annotations

import ipaddress
import json
import pickle
import socket
import sys
import types

import pytest

from gpupart import BootstrapError, topology
from gpupart.topology import GpuInfo, HostTopology, NumaNode, NvLink

# --------------------------------------------------------------------------- a fake NVML

_ERRORS = {1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported", 12: "Library Not Found"}


class FakeNVMLError(Exception):
    def __init__(self, value: int = 3) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _ERRORS.get(self.value, f"error {self.value}")


def fake_nvml(gpus: list[dict], *, init_error: int | None = None, p2p: bool = True):
    """A stand-in for the pynvml module, describing ``gpus`` (dicts of GpuInfo-ish fields)."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = FakeNVMLError
    nv.NVML_NVLINK_MAX_LINKS = 6
    nv.NVML_DEVICE_MIG_ENABLE = 1
    nv.calls = []

    def gpu(handle):
        return gpus[handle[1]]

    def init():
        nv.calls.append("init")
        if init_error is not None:
            raise FakeNVMLError(init_error)

    def numa(handle):
        value = gpu(handle).get("numa")
        if value is None:
            raise FakeNVMLError(3)
        return value

    def affinity(handle, words):
        assert isinstance(words, int) and words >= 1
        cpus = gpu(handle).get("cpus")
        if cpus is None:
            raise FakeNVMLError(3)
        mask = [0] * max(words, 2)
        for c in cpus:
            mask[c // 64] |= 1 << (c % 64)
        return mask

    def link_state(handle, link):
        links = gpu(handle).get("links", {})
        if not links:
            raise FakeNVMLError(3)
        if link >= 4:
            raise FakeNVMLError(2)
        return 1 if link in links else 0

    def p2p_status(h1, h2, index):
        assert isinstance(index, int), "P2P caps index must be an int"
        if not p2p:
            raise FakeNVMLError(3)
        return 0 if {h1[1], h2[1]} != {0, 2} else 4  # GPUs 0 and 2 cannot talk

    def mig_mode(handle):
        if "migs" not in gpu(handle):
            raise FakeNVMLError(3)
        return (1, 1)

    def uuid(handle):
        if handle[0] == "mig":
            return gpus[handle[1]]["migs"][handle[2]]
        return gpu(handle)["uuid"]

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: nv.calls.append("shutdown")
    nv.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    nv.nvmlDeviceGetCount = lambda: len(gpus)
    nv.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    nv.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=gpu(h)["bus"])
    nv.nvmlDeviceGetUUID = uuid
    nv.nvmlDeviceGetName = lambda h: gpu(h).get("name", "NVIDIA H100 80GB HBM3")
    nv.nvmlDeviceGetNumaNodeId = numa
    nv.nvmlDeviceGetCpuAffinity = affinity
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=85_520_809_984)
    nv.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    nv.nvmlDeviceGetNvLinkState = link_state
    nv.nvmlDeviceGetNvLinkRemotePciInfo = lambda h, link: types.SimpleNamespace(
        busId=gpu(h)["links"][link]
    )
    nv.nvmlDeviceGetNvLinkRemoteDeviceType = lambda h, link: 2
    nv.nvmlDeviceGetP2PStatus = p2p_status
    nv.nvmlDeviceGetMigMode = mig_mode
    nv.nvmlDeviceGetMaxMigDeviceCount = lambda h: len(gpu(h)["migs"]) + 1
    nv.nvmlDeviceGetMigDeviceHandleByIndex = lambda h, i: (
        ("mig", h[1], i) if i < len(gpu(h)["migs"]) else (_ for _ in ()).throw(FakeNVMLError(6))
    )
    return nv


FOUR_GPUS = [
    {
        "bus": b"00000000:1B:00.0",
        "uuid": "GPU-aaaa1111-0000-0000-0000-000000000000",
        "numa": 0,
        "cpus": [0, 1, 2, 3],
        "links": {0: "00000000:C1:00.0", 1: "00000000:C2:00.0"},
    },
    {
        "bus": "00000000:3B:00.0",
        "uuid": "GPU-aaaa2222-0000-0000-0000-000000000000",
        "numa": None,  # NVML cannot tell: sysfs is asked
        "cpus": None,
    },
    {
        "bus": "00000000:9B:00.0",
        "uuid": "GPU-bbbb3333-0000-0000-0000-000000000000",
        "numa": 1,
        "cpus": [64, 65],
        "migs": ["MIG-11111111-2222-3333-4444-555555555555"],
    },
    {
        "bus": "00000000:BB:00.0",
        "uuid": "GPU-cccc4444-0000-0000-0000-000000000000",
        "numa": 1,
        "cpus": [64, 65],
    },
]


def fake_sysfs(root, nodes: dict[int, str], pci: dict[str, tuple[str, str]] | None = None):
    for node, cpulist in nodes.items():
        d = root / "devices" / "system" / "node" / f"node{node}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpulist + "\n")
    (root / "devices" / "system" / "node" / "possible").write_text("0-1\n")
    for bus, (numa, cpus) in (pci or {}).items():
        d = root / "bus" / "pci" / "devices" / bus
        d.mkdir(parents=True)
        (d / "numa_node").write_text(numa + "\n")
        (d / "local_cpulist").write_text(cpus + "\n")
    return root


@pytest.fixture
def sysfs(tmp_path):
    return fake_sysfs(tmp_path, {0: "0-63", 1: "64-127"}, {"0000:3b:00.0": ("0", "0-3,8")})


@pytest.fixture
def nvml4(monkeypatch):
    nv = fake_nvml(FOUR_GPUS)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    return nv


# --------------------------------------------------------------------------- this host


def test_local_on_this_host_never_raises_and_serialises():
    topo = topology.local()
    assert isinstance(topo, HostTopology)
    assert topo.hostname
    ipaddress.ip_address(topo.primary_ip)
    assert topo.numa_nodes and all(isinstance(n, NumaNode) for n in topo.numa_nodes)
    assert any(n.cpus for n in topo.numa_nodes)
    d = topo.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) >= {"hostname", "primary_ip", "numa_nodes", "gpus", "p2p", "notes"}
    if not topo.gpus:  # a CPU host: it says why
        assert topo.notes and topo.p2p is None and not topo.has_gpus
    assert pickle.loads(pickle.dumps(topo)) == topo


def test_local_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    topo = topology.local(environ={})
    assert topo.gpus == () and topo.p2p is None
    assert any("nvidia-ml-py" in n for n in topo.notes)


def test_local_when_nvml_library_missing(monkeypatch):
    nv = fake_nvml(FOUR_GPUS, init_error=12)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    topo = topology.local(environ={})
    assert topo.gpus == ()
    assert any("NVML unavailable" in n and "Library Not Found" in n for n in topo.notes)


def test_local_never_raises_on_unexpected_nvml_failure(monkeypatch):
    nv = fake_nvml(FOUR_GPUS)
    nv.nvmlDeviceGetCount = lambda: 1 / 0
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    topo = topology.local(environ={})
    assert topo.gpus == ()
    assert any("ZeroDivisionError" in n for n in topo.notes)
    assert nv.calls == ["init", "shutdown"]


# --------------------------------------------------------------------------- with a fake NVML


def test_local_with_fake_nvml(nvml4, sysfs):
    env = {"CUDA_VISIBLE_DEVICES": "2,0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    topo = topology.local(sys_root=sysfs, environ=env)
    assert nvml4.calls == ["init", "shutdown"]
    assert [g.pci_bus_id for g in topo.gpus] == [
        "0000:1b:00.0",
        "0000:3b:00.0",
        "0000:9b:00.0",
        "0000:bb:00.0",
    ]
    g0, g1, g2, _ = topo.gpus
    assert (g0.index, g0.numa_node, g0.cpu_affinity) == (0, 0, (0, 1, 2, 3))
    assert g0.memory_total == 85_520_809_984 and g0.compute_capability == (9, 0)
    assert g0.nvlinks == (
        NvLink(0, "0000:c1:00.0", "switch"),
        NvLink(1, "0000:c2:00.0", "switch"),
    )
    assert (g1.numa_node, g1.cpu_affinity) == (0, (0, 1, 2, 3, 8))  # from sysfs
    assert g2.cpu_affinity == (64, 65) and g2.mig_devices == (FOUR_GPUS[2]["migs"][0],)
    assert topo.driver_version == "550.54.15"
    assert topo.p2p is not None and len(topo.p2p) == 4
    assert all(topo.p2p[i][i] for i in range(4))
    assert topo.p2p[0][2] is False and topo.p2p[2][0] is False and topo.p2p[0][1] is True
    assert topo.cuda_visible_devices == ("2", "0")
    assert [n.id for n in topo.numa_nodes] == [0, 1]
    assert any("MIG" in w for w in topo.warnings)
    d = topo.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["gpus"][0]["nvlinks"][0] == {
        "link": 0,
        "remote_pci_bus_id": "0000:c1:00.0",
        "remote_kind": "switch",
    }


def test_p2p_unknown_when_nvml_cannot_tell(monkeypatch, sysfs):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(FOUR_GPUS, p2p=False))
    topo = topology.local(sys_root=sysfs, environ={})
    assert len(topo.gpus) == 4 and topo.p2p is None
    assert any("P2P" in n for n in topo.notes)


def test_a_gpu_nvml_cannot_describe_is_skipped(monkeypatch, sysfs):
    nv = fake_nvml(FOUR_GPUS)
    real = nv.nvmlDeviceGetUUID
    nv.nvmlDeviceGetUUID = lambda h: (
        (_ for _ in ()).throw(FakeNVMLError(15))
        if h
        == (
            "gpu",
            1,
        )
        else real(h)
    )
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    topo = topology.local(sys_root=sysfs, environ={})
    assert [g.index for g in topo.gpus] == [0, 2, 3]
    assert any("GPU 1 skipped" in n for n in topo.notes)
    assert topo.p2p is not None and len(topo.p2p) == 3


def test_warnings_for_known_traps(monkeypatch, sysfs):
    gpus = [dict(FOUR_GPUS[0], name="NVIDIA A100"), dict(FOUR_GPUS[3])]
    gpus[1]["numa"] = None
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(gpus))
    topo = topology.local(sys_root=sysfs, environ={"CUDA_VISIBLE_DEVICES": "0,7,1"})
    text = "\n".join(topo.warnings)
    assert "CUDA_DEVICE_ORDER" in text
    assert "'7'" in text and "1 GPU(s) are visible" in text
    assert "NUMA node unknown" in text


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-3,8,10-11", [0, 1, 2, 3, 8, 10, 11]),
        ("5", [5]),
        ("0-1\n", [0, 1]),
        ("", []),
        ("  \n", []),
        ("3,1,1-2", [1, 2, 3]),
    ],
)
def test_parse_cpulist(text, expected):
    assert topology.parse_cpulist(text) == expected


@pytest.mark.parametrize("text", ["a", "1-", "3-1", "0-3:2", "1;2"])
def test_parse_cpulist_rejects_garbage(text):
    with pytest.raises(ValueError, match="CPU list"):
        topology.parse_cpulist(text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),
        ("0000:3b:00.0", "0000:3b:00.0"),
        (b"00000000:1B:00.0\x00", "0000:1b:00.0"),
        ("3b:00.0", "0000:3b:00.0"),
        ("0001:C1:1F.7", "0001:c1:1f.7"),
        ("00010000:01:00.0", "10000:01:00.0"),
        (" 0000:3b:00.0\n", "0000:3b:00.0"),
    ],
)
def test_normalize_pci_bus_id(raw, expected):
    assert topology.normalize_pci_bus_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "GPU-0", "0000:3b:00", "0000:3b:00.8", "zz:00.0"])
def test_normalize_pci_bus_id_rejects_garbage(raw):
    with pytest.raises(ValueError, match="PCI bus id"):
        topology.normalize_pci_bus_id(raw)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", ()), (" ", ()), ("0,1", ("0", "1")), (" 2 , GPU-ab", ("2", "GPU-ab"))],
)
def test_parse_cuda_visible_devices(value, expected):
    assert topology.parse_cuda_visible_devices(value) == expected


def test_read_numa_nodes_from_sysfs(tmp_path):
    root = fake_sysfs(tmp_path, {1: "4-7", 0: "0-3", 2: ""})
    assert topology.read_numa_nodes(root) == (
        NumaNode(0, (0, 1, 2, 3)),
        NumaNode(1, (4, 5, 6, 7)),
        NumaNode(2, ()),  # a memory-only node (GPU or CXL memory)
    )


def test_read_numa_nodes_falls_back_to_one_node(tmp_path):
    (node,) = topology.read_numa_nodes(tmp_path / "missing")
    assert node.id == 0 and node.cpus and set(node.cpus) <= set(range(4096))


def test_primary_ip_falls_back_to_loopback(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "socket", refuse)
    assert topology.primary_ip() == "127.0.0.1"


def test_primary_ip_never_listens(monkeypatch):
    real = socket.socket
    calls = []

    class Spy(real):
        def bind(self, *a):
            calls.append("bind")
            return super().bind(*a)

        def listen(self, *a):
            calls.append("listen")
            return super().listen(*a)

        def sendto(self, *a):
            calls.append("sendto")
            return super().sendto(*a)

    monkeypatch.setattr(socket, "socket", Spy)
    ipaddress.ip_address(topology.primary_ip())
    assert calls == []


# --------------------------------------------------------------------------- choosing a GPU


def make_topo(n: int = 4, *, migs: bool = True) -> HostTopology:
    gpus = tuple(
        GpuInfo(
            index=i,
            pci_bus_id=topology.normalize_pci_bus_id(g["bus"]),
            uuid=g["uuid"],
            name="NVIDIA H100",
            numa_node=g["numa"],
            cpu_affinity=tuple(g["cpus"] or ()),
            memory_total=80 << 30,
            mig_devices=tuple(g.get("migs", ())) if migs else (),
        )
        for i, g in enumerate(FOUR_GPUS[:n])
    )
    return HostTopology(
        hostname="node7", primary_ip="10.0.0.7", numa_nodes=(NumaNode(0, (0, 1)),), gpus=gpus
    )


def test_gpu_for_local_rank_without_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    topo = make_topo()
    for rank in range(4):
        choice = topology.gpu_for_local_rank(rank, topo)
        assert (choice.ordinal, choice.gpu.index, choice.visible_id) == (rank, rank, str(rank))
        assert choice.mig_uuid is None
    assert json.loads(json.dumps(choice.to_dict()))["gpu"]["index"] == 3
    ordinal, gpu = choice
    assert (ordinal, gpu) == (3, topo.gpus[3])


@pytest.mark.parametrize(
    ("cvd", "rank", "gpu_index", "mig"),
    [
        ("2,3", 0, 2, None),
        ("2,3", 1, 3, None),
        ("3", 0, 3, None),
        ("GPU-cccc4444-0000-0000-0000-000000000000,GPU-aaaa1111", 1, 0, None),
        ("gpu-bbbb", 0, 2, None),  # an unambiguous UUID prefix, any case
        ("MIG-11111111-2222-3333-4444-555555555555", 0, 2, "MIG-11111111"),
        ("MIG-GPU-bbbb3333-0000-0000-0000-000000000000/1/0", 0, 2, "MIG-GPU-bbbb3333"),
        (" 1 , 0 ", 1, 0, None),
    ],
)
def test_gpu_for_local_rank_honours_cuda_visible_devices(monkeypatch, cvd, rank, gpu_index, mig):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
    choice = topology.gpu_for_local_rank(rank, make_topo())
    assert choice.ordinal == rank and choice.gpu.index == gpu_index
    assert (choice.mig_uuid or "").startswith(mig or "")
    assert (choice.mig_uuid is None) == (mig is None)


@pytest.mark.parametrize(
    ("cvd", "visible"),
    [
        ("0,9,1", 1),  # CUDA stops at the first entry that names no GPU
        ("0,GPU-aaaa,1", 1),  # an ambiguous prefix names no GPU
        ("1,1,2", 1),  # a repeat stops too
        ("-1", 0),
        ("", 0),
        ("NoDevFiles", 0),
    ],
)
def test_visible_gpus_follows_cuda_truncation(cvd, visible):
    gpus = topology.visible_gpus(make_topo(), {"CUDA_VISIBLE_DEVICES": cvd})
    assert len(gpus) == visible
    assert [g.ordinal for g in gpus] == list(range(visible))


def test_too_few_gpus_is_a_bootstrap_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(BootstrapError, match=r"local rank 2 .*only 2 GPU\(s\)") as info:
        topology.gpu_for_local_rank(2, make_topo())
    assert "'0,1'" in str(info.value) and "node7" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is BootstrapError and str(again) == str(info.value)


def test_no_visible_gpu_is_a_bootstrap_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BootstrapError, match=r"none is visible.*GPUPART_DEVICE=cpu"):
        topology.gpu_for_local_rank(0, make_topo())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    cpu_only = HostTopology(hostname="h", primary_ip="127.0.0.1", numa_nodes=())
    with pytest.raises(BootstrapError, match="NVML found 0"):
        topology.gpu_for_local_rank(0, cpu_only)


def test_bad_cuda_visible_devices_entry_is_named(monkeypatch):
    with pytest.raises(BootstrapError, match="entry '9' names no GPU"):
        topology.gpu_for_local_rank(1, make_topo(), environ={"CUDA_VISIBLE_DEVICES": "0,9"})


def test_gpu_for_local_rank_checks_its_argument():
    with pytest.raises(ValueError, match="local_rank"):
        topology.gpu_for_local_rank(-1, make_topo())
    with pytest.raises(TypeError, match="local_rank"):
        topology.gpu_for_local_rank(True, make_topo())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="local_rank"):
        topology.gpu_for_local_rank("0", make_topo())  # type: ignore[arg-type]
