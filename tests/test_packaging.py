"""Packaging promises: kernels importable as gpupart.kernels, CLI entry points, version."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import gpupart


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
