"""Choosing the backend of this process: :func:`select`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from gpupart.backend import cuda as _cuda
from gpupart.backend.base import Backend
from gpupart.backend.host import HostBackend
from gpupart.errors import BootstrapError

__all__ = ["ENV_DEVICE", "select"]

#: The environment variable that forces a device kind: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
ENV_DEVICE = "GPUPART_DEVICE"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def _parse(value: str) -> tuple[str, int | None] | None:
    m = _DEVICE_RE.match(value.strip().lower())
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        return None
    return m.group(1), int(m.group(2)) if m.group(2) is not None else None


def select(
    device: str | None = None,
    *,
    device_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Backend:
    """Return a new backend: CUDA (CuPy/cuDF) when a GPU is usable, host (NumPy/pandas) if not.

    ``device`` is ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``; ``None`` reads
    ``GPUPART_DEVICE`` from ``environ`` (default ``os.environ``), unset meaning ``'auto'``.
    ``device_id`` is the CUDA ordinal used when the choice is CUDA and no ``:N`` is given
    (default 0); e.g. the one :func:`gpupart.topology.gpu_for_local_rank` picked.

    Nothing is cached: each call probes CUDA again and returns a new object.
    Raises :class:`ValueError` for a bad ``device`` argument, and
    :class:`~gpupart.BootstrapError` for a bad ``GPUPART_DEVICE``, when CUDA is asked for but
    not usable (CuPy missing, no GPU), or when GPUs are usable but ordinal ``N`` is not one.
    """
    env = os.environ if environ is None else environ
    if device is None:
        source = ENV_DEVICE
        raw = env.get(ENV_DEVICE, "").strip() or "auto"
    else:
        source = "device"
        raw = device
    parsed = _parse(raw) if isinstance(raw, str) else None
    if parsed is None:
        expected = "'auto', 'cpu', 'cuda' or 'cuda:N'"
        if source == ENV_DEVICE:
            raise BootstrapError(
                f"{ENV_DEVICE}={raw!r}: expected {expected}; fix or unset {ENV_DEVICE}"
            )
        raise ValueError(f"device: expected {expected}, found {raw!r}")
    kind, ordinal = parsed
    if ordinal is not None and device_id is not None and ordinal != device_id:
        raise ValueError(f"device {raw!r} contradicts device_id={device_id}")
    ordinal = ordinal if ordinal is not None else device_id if device_id is not None else 0

    if kind == "cpu":
        return HostBackend()
    found = _cuda.probe()
    if kind == "auto" and found.count == 0:
        return HostBackend()
    how = f"{ENV_DEVICE}={raw!r}" if source == ENV_DEVICE else f"device={raw!r}"
    if found.count == 0:
        raise BootstrapError(
            f"{how} asks for a CUDA GPU, but none is usable: {found.reason}. Install CuPy for "
            f"your CUDA (gpupart[cuda12]), check the driver and CUDA_VISIBLE_DEVICES, or set "
            f"{ENV_DEVICE}=cpu"
        )
    if ordinal >= found.count:
        raise BootstrapError(
            f"{how} asks for CUDA device {ordinal}, but this process sees {found.count} "
            f"(ordinals 0..{found.count - 1} after CUDA_VISIBLE_DEVICES)"
        )
    return _cuda.CudaBackend(ordinal)
