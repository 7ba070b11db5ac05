"""One UCX per process under MPI: mpi4py imported first or last, and a clear error on a clash."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gpupart
from gpupart.comm import ucx_library

_RANK_SCRIPT = """
import json, os, sys
order, out = sys.argv[1], sys.argv[2]
if order == "clash":  # a second UCX, as an MPI wheel's own copy would be, loaded first
    import ctypes
    for name in ("libucs.so.0", "libuct.so.0", "libucp.so.0"):
        ctypes.CDLL(os.path.join(sys.argv[3], name), mode=ctypes.RTLD_GLOBAL)
if order in ("mpi4py_first", "clash"):
    from mpi4py import MPI
import numpy as np
import gpupart
from gpupart.comm.ucx_library import loaded_ucx
try:
    rt = gpupart.init()
except gpupart.UCXLibraryError as exc:
    from mpi4py import MPI
    row = {"rank": MPI.COMM_WORLD.Get_rank(), "error": type(exc).__name__, "text": str(exc)}
else:
    from mpi4py import MPI
    with rt:
        handles = rt.allgather(rt.put(np.arange(1000, dtype=np.int64) * (rt.rank + 1)))
        peer = (rt.rank + 1) % rt.size
        got = rt.get([handles[peer]])[0]
        total = rt.allreduce(np.array([rt.rank + 1.0]), op="sum")
        row = {
            "rank": rt.rank, "mpi_rank": MPI.COMM_WORLD.Get_rank(), "size": rt.size,
            "got_ok": bool((got == np.arange(1000) * (peer + 1)).all()),
            "total": float(np.asarray(total).sum()),
            "ucx": [str(copy.directory) for copy in loaded_ucx()],
        }
with open(os.path.join(out, f"rank{row['rank']}.json"), "w") as f:
    json.dump(row, f)
"""


def _mpiexec() -> str:
    pytest.importorskip("mpi4py")
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec next to the Python interpreter or on PATH")
    return found


def _run(tmp_path: Path, n: int, order: str, *extra: str) -> list[dict]:
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(_RANK_SCRIPT))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_"))
    }
    proc = subprocess.run(
        [_mpiexec(), "-n", str(n), sys.executable, str(script), order, str(tmp_path), *extra],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
    )
    rows = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert len(rows) == n, proc.stdout + proc.stderr
    return sorted(rows, key=lambda row: row["rank"])


@pytest.mark.multiprocess
@pytest.mark.parametrize("order", ["mpi4py_first", "gpupart_first"])
@pytest.mark.parametrize("n", [2, 3])
def test_runtime_under_mpiexec_with_mpi4py_imported_first_or_last(tmp_path, n, order):
    rows = _run(tmp_path, n, order)
    wheel = ucx_library.wheel_ucx()
    for rank, row in enumerate(rows):
        assert "error" not in row, row
        assert (row["rank"], row["mpi_rank"], row["size"]) == (rank, rank, n)
        assert row["got_ok"]
        assert row["total"] == n * (n + 1) / 2
        assert len(row["ucx"]) == 1, row["ucx"]  # one UCX in the process
        if wheel is not None:
            assert Path(row["ucx"][0]).resolve() == wheel.directory


@pytest.mark.multiprocess
def test_a_second_ucx_loaded_first_is_a_clear_error_on_every_rank(tmp_path):
    wheel = ucx_library.wheel_ucx()
    if wheel is None:
        pytest.skip("ucxx uses a system UCX here: there is no wheel copy to clash with")
    other = tmp_path / "other-ucx"
    shutil.copytree(wheel.directory, other, symlinks=True)
    out = tmp_path / "out"
    out.mkdir()
    rows = _run(out, 2, "clash", str(other))
    for row in rows:
        assert row["error"] == "UCXLibraryError", row
        assert str(other) in row["text"] and str(wheel.directory) in row["text"]
        assert "LD_LIBRARY_PATH" in row["text"] and "mpich" in row["text"].lower()


def test_loaded_ucx_reads_each_copy_once_per_directory(tmp_path):
    maps = tmp_path / "maps"
    lines = [
        "7f00-7f01 r-xp 00000000 103:01 1 /opt/mpi/lib/mpich/libucs.so.0",
        "7f01-7f02 r--p 00001000 103:01 1 /opt/mpi/lib/mpich/libucs.so.0",
        "7f02-7f03 r-xp 00000000 103:01 2 /opt/mpi/lib/mpich/libucp.so.0",
        "7f03-7f04 r-xp 00000000 103:01 3 /x/nixl_cu13.libs/libucs-2be8eb38.so.0.0.0",
        "7f04-7f05 r-xp 00000000 103:01 4 /opt/mpi/lib/mpich/ucx/libuct_cma.so.0",
        "7f05-7f06 r-xp 00000000 103:01 5 /usr/lib/libucsomething.so",
        "7f06-7f07 r-xp 00000000 103:01 6 /usr/lib/libc.so.6",
    ]
    maps.write_text("\n".join(lines) + "\n")
    copies = ucx_library.loaded_ucx(str(maps))
    assert [str(c.directory) for c in copies] == ["/opt/mpi/lib/mpich", "/x/nixl_cu13.libs"]
    assert copies[0].source == "the MPICH wheel"
    assert copies[0].version == "?"  # not loaded in this process: never loaded to ask
    assert ucx_library.loaded_ucx(str(tmp_path / "missing")) == []


def test_check_before_load_refuses_a_foreign_copy(monkeypatch):
    wheel = ucx_library.wheel_ucx()
    if wheel is None:
        pytest.skip("ucxx uses a system UCX here")
    foreign = ucx_library.LoadedUCX(Path("/opt/mpi/lib/mpich"), "1.20.1", "the MPICH wheel")
    monkeypatch.delenv("RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY", raising=False)
    monkeypatch.setattr(ucx_library, "loaded_ucx", lambda: [wheel, foreign])
    with pytest.raises(gpupart.UCXLibraryError) as info:
        ucx_library.check_before_load()
    assert "/opt/mpi/lib/mpich" in str(info.value) and "1.20.1" in str(info.value)
    assert info.value.wanted == str(wheel)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is gpupart.UCXLibraryError and str(again) == str(info.value)
    monkeypatch.setattr(ucx_library, "loaded_ucx", lambda: [wheel])
    ucx_library.check_before_load()  # its own copy is no clash
    monkeypatch.setenv("RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY", "true")
    monkeypatch.setattr(ucx_library, "loaded_ucx", lambda: [foreign])
    ucx_library.check_before_load()  # shared system UCX asked for: judged after loading


def test_check_after_load_refuses_two_copies(monkeypatch):
    one = ucx_library.LoadedUCX(Path("/a"), "1.21.0", "x")
    two = ucx_library.LoadedUCX(Path("/b"), "1.20.1", "y")
    monkeypatch.setattr(ucx_library, "loaded_ucx", lambda: [one, two])
    with pytest.raises(gpupart.UCXLibraryError, match=r"1\.20\.1 in /b"):
        ucx_library.check_after_load()
    monkeypatch.setattr(ucx_library, "loaded_ucx", lambda: [one])
    ucx_library.check_after_load()
