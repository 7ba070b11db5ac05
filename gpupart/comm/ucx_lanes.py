"""Which transports UCX uses for an endpoint: ``ucp_ep_query`` through ctypes.

ucxx's Python API does not say which transports (shared memory, CMA, TCP, cuda_ipc,
InfiniBand RC/DC) an endpoint uses; UCX does, through ``ucp_ep_query`` with
``UCP_EP_ATTR_FIELD_TRANSPORTS`` (UCX >= 1.14). :func:`endpoint_lanes` calls it in the
``libucp`` this process already loaded (never loading one), with the endpoint handles
ucxx exposes. The answer is each *lane* of the endpoint as ``transport/device`` (e.g.
``sysv/memory``, ``tcp/eth0``, ``cuda_ipc/cuda``, ``rc_mlx5/mlx5_0:1``); UCX does not say
which lane carried which bytes.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["endpoint_lanes"]

logger = logging.getLogger("gpupart.ucx")

_FIELD_TRANSPORTS = 1 << 3  # UCP_EP_ATTR_FIELD_TRANSPORTS
_MAX_LANES = 32  # UCP_MAX_LANES is 16 in UCX 1.21


class _Entry(ctypes.Structure):
    """``ucp_transport_entry_t``."""

    _fields_ = [("transport_name", ctypes.c_char_p), ("device_name", ctypes.c_char_p)]


class _Transports(ctypes.Structure):
    """``ucp_transports_t``."""

    _fields_ = [
        ("entries", ctypes.POINTER(_Entry)),
        ("num_entries", ctypes.c_uint),
        ("entry_size", ctypes.c_size_t),
    ]


class _EndpointAttr(ctypes.Structure):
    """``ucp_ep_attr_t`` (name, two ``sockaddr_storage``, transports, user data)."""

    _fields_ = [
        ("field_mask", ctypes.c_uint64),
        ("name", ctypes.c_char * 32),  # UCP_ENTITY_NAME_MAX
        ("local_sockaddr", ctypes.c_byte * 128),
        ("remote_sockaddr", ctypes.c_byte * 128),
        ("transports", _Transports),
        ("user_data", ctypes.c_void_p),
    ]


def _ep_query() -> Any:
    """``ucp_ep_query`` of the libucp this process has loaded, or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libucp.so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            query = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)["ucp_ep_query"]
        except (OSError, AttributeError):
            continue
        query.argtypes = [ctypes.c_void_p, ctypes.POINTER(_EndpointAttr)]
        query.restype = ctypes.c_int
        return query
    return None


def endpoint_lanes(handles: Mapping[int, int]) -> dict[int, list[str]] | None:
    """Return ``transport/device`` lanes by rank for ``ucp_ep_h`` handles given by rank.

    None when this process's UCX cannot say (no ``ucp_ep_query``); a rank whose query
    fails is left out.
    """
    query = _ep_query()
    if query is None:
        logger.debug("ucp_ep_query not found: the transports of endpoints are not known")
        return None
    entries = (_Entry * _MAX_LANES)()
    lanes: dict[int, list[str]] = {}
    for rank, handle in handles.items():
        attr = _EndpointAttr()
        attr.field_mask = _FIELD_TRANSPORTS
        attr.transports.entries = ctypes.cast(entries, ctypes.POINTER(_Entry))
        attr.transports.num_entries = _MAX_LANES
        attr.transports.entry_size = ctypes.sizeof(_Entry)
        status = query(handle, ctypes.byref(attr))
        if status != 0:
            logger.debug("ucp_ep_query for rank %d failed with status %d", rank, status)
            continue
        found = entries[: min(attr.transports.num_entries, _MAX_LANES)]
        lanes[rank] = [
            f"{(e.transport_name or b'?').decode()}/{(e.device_name or b'?').decode()}"
            for e in found
        ]
    return lanes
