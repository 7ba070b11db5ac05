"""``gpupart info``: the report on this host (text and JSON), the traps it warns of, and the
default rank count of ``gpupart run`` (one per GPU, 1 on a CPU-only host)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from gpupart import info, topology
from gpupart.comm.ucx_info import UCXInfo, parse_resources, transport_modules
from gpupart.topology import GpuInfo, HostTopology, NumaNode, NvLink

PY = sys.executable

# --------------------------------------------------------------------------- this host


def _gpupart(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "gpupart", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_info_json_on_this_host():
    proc = _gpupart("info", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert tuple(report) == info.JSON_KEYS
    assert report["cpu_affinity"] == sorted(os.sched_getaffinity(0))
    assert report["numa_nodes"] and all("cpus" in n for n in report["numa_nodes"])
    ucx = report["ucx"]
    assert ucx["error"] is None
    assert ucx["version"].count(".") >= 1 and ucx["source"] in ("wheel", "system")
    assert os.path.isdir(ucx["directory"])
    assert "tcp/lo" in ucx["transports"]  # every UCX build has TCP, and every host loopback
    assert ucx["available"]["tcp"] and ucx["available"]["shared_memory"]
    assert set(ucx["available"]) == {
        "shared_memory",
        "cma",
        "cuda_copy",
        "cuda_ipc",
        "infiniband",
        "tcp",
    }
    visible = topology.visible_gpus(topology.local())
    assert report["default_nprocs"] == max(1, len(visible))
    if not report["gpus"]:  # this CPU machine: a CPU-only report that says why
        assert report["p2p"] is None and report["default_nprocs"] == 1
        assert any("no GPU information" in note for note in report["notes"])
    for gpu in report["gpus"]:
        assert {"pci_bus_id", "uuid", "numa_node", "memory_total", "nvlinks"} <= set(gpu)


def test_info_text_on_this_host():
    proc = _gpupart("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("gpupart ")
    for line in ("CPUs this process may use:", "transports active here:", "UCX_TLS:", "Slurm:"):
        assert line in out, out
    assert "gpupart run without -n starts" in out
    assert proc.stderr == ""


def test_info_never_echoes_the_job_secret():
    env = dict(os.environ, GPUPART_JOB_TOKEN="ab" * 32, UCX_TLS="tcp,self")
    proc = _gpupart("info", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["environment"]["GPUPART_JOB_TOKEN"] == "<set>"
    assert "ab" * 32 not in proc.stdout
    # UCX_TLS is honoured: shared memory is left out, and the report says so
    assert report["ucx"]["tls"] == "tcp,self"
    assert not report["ucx"]["available"]["shared_memory"]
    assert any("leaves out shared memory" in w for w in report["warnings"])


def test_run_without_n_starts_one_rank_per_gpu_or_one(tmp_path):
    script = "import os; print('size', os.environ['GPUPART_SIZE'], os.environ['GPUPART_RANK'])"
    proc = _gpupart("run", "--", PY, "-c", script)
    assert proc.returncode == 0, proc.stderr
    expected = max(1, len(topology.visible_gpus(topology.local())))
    lines = sorted(line for line in proc.stdout.splitlines() if "size" in line)
    assert lines == [f"[{r}] size {expected} {r}" for r in range(expected)]
    proc = _gpupart("run", "--cpu", "--", PY, "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if "size" in line] == ["[0] size 1 0"]


# --------------------------------------------------------------------------- a GPU host


def _gpu(index: int, *, numa: int, links: tuple[NvLink, ...] = ()) -> GpuInfo:
    return GpuInfo(
        index=index,
        pci_bus_id=f"0000:{0x1B + index:02x}:00.0",
        uuid=f"GPU-{index:08d}-0000-0000-0000-000000000000",
        name="NVIDIA H100 80GB HBM3",
        numa_node=numa,
        cpu_affinity=tuple(range(numa * 4, numa * 4 + 4)),
        memory_total=80 << 30,
        nvlinks=links,
    )


def gpu_host(p2p_ok: bool = True) -> HostTopology:
    """Four GPUs: 0-1 joined by two NVLinks, 2-3 through an NVSwitch; 0 and 3 maybe no P2P."""
    gpus = (
        _gpu(0, numa=0, links=(NvLink(0, "0000:1c:00.0", "gpu"), NvLink(1, "0000:1c:00.0", "gpu"))),
        _gpu(1, numa=0, links=(NvLink(0, "0000:1b:00.0", "gpu"),)),
        _gpu(2, numa=1, links=(NvLink(0, None, "switch"),)),
        _gpu(3, numa=1, links=(NvLink(0, None, "switch"),)),
    )
    p2p = tuple(tuple(p2p_ok or {i, j} != {0, 3} for j in range(4)) for i in range(4))
    return HostTopology(
        hostname="gpu01",
        primary_ip="10.0.0.1",
        numa_nodes=(NumaNode(0, (0, 1, 2, 3)), NumaNode(1, (4, 5, 6, 7))),
        gpus=gpus,
        p2p=p2p,
        driver_version="580.65",
    )


GPU_UCX = UCXInfo(
    version="1.19.0",
    directory="/opt/ucx/lib",
    source="system",
    modules=("cma", "cuda", "ib", "rdmacm"),
    transports=(
        "self/memory",
        "tcp/ib0",
        "posix/memory",
        "cma/memory",
        "cuda_copy/cuda",
        "cuda_ipc/cuda",
        "rc_mlx5/mlx5_0:1",
        "dc_mlx5/mlx5_0:1",
    ),
    cuda_support=True,
)
IB = (info.IbPort("mlx5_0", 1, "4: ACTIVE", "InfiniBand"),)
HOST_CONTAINER = info.ContainerInfo(None, info.HOST_IPC_NAMESPACE, False, 64 << 30)


def traps(topo=None, ucx=GPU_UCX, ib=IB, container=HOST_CONTAINER, env=None) -> list[str]:
    return info.find_traps(topo or gpu_host(), ucx, ib, container, env or {})


def test_a_well_configured_gpu_host_has_no_warnings():
    assert traps() == []


def test_render_a_gpu_host():
    report = info.HostReport(
        topology=gpu_host(p2p_ok=False),
        cpu_affinity=tuple(range(8)),
        infiniband=IB,
        ucx=GPU_UCX,
        container=HOST_CONTAINER,
        slurm={"SLURM_JOB_ID": "42"},
        environment={"UCX_TLS": "[weird]"},
        default_nprocs=4,
        warnings=tuple(traps(gpu_host(p2p_ok=False))),
    )
    out = io.StringIO()
    info.render_text(report, out)
    text = out.getvalue()
    rows = [line.split()[2:] for line in text.splitlines() if re.match(r"│ GPU\d", line)]
    cells = [[c for c in row if c != "│"] for row in rows]
    assert cells == [
        ["X", "NV2", "P2P", "-"],
        ["NV1", "X", "P2P", "P2P"],
        ["P2P", "P2P", "X", "NVSW"],
        ["-", "P2P", "NVSW", "X"],
    ]
    assert "0000:1b:00.0" in text and "GPU-00000003" in text and "80.0 GiB" in text
    assert "UCX 1.19.0 (system library, /opt/ucx/lib)" in text
    assert "rc_mlx5/mlx5_0:1" in text and "mlx5_0:1 4: ACTIVE (InfiniBand)" in text
    assert "UCX_TLS=[weird]" in text  # user text is not taken for rich markup
    assert "warning: no peer-to-peer access between GPUs 0-3" in text
    assert "starts 4 rank(s)" in text
    json.dumps(report.to_dict())


# --------------------------------------------------------------------------- the traps


SLURM = {
    "SLURM_JOB_ID": "42",
    "SLURM_STEP_ID": "0",
    "SLURM_NODEID": "1",
    "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
    "SLURM_GPUS_PER_TASK": "1",
}


@pytest.mark.parametrize(
    ("change", "warned"),
    [
        ({}, True),
        ({"SLURM_GPUS_PER_TASK": None, "SLURM_TRES_PER_TASK": "cpu=8,gres/gpu:1"}, True),
        ({"SLURM_STEP_TASKS_PER_NODE": None, "SLURM_NTASKS_PER_NODE": "8"}, True),
        ({"SLURM_STEP_TASKS_PER_NODE": "bad("}, True),  # unknown count: warn anyway
        ({"SLURM_GRES_FLAGS": "allow-task-sharing"}, False),
        ({"SLURM_STEP_TASKS_PER_NODE": "4,1"}, False),  # one task on node 1: no peer to reach
        ({"SLURM_GPUS_PER_TASK": None}, False),  # --gpus-per-node: every task sees every GPU
        ({"SLURM_JOB_ID": None}, False),
    ],
)
def test_slurm_gpus_per_task_isolation(change, warned):
    env = {k: v for k, v in {**SLURM, **change}.items() if v is not None}
    found = [w for w in traps(env=env) if "gpus-per-task" in w]
    assert bool(found) == warned
    if warned:
        assert "--gres-flags=allow-task-sharing" in found[0] and "23.11" in found[0]


def test_pip_wheel_without_infiniband_on_an_infiniband_host():
    wheel = UCXInfo(
        version="1.21.0",
        directory="/venv/libucx/lib",
        source="wheel",
        modules=("cma", "cuda"),
        transports=("posix/memory", "tcp/ib0", "cuda_copy/cuda", "cuda_ipc/cuda"),
    )
    (found,) = traps(ucx=wheel)
    assert "built without verbs" in found and "mlx5_0:1" in found
    assert "RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY=true" in found
    assert traps(ucx=wheel, ib=()) == []  # no InfiniBand here: nothing is missing
    asked = UCXInfo(**{**wheel.__dict__, "prefer_system": True})
    assert any("loader found no system UCX" in w for w in traps(ucx=asked, ib=()))


def test_expected_transports_not_active():
    no_rc = UCXInfo(**{**GPU_UCX.__dict__, "transports": GPU_UCX.transports[:6]})
    (found,) = traps(ucx=no_rc)
    assert "no rc/dc/ud transport is active" in found and "UCX_NET_DEVICES" in found
    down = (info.IbPort("mlx5_0", 1, "1: DOWN", "InfiniBand"),)
    assert traps(ib=down) == ["InfiniBand/RoCE ports not active: mlx5_0:1"]
    no_ipc = UCXInfo(**{**GPU_UCX.__dict__, "transports": (*GPU_UCX.transports[:5], "rc_mlx5/m:1")})
    (found,) = traps(ucx=no_ipc)
    assert "cuda_ipc is not active" in found
    no_cuda = UCXInfo(**{**GPU_UCX.__dict__, "transports": ("posix/memory", "rc_mlx5/m:1")})
    (found,) = traps(ucx=no_cuda)
    assert "cannot move GPU memory" in found and "ucxx-cu13" in found
    cpu_host = HostTopology(hostname="h", primary_ip="10.0.0.2", numa_nodes=())
    assert traps(topo=cpu_host, ucx=no_cuda) == []  # no GPU: no CUDA transport expected


def test_private_ipc_namespace_and_small_dev_shm():
    docker = info.ContainerInfo("docker", 4026532311, True, 64 << 20)
    found = traps(container=docker)
    assert len(found) == 2
    assert "private IPC namespace" in found[0] and "--ipc=host" in found[0]
    assert "/dev/shm holds only 64 MiB" in found[1]


def test_read_container(tmp_path):
    (tmp_path / ".dockerenv").touch()
    ns = tmp_path / "proc" / "self" / "ns"
    ns.mkdir(parents=True)
    (ns / "ipc").symlink_to("ipc:[4026532311]")
    found = info.read_container(root=tmp_path, proc_root=tmp_path / "proc", environ={})
    assert (found.runtime, found.ipc_namespace, found.private_ipc) == ("docker", 4026532311, True)
    (ns / "ipc").unlink()
    (ns / "ipc").symlink_to(f"ipc:[{info.HOST_IPC_NAMESPACE}]")
    env = {"APPTAINER_CONTAINER": "/img.sif"}
    found = info.read_container(root=tmp_path, proc_root=tmp_path / "proc", environ=env)
    assert (found.runtime, found.private_ipc) == ("apptainer", False)
    this = info.read_container()
    assert this.shm_bytes is None or this.shm_bytes > 0


def test_read_infiniband(tmp_path):
    for device, port, state, layer in [
        ("mlx5_0", 1, "4: ACTIVE", "InfiniBand"),
        ("mlx5_1", 1, "1: DOWN", "Ethernet"),
    ]:
        d = tmp_path / "class" / "infiniband" / device / "ports" / str(port)
        d.mkdir(parents=True)
        (d / "state").write_text(state + "\n")
        (d / "link_layer").write_text(layer + "\n")
    ports = info.read_infiniband(tmp_path)
    assert [(p.name, p.active, p.link_layer) for p in ports] == [
        ("mlx5_0:1", True, "InfiniBand"),
        ("mlx5_1:1", False, "Ethernet"),
    ]
    assert info.read_infiniband(tmp_path / "nothing") == ()


def test_parse_resources_and_modules(tmp_path):
    text = """#
