"""The array API's device and inspection surface at one rank: ``device=``, ``to_device``, finfo.

Distribution does not change these (each rank answers for its own device), so one in-process
rank checks them; the standard's suite checks the signatures (docs/arrays.md, Conformance).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import gpupart

_LAUNCH_PREFIXES = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_")


@pytest.fixture
def rt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in list(os.environ):
        if name.startswith(_LAUNCH_PREFIXES):
            monkeypatch.delenv(name)
    runtime = gpupart.init(device="cpu")
    yield runtime
    runtime.close()


def test_creation_takes_this_ranks_device_and_refuses_another(rt):
    xp = gpupart.array_api
    here = xp.__array_namespace_info__().default_device()
    x = xp.zeros((3, 2), device=here)
    assert x.device == here
    np.testing.assert_array_equal(xp.arange(4, device=None).to_numpy(), np.arange(4))
    makers = {
        "empty": lambda d: xp.empty(3, device=d),
        "ones": lambda d: xp.ones(3, device=d),
        "full": lambda d: xp.full(3, 1.5, device=d),
        "arange": lambda d: xp.arange(3, device=d),
        "linspace": lambda d: xp.linspace(0, 1, 3, device=d),
        "eye": lambda d: xp.eye(2, device=d),
        "asarray": lambda d: xp.asarray(np.ones(3), device=d),
        "zeros_like": lambda d: xp.zeros_like(x, device=d),
        "to_device": lambda d: x.to_device(d),
    }
    for name, make in makers.items():
        assert make(here).device == here, name
        with pytest.raises(ValueError, match="device: expected None or") as err:
            make("cuda:7")
        assert "'cuda:7'" in str(err.value), name
    assert x.to_device(here) is x


def test_finfo_gives_python_floats_and_the_real_dtype(rt):
    xp = gpupart.array_api
    info = xp.finfo(xp.float32)
    assert isinstance(info.eps, float) and info.eps == float(np.finfo(np.float32).eps)
    assert info.bits == 32 and info.max == float(np.finfo(np.float32).max)
    assert xp.finfo(xp.complex128).dtype == np.float64
    assert xp.finfo(xp.ones(2, dtype=xp.float32)).dtype == np.float32
