"""What a launcher says about this process, read from the environment and validated.

:class:`JobSpec` is what :func:`gpupart.job.bootstrap.detect` returns. ``_Env`` reads one
environment mapping; its errors name the variable, the form expected and what was found, and
never echo a secret. ``_check_place`` and ``_resolve_bind`` are the checks that every
launcher's reader (``bootstrap``, ``slurm``, ``mpi``) shares.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from gpupart.errors import BootstrapError

__all__ = ["JobSpec"]

_TOKEN_BYTES = 32
_MIN_TOKEN_BYTES = 16
_DEFAULT_TIMEOUT = 120.0
_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class JobSpec:
    """Where one process sits in the job, as its launcher described it.

    ``rank``/``size`` place the process in the job, ``local_rank``/``local_size`` on its node
    and ``node_id`` says which node (0 when the launcher does not say). ``launcher`` is
    ``'gpupart'``, ``'slurm'``, ``'mpi'`` or ``'single'``; ``job_id`` is the same on every
    rank of the job. ``coordinator`` is the ``(host, port)`` every rank joins (``None`` for
    ``'single'``, and for ``'mpi'`` until :func:`exchange_via_mpi`); ``token`` the job
    secret (under ``'mpi'`` only rank 0 holds it before the exchange).

    When ``serve_coordinator`` is true this process hosts the job's
    :class:`~gpupart.job.coordinator.Coordinator` with ``token``, listening on
    ``bind_host`` at ``coordinator[1]`` (or any free port while ``coordinator`` is
    ``None``), then joins it like every other rank.
    """

    rank: int
    size: int
    local_rank: int
    local_size: int
    node_id: int
    launcher: str
    job_id: str
    coordinator: tuple[str, int] | None
    serve_coordinator: bool
    token: bytes | None
    bind_host: str | None
    #: The user-only file the token was read from (Slurm): the serving rank deletes it
    #: once every rank has joined.
    token_file: str | None = None

    def __repr__(self) -> str:
        token = "None" if self.token is None else f"<{len(self.token)} secret bytes>"
        return (
            f"JobSpec(rank={self.rank}, size={self.size}, local_rank={self.local_rank},"
            f" local_size={self.local_size}, node_id={self.node_id},"
            f" launcher={self.launcher!r}, job_id={self.job_id!r},"
            f" coordinator={self.coordinator!r}, serve_coordinator={self.serve_coordinator},"
            f" token={token}, bind_host={self.bind_host!r})"
        )


class _Env:
    """Typed, validating reads of one environment mapping (errors name the variable)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def has(self, *names: str) -> bool:
        return any(name in self.environ for name in names)

    def first(self, *names: str) -> str | None:
        """Name of the first variable of ``names`` that is set, else ``None``."""
        return next((name for name in names if name in self.environ), None)

    def require(self, name: str, why: str) -> str:
        if name not in self.environ:
            raise BootstrapError(f"{name}: expected it to be set ({why}), found it unset")
        return self.environ[name]

    def integer(self, name: str, why: str, *, minimum: int = 0) -> int:
        text = self.require(name, why)
        if re.fullmatch(r"\s*\d+\s*", text) is None or int(text) < minimum:
            raise BootstrapError(f"{name}: expected an integer >= {minimum}, found {text!r}")
        return int(text)

    def seconds(self, name: str, default: float) -> float:
        if name not in self.environ:
            return default
        text = self.environ[name]
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise BootstrapError(f"{name}: expected a number of seconds > 0, found {text!r}")
        return value

    def address(self, name: str) -> tuple[str, int]:
        text = self.environ[name]
        match = re.fullmatch(r"\s*(?:\[([^\]]+)\]|([^\s:\[\]]+)):(\d{1,5})\s*", text)
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise BootstrapError(
                f"{name}: expected host:port (or [ipv6]:port) with a port in 1-65535,"
                f" found {text!r}"
            )
        return match.group(1) or match.group(2), int(match.group(3))

    def host(self, name: str) -> str | None:
        if name not in self.environ:
            return None
        text = self.environ[name]
        host = text.strip().removeprefix("[").removesuffix("]")
        if not host or any(ch.isspace() or ch in "[]/" for ch in host):
            raise BootstrapError(f"{name}: expected a host name or IP address, found {text!r}")
        return host

    def token(self, name: str) -> bytes:
        text = self.environ[name].strip()
        try:
            token = bytes.fromhex(text)
        except ValueError:
            token = b""
        if len(token) < _MIN_TOKEN_BYTES:
            raise BootstrapError(
                f"{name}: expected at least {2 * _MIN_TOKEN_BYTES} hex digits (a secret of"
                f" {_MIN_TOKEN_BYTES}+ bytes), found {len(text)} characters that are not one"
            )
        return token


def _check_place(rank: tuple[str, int], size: tuple[str, int]) -> None:
    """Check ``rank < size`` for two ``(variable, value)`` pairs."""
    if rank[1] >= size[1]:
        raise BootstrapError(
            f"{rank[0]}: expected a value below {size[0]}={size[1]}, found {rank[1]}"
        )


def _resolve_bind(host: str, var: str, *, multinode: bool) -> str:
    """Address to listen on for ``host``: a non-loopback one when other nodes must reach it."""
    try:
        _, _, addresses = socket.gethostbyname_ex(host)
    except OSError as exc:
        raise BootstrapError(
            f"{var}: could not resolve coordinator host {host!r} ({exc}); set"
            " GPUPART_COORDINATOR_HOST to this node's address on the job's network"
        ) from exc
    routable = [a for a in addresses if not a.startswith("127.")]
    if routable:
        return routable[0]
    if multinode:
        raise BootstrapError(
            f"{var}: coordinator host {host!r} resolves only to loopback {addresses}, which"
            " other nodes cannot reach; set GPUPART_COORDINATOR_HOST to this node's address"
            " on the job's network"
        )
    return addresses[0]