#      resource 0  :  md 0  dev 0  flags -- self/memory
#      resource 1  :  md 1  dev 1  flags -- tcp/eth0
#      resource 7  :  md 5  dev 6  flags -- rc_mlx5/mlx5_0:1
#      resource 9  :  md 6  dev 7  flags -- cuda_ipc/cuda
"""
    resources = parse_resources(text)
    assert resources == ("self/memory", "tcp/eth0", "rc_mlx5/mlx5_0:1", "cuda_ipc/cuda")
    assert UCXInfo(transports=resources).available == {
        "shared_memory": False,
        "cma": False,
        "cuda_copy": False,
        "cuda_ipc": True,
        "infiniband": True,
        "tcp": True,
    }
    (tmp_path / "ucx").mkdir()
    for name in ("libuct_ib.so", "libuct_ib.so.0", "libuct_cma.so", "libucm_cuda.so", "x.txt"):
        (tmp_path / "ucx" / name).touch()
    assert transport_modules(tmp_path) == ("cma", "ib")
    assert transport_modules(tmp_path / "nothing") == ()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 4),
        ({"CUDA_VISIBLE_DEVICES": "1,2"}, 2),
        ({"CUDA_VISIBLE_DEVICES": ""}, 1),
        ({"GPUPART_DEVICE": "cpu"}, 1),
    ],
)
def test_default_nprocs(env, expected):
    assert info.default_nprocs(gpu_host(), env) == expected
    cpu_host = HostTopology(hostname="h", primary_ip="10.0.0.2", numa_nodes=())
    assert info.default_nprocs(cpu_host, env) == 1
