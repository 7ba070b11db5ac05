"""What UCX this process would use: library, version, transport modules built, transports active.

:func:`describe_ucx` answers the questions ``ucx_info -v`` and ``ucx_info -d`` answer,
without that tool (not every libucx wheel ships it): it imports ucxx the way the transport
does (:func:`gpupart.comm.ucx._import_ucxx`, leaving ``os.environ`` as it was), creates one
UCP context with this environment's ``UCX_*`` settings (``UCX_TLS`` included) and reads

* the UCX copy now mapped into the process (:func:`gpupart.comm.ucx_library.loaded_ucx`):
  its directory and version, and whether it is the pip wheel's or a system library
  (``RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY=true`` makes ucxx prefer a system UCX);
* the transport modules that UCX was built with: the ``libuct_<name>.so`` files in its
  ``ucx/`` module directory (``ib`` for verbs: rc, dc, ud; ``rdmacm``; ``cma``; ``cuda`` for
  cuda_copy and cuda_ipc; ``cuda_gdrcopy``; ``knem``; ``xpmem``). ``self``, ``tcp``,
  ``posix`` and ``sysv`` are built into ``libuct`` itself;
* the context's resources (``ucp_context_print_info``, ucxx's ``UCXContext.info``): each
  transport and device UCX found usable here, e.g. ``posix/memory``, ``tcp/eth0``,
  ``cuda_ipc/cuda``, ``rc_mlx5/mlx5_0:1``.

It never raises: what it could not learn is in ``UCXInfo.error``.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TRANSPORT_KINDS", "UCXInfo", "describe_ucx", "parse_resources", "transport_modules"]

#: Families of UCX transports (``UCX_TLS`` names) that ``gpupart info`` reports on.
TRANSPORT_KINDS: dict[str, tuple[str, ...]] = {
    "shared_memory": ("posix", "sysv", "xpmem", "knem"),
    "cma": ("cma",),
    "cuda_copy": ("cuda_copy", "gdr_copy"),
    "cuda_ipc": ("cuda_ipc",),
    "infiniband": ("rc_verbs", "rc_mlx5", "dc_mlx5", "ud_verbs", "ud_mlx5"),
    "tcp": ("tcp",),
}
_BUILT_IN = ("self", "tcp", "posix", "sysv")
_RESOURCE_RE = re.compile(r"resource\s+\d+\s*:\s*md\s+\d+\s+dev\s+\d+\s+flags\s+\S+\s+(\S+)/(\S+)")
_MODULE_RE = re.compile(r"^libuct_(\w+)\.so$")
_PREFER_SYSTEM = "RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY"


@dataclass(frozen=True)
class UCXInfo:
    """The UCX a gpupart rank started here would load, and what it can use.

    ``source`` is ``'wheel'`` (the libucx pip wheel), ``'system'`` or ``None`` (unknown);
    ``modules`` the transport modules built (``libuct_<name>.so``); ``transports`` the
    ``transport/device`` resources a context made with this environment has; ``tls`` the
    ``UCX_TLS`` in force (``None``: unset, so gpupart's default ``^cma`` applies);
    ``system_library`` a system ``libucp`` the dynamic loader knows of, if any.
    """

    version: str | None = None
    directory: str | None = None
    source: str | None = None
    prefer_system: bool = False
    modules: tuple[str, ...] = ()
    transports: tuple[str, ...] = ()
    cuda_support: bool | None = None
    tls: str | None = None
    system_library: str | None = None
    error: str | None = None

    @property
    def available(self) -> dict[str, bool]:
        """For each family of :data:`TRANSPORT_KINDS`, whether one of its transports is active."""
        names = {resource.split("/", 1)[0] for resource in self.transports}
        return {kind: bool(names & set(tls)) for kind, tls in TRANSPORT_KINDS.items()}

    @property
    def has_infiniband_module(self) -> bool:
        """Whether this UCX was built with verbs (its ``libuct_ib`` module is present)."""
        return "ib" in self.modules

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and scalars for JSON, with ``available`` included."""
        out = dataclasses.asdict(self)
        out["modules"] = list(self.modules)
        out["transports"] = list(self.transports)
        out["available"] = self.available
        out["built_in"] = list(_BUILT_IN)
        return out


def parse_resources(info: str) -> tuple[str, ...]:
    """Return the ``transport/device`` names in ``ucp_context_print_info`` text, in order."""
    return tuple(f"{tl}/{dev}" for tl, dev in _RESOURCE_RE.findall(info))


def transport_modules(directory: str | os.PathLike[str]) -> tuple[str, ...]:
    """Transport modules built for the UCX whose libraries are in ``directory``, sorted.

    UCX loads its optional transports from ``<directory>/ucx/libuct_<name>.so``.
    """
    try:
        entries = os.listdir(Path(directory) / "ucx")
    except OSError:
        return ()
    return tuple(sorted({m.group(1) for e in entries if (m := _MODULE_RE.match(e))}))


def describe_ucx(environ: Mapping[str, str] | None = None) -> UCXInfo:
    """Describe the UCX this process uses (loading it through ucxx if not yet loaded).

    ``environ`` (default ``os.environ``) is only read, for ``UCX_TLS`` and
    ``RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY``; UCX itself reads ``os.environ``. Never raises.
    """
    env = os.environ if environ is None else environ
    prefer = env.get(_PREFER_SYSTEM, "false").lower() != "false"
    base = {"prefer_system": prefer, "tls": env.get("UCX_TLS")}
    try:
        from gpupart.comm.ucx import _import_ucxx
        from gpupart.comm.ucx_library import loaded_ucx, wheel_ucx
    except ImportError as exc:  # pragma: no cover - part of the package
        return UCXInfo(**base, error=f"gpupart's UCX modules cannot be imported ({exc})")
    transports: tuple[str, ...] = ()
    cuda: bool | None = None
    error = None
    try:
        ucx, _, _ = _import_ucxx()
        context = ucx.UCXContext(config_dict={}, feature_flags=(ucx.Feature.TAG,))
        transports = parse_resources(str(context.info))
        cuda = bool(context.cuda_support)
        del context
    except Exception as exc:  # ucxx missing or UCX refusing to start: report, do not raise
        error = f"could not start UCX: {type(exc).__name__}: {exc}"
    copies = loaded_ucx()
    wheel = wheel_ucx()
    system = _system_libucp()
    if not copies:
        return UCXInfo(**base, system_library=system, error=error or "no UCX library is loaded")
    loaded = copies[0]
    directory = loaded.directory.resolve()
    is_wheel = wheel is not None and directory == wheel.directory
    return UCXInfo(
        **base,
        version=loaded.version if loaded.version != "?" else None,
        directory=str(directory),
        source="wheel" if is_wheel else "system",
        modules=transport_modules(directory),
        transports=transports,
        cuda_support=cuda,
        system_library=system,
        error=error,
    )


def _system_libucp() -> str | None:
    """Return a ``libucp`` the dynamic loader finds by soname (a system UCX), or None."""
    try:
        return ctypes.util.find_library("ucp")
    except OSError:
        return None
