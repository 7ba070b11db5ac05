"""Packaging promises: kernels importable as gpupart.kernels, CLI entry points, version."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import gpupart

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_importable_as_gpupart_kernels() -> None:
    import gpupart.kernels as kernels

    assert kernels.__file__.replace("\\", "/").endswith("kernels/__init__.py")
    assert "numba" not in sys.modules or "numba.cuda" not in sys.modules


def test_version_matches_distribution() -> None:
    assert importlib.metadata.version("gpupart") == gpupart.__version__


def test_python_dash_m_gpupart_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gpupart", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "-n" in proc.stdout


def test_lazy_public_names_resolve() -> None:
    assert callable(gpupart.init)
    assert callable(gpupart.runtime)
    assert gpupart.Runtime.__name__ == "Runtime"
    assert gpupart.Handle.__name__ == "Handle"
    assert gpupart.protocol.validate is not None


def _names(requirements: list[str]) -> dict[str, str]:
    """Project name -> requirement, for PEP 508 strings (name normalised, extras dropped)."""
    out = {}
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        out[re.sub(r"[-_.]+", "-", name).lower()] = requirement
    return out


def test_numba_cuda_only_in_the_cuda_extras() -> None:
    """The CPU install needs plain numba only; both CUDA extras bring numba-cuda, bounded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = _names(project["dependencies"])
    assert "numba-cuda" not in base
    assert "numba" in base  # the host kernels
    for extra in ("cuda12", "cuda13"):
        requirement = _names(project["optional-dependencies"][extra]).get("numba-cuda")
        assert requirement is not None, f"{extra} lacks numba-cuda"
        assert ">=" in requirement, f"{extra}: {requirement!r} has no lower bound"
