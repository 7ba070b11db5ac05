"""Importing gpupart is cheap: no GPU/UCX/NVML modules, no socket, no CUDA library loaded.

Each check runs in a fresh interpreter (this one has pytest's imports already) under an audit
hook that records socket and ``ctypes.dlopen`` events, and then reads ``/proc/self/maps``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("cupy", "cupyx", "cudf", "rmm", "ucxx", "ucp", "numba", "pynvml", "cuda", "torch")

PROBE = textwrap.dedent(
    """
    import json, os, sys

    events = []
    # site's .pth hooks (cuda-bindings, numba-cuda redirectors) may import modules at start-up:
    # only what the body adds counts.
    baseline = set(sys.modules)

    def hook(event, args):
        if event.startswith("socket."):
            events.append(event)
        elif event == "ctypes.dlopen" and args[0] is not None:
            # (None is the running program itself: ctypes opens it when imported, via numpy)
            events.append(f"ctypes.dlopen {args[0]}")

    sys.addaudithook(hook)

    # BODY

    heavy = sorted(
        name for name in set(sys.modules) - baseline if name.split(".")[0] in HEAVY
    )
    maps = ""
    if os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as f:
            maps = f.read()
    cuda_libs = sorted(
        {
            line.split()[-1]
            for line in maps.splitlines()
            if any(k in line for k in ("libcuda", "libnvidia-ml", "libcudart", "libucx", "libucp"))
        }
    )
    print(json.dumps({"heavy": heavy, "events": events, "cuda_libs": cuda_libs}))
    """
)

CASES = {
    "gpupart": "import gpupart\ngpupart.protocol\ngpupart.Location\ngpupart.__version__",
    "backend+topology": "import gpupart.backend\nimport gpupart.topology",
    "info": "import gpupart.info\nimport gpupart.comm.ucx_info",
}


def run_probe(body: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    code = PROBE.replace("# BODY", body).replace("in HEAVY", f"in {set(HEAVY)!r}")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_is_light(case):
    found = run_probe(CASES[case])
    assert found["heavy"] == [], f"{case} imported {found['heavy']}"
    assert found["events"] == [], f"{case} caused {found['events']}"
    assert found["cuda_libs"] == [], f"{case} loaded {found['cuda_libs']}"


def test_probe_sees_what_it_looks_for():
    """The probe itself works: a socket and an NVML import are caught."""
    found = run_probe(
        "import socket\nsocket.socket().close()\n"
        "try:\n    import pynvml\nexcept ImportError:\n    pass\n"
    )
    assert "socket.__new__" in found["events"]
    if "pynvml" in sys.modules or _importable("pynvml"):
        assert "pynvml" in found["heavy"]


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
