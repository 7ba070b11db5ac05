"""Runtime options: keyword arguments of ``gpupart.init``, overridable from the environment."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RuntimeOptions"]

#: Options for which 0 means "none" rather than a mistake.
_ZERO_ALLOWED = frozenset({"receive_pool_bytes"})


@dataclass(frozen=True)
class RuntimeOptions:
    """Every tunable of a :class:`~gpupart.Runtime`, with defaults that suit most jobs.

    Times are in seconds, sizes in bytes. Each option ``name`` can also be set through the
    environment variable ``GPUPART_<NAME>`` (keyword arguments win).
    """

    #: Default limit for collectives (barrier, broadcast, allgather, allreduce).
    timeout: float = 120.0
    #: Limit for one fetch batch (from posting the request to the last byte).
    fetch_timeout: float = 300.0
    #: Limit for joining the job (reaching the coordinator and waiting for every rank).
    bootstrap_timeout: float = 120.0
    #: Limit for the closing barrier and for draining in-flight sends at close.
    close_timeout: float = 10.0
    #: Seconds the progress thread keeps spinning after the last activity before sleeping.
    progress_spin: float = 0.002
    #: Tiles of at most this many bytes are packed into a few messages per batch.
    pack_threshold: int = 64 << 10
    #: Largest pack message. Several packs per call let the owner gather pack j+1 while
    #: the consumer reads pack j.
    pack_limit: int = 8 << 20
    #: Most bytes of received packs' memory a consumer keeps for reuse once the caller has
    #: dropped every tile of a pack (0: none): fresh memory costs page faults.
    receive_pool_bytes: int = 256 << 20
    #: Largest control message (fetch request, collective payload) a rank accepts; larger
    #: ones are dropped before they are received, and collectives refuse to send them.
    max_message_bytes: int = 64 << 20
    #: Most bytes an exchange keeps allocated for pieces still on their way.
    exchange_window: int = 256 << 20
    #: 'cpu', 'cuda' or None (CUDA when a GPU is usable); also ``GPUPART_DEVICE``.
    device: str | None = None
    #: Bind this process to one GPU chosen by local rank (unless CUDA_VISIBLE_DEVICES narrows it).
    bind_gpu: bool = True
    #: Pin this process's CPUs to its GPU's NUMA node.
    pin_cpus: bool = True
    #: Extra UCX options without the ``UCX_`` prefix, e.g. ``{"TLS": "tcp,self"}``.
    ucx_config: Mapping[str, str] = field(default_factory=dict)
    #: Level of the ``gpupart`` loggers while the runtime is open ('DEBUG', 'INFO', ...);
    #: None leaves it alone. Records carry a ``[rank N]`` prefix either way (gpupart.logs).
    log_level: str | None = None
    #: True prints bytes and GB/s per peer and transport at close; a path also writes them
    #: there as JSON (:mod:`gpupart.transfer_summary`). ``GPUPART_TRANSFER_SUMMARY=1|path``.
    transfer_summary: bool | str = False

    @classmethod
    def resolve(
        cls, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> RuntimeOptions:
        """Build options from keyword arguments and ``GPUPART_*`` variables.

        Unknown keywords raise :class:`TypeError` naming them; malformed values raise
        :class:`ValueError` naming the keyword or variable.
        """
        env = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise TypeError(f"gpupart.init: unknown option(s) {unknown}; known: {sorted(fields)}")
        values: dict[str, Any] = {}
        for name, f in fields.items():
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            if name in options:
                values[name] = _coerce(name, options[name], default, source=name)
            elif name != "ucx_config" and f"GPUPART_{name.upper()}" in env:
                var = f"GPUPART_{name.upper()}"
                values[name] = _coerce(name, env[var], default, source=var)
        return cls(**values)


def _coerce(name: str, value: Any, default: Any, *, source: str) -> Any:
    if name in ("log_level", "transfer_summary"):
        return _coerce_text(name, value, source)
    if name == "device":
        if value is None or value in ("", "auto"):
            return None
        if value not in ("cpu", "cuda"):
            raise ValueError(f"{source}: expected 'cpu', 'cuda' or None, found {value!r}")
        return value
    if name == "ucx_config":
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise TypeError(f"{source}: expected a mapping of str to str, found {value!r}")
        return dict(value)
    if isinstance(default, bool):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{source}: expected a boolean (1/0/true/false), found {value!r}")
        if not isinstance(value, bool):
            raise TypeError(f"{source}: expected a bool, found {value!r}")
        return value
    kind = type(default)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"{source}: expected a positive {kind.__name__}, found {value!r}")
    try:
        converted = kind(value)
        exact = kind is float or float(value) == converted  # 1.5 must not become 1
    except ValueError:
        exact = False
    if not exact:
        raise ValueError(f"{source}: expected a {kind.__name__}, found {value!r}")
    if converted < 0 or (converted == 0 and name not in _ZERO_ALLOWED):
        raise ValueError(f"{source}: expected a positive {kind.__name__}, found {value!r}")
    return converted


def _coerce_text(name: str, value: Any, source: str) -> Any:
    """``log_level``: a logging level name or None; ``transfer_summary``: a bool or a path."""
    if name == "log_level":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise TypeError(f"{source}: expected a level name such as 'INFO', found {value!r}")
        level = value.strip().upper()
        if level not in logging.getLevelNamesMapping():
            known = sorted(logging.getLevelNamesMapping())
            raise ValueError(f"{source}: expected one of {known}, found {value!r}")
        return level
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{source}: expected a bool or a file path, found {value!r}")
    lowered = value.strip().lower()
    if lowered in ("", "0", "false", "no", "off"):
        return False
    if lowered in ("1", "true", "yes", "on"):
        return True
    return value
