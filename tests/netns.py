"""Simulated hosts on one machine: Linux namespaces joined by a veth pair (needs root).

Each simulated host is three namespaces that processes enter together:

- a **network** namespace (``ip netns``) holding ``lo`` and one end of a veth pair, with a
  private address, a default route through the veth (so ``topology.primary_ip()`` finds it)
  and its own ``/etc/hosts`` (``ip netns exec`` bind-mounts ``/etc/netns/<ns>/hosts`` over
  it) that maps every simulated host name to its veth address;
- a **UTS** namespace with the host's name, so ``socket.gethostname()`` differs per host;
- an **IPC** namespace. This is the one UCX looks at: its shared-memory transports (sysv,
  posix, cma) are reachable only between processes of one IPC namespace. UCX's "system id"
  is the kernel's boot id, which no namespace changes, and it ignores the host name: with
  only the UTS and network namespaces separate, UCX 1.21 moves data between the two
  "hosts" through shared memory and nothing crosses the veth.

Processes of one host must share all three namespaces (a fresh ``unshare --ipc`` per process
would make UCX fall back to TCP over ``lo`` between ranks of one host). So the UTS and IPC
namespaces are made once per host and kept alive by bind mounts onto files in a private
directory; :meth:`SimHost.command` wraps a command line as
``ip netns exec <ns> nsenter --uts=<file> --ipc=<file> -- argv...``.

Only namespaces this module creates are touched: the veth pair is created directly inside
the two network namespaces and never appears in the machine's own; deleting a network
namespace deletes its veth end. :class:`SimHosts` is a context manager whose ``close()``
undoes every step that succeeded, also after a partial build.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NamespaceError", "SimHost", "SimHosts", "missing_requirements"]

_COMMAND_TIMEOUT = 20.0
_ETC_NETNS = Path("/etc/netns")
_TOOLS = ("ip", "unshare", "nsenter", "umount")


class NamespaceError(RuntimeError):
    """A namespace command failed: the message names the command and its stderr."""


def missing_requirements() -> str | None:
    """Why simulated hosts cannot be built here (not root, a tool missing), else ``None``."""
    if sys.platform != "linux":
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "building network namespaces needs root (euid 0)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools {missing} (iproute2, util-linux)"
    return None


def _run(*argv: str) -> str:
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NamespaceError(f"{' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        raise NamespaceError(
            f"{' '.join(argv)}: exit status {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


@dataclass(frozen=True)
class SimHost:
    """One simulated host: its name, namespaces, veth end and address."""

    name: str
    netns: str
    veth: str
    address: str
    uts: Path
    ipc: Path

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside this host's network, UTS and IPC namespaces."""
        return [
            "ip", "netns", "exec", self.netns,
            "nsenter", f"--uts={self.uts}", f"--ipc={self.ipc}", "--", *argv,
        ]  # fmt: skip

    def counters(self) -> dict[str, dict[str, int]]:
        """Byte counters of this host's interfaces: ``{ifname: {'rx': n, 'tx': n}}``."""
        links = json.loads(_run("ip", "-json", "-stats", "-netns", self.netns, "link", "show"))
        return {
            link["ifname"]: {
                "rx": int(link["stats64"]["rx"]["bytes"]),
                "tx": int(link["stats64"]["tx"]["bytes"]),
            }
            for link in links
        }


class SimHosts:
    """Simulated hosts joined by one veth pair (two hosts; more would need a bridge).

    ``SimHosts(["hostA", "hostB"], tag="gp1234")`` builds them (raising
    :class:`NamespaceError` on the first failing step, after undoing the others); ``tag``
    makes namespace and interface names unique (keep it short: interface names have at most
    15 characters). ``subnet`` is the first three octets of a private /24: host ``i`` gets
    ``.{i + 1}``. The namespaces are private, so the subnet clashes with nothing.
    """

    def __init__(self, names: list[str], *, tag: str, subnet: str = "10.213.7") -> None:
        if len(names) != 2 or len(set(names)) != 2:
            raise ValueError(f"names: expected two different host names, found {names!r}")
        if len(f"{tag}-{len(names) - 1}") > 15:
            raise ValueError(f"tag: expected at most 13 characters, found {tag!r}")
        self._undo: list[tuple[str, list[str] | Path]] = []
        self._made_etc_netns = False
        self._state = Path(tempfile.mkdtemp(prefix=f"gpupart-{tag}-"))
        self.hosts: list[SimHost] = []
        try:
            self._build(names, tag, subnet)
        except BaseException:
            self.close()
            raise

    def _build(self, names: list[str], tag: str, subnet: str) -> None:
        hosts = [
            SimHost(
                name=name,
                netns=f"{tag}-{name}",
                veth=f"{tag}-{i}",
                address=f"{subnet}.{i + 1}",
                uts=self._state / f"{name}.uts",
                ipc=self._state / f"{name}.ipc",
            )
            for i, name in enumerate(names)
        ]
        for host in hosts:
            _run("ip", "netns", "add", host.netns)
            self._undo.append(("cmd", ["ip", "netns", "delete", host.netns]))
        a, b = hosts
        _run(
            "ip", "-netns", a.netns, "link", "add", a.veth, "type", "veth",
            "peer", "name", b.veth, "netns", b.netns,
        )  # fmt: skip
        hosts_file = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{h.address} {h.name}\n" for h in hosts
        )
        if not _ETC_NETNS.exists():
            _ETC_NETNS.mkdir(mode=0o755)
            self._made_etc_netns = True
        for host in hosts:
            ns = ["ip", "-netns", host.netns]
            _run(*ns, "addr", "add", f"{host.address}/24", "dev", host.veth)
            _run(*ns, "link", "set", "lo", "up")
            _run(*ns, "link", "set", host.veth, "up")
            _run(*ns, "route", "add", "default", "dev", host.veth)
            etc = _ETC_NETNS / host.netns
            etc.mkdir(mode=0o755)
            self._undo.append(("rmtree", etc))
            (etc / "hosts").write_text(hosts_file)
            for path in (host.uts, host.ipc):
                path.touch()
            # Bind-mounted namespace files keep the namespaces alive with no process in them.
            _run(
                "unshare", f"--uts={host.uts}", f"--ipc={host.ipc}",
                sys.executable, "-c", f"import socket; socket.sethostname({host.name!r})",
            )  # fmt: skip
            self._undo.append(("cmd", ["umount", str(host.uts)]))
            self._undo.append(("cmd", ["umount", str(host.ipc)]))
            self.hosts.append(host)

    def close(self) -> None:
        """Undo every step that succeeded, newest first; idempotent.

        Stop the processes inside first: a namespace they are in outlives its deletion here.
        Raises :class:`NamespaceError` listing the steps that failed, after trying all.
        """
        errors = []
        while self._undo:
            kind, what = self._undo.pop()
            try:
                if kind == "cmd":
                    _run(*what)  # type: ignore[misc]
                else:
                    shutil.rmtree(what)  # type: ignore[arg-type]
            except (OSError, NamespaceError) as exc:
                errors.append(str(exc))
        if self._made_etc_netns:
            self._made_etc_netns = False
            with contextlib.suppress(OSError):  # not empty: another run's hosts are in it
                _ETC_NETNS.rmdir()
        shutil.rmtree(self._state, ignore_errors=True)
        if errors:
            raise NamespaceError("tearing down simulated hosts: " + "; ".join(errors))

    def __enter__(self) -> SimHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
