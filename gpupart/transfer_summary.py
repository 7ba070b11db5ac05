"""The opt-in transfer summary: bytes and GB/s per peer and per transport, at the end of a job.

Turned on with ``GPUPART_TRANSFER_SUMMARY=1`` (or ``gpupart.init(transfer_summary=True)``);
a path instead of ``1`` also writes the summary there as JSON. While it is on, each rank
counts the tile bytes it asks every owner for (``get``, ``fetch``, ``exchange``) and the tile
bytes it sends every consumer, once per request (:class:`~gpupart.tiles.traffic.Traffic`).
Control messages and collectives are not counted.

At close, before the closing barrier, the ranks gather their reports to rank 0 (a collective
with the ``timeout`` of collectives: turn the summary on for every rank or for none), which
prints one table on stderr and writes the JSON file. A rank that fails or cannot reach the others
prints its own report instead (and writes it to the path with ``.rank<N>`` before the
suffix). GB/s is a peer's bytes over its *busy* seconds: the time at least one request
with that peer was in flight, from posting the request to its last tile landing, as the
consumer measures it; the ``sent`` side takes the consumer's seconds once the reports are
gathered (an owner learns that its sends completed only when its progress thread next
looks).

Transports: for each peer, the lanes UCX's endpoint uses (``sysv/memory``, ``tcp/eth0``,
``cuda_ipc/cuda``, ``rc_mlx5/mlx5_0:1``, from ``ucp_ep_query``). UCX does not say which lane
carried which bytes, so the split per transport groups peers by their endpoint's lanes;
without an answer from UCX the group is ``not known``. The JSON layout::

    {"job_id": ..., "size": N, "transport": {"TLS": "^cma", ...},
     "ranks": [{"rank": r, "host": ..., "seconds": open for,
                "peers": [{"peer": p, "lanes": [...] | null,
                           "received": {"bytes", "requests", "seconds", "gb_per_s"},
                           "sent": {...}}],
                "transports": [{"lanes": "sysv/memory, tcp/lo", "peers": [...],
                                "received": {...}, "sent": {...}}]}]}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from gpupart.errors import GpupartError
from gpupart.tiles.traffic import Traffic

__all__ = ["TransferLog", "format_summary"]

logger = logging.getLogger("gpupart.runtime")

NOT_KNOWN = "not known"


class TransferLog:
    """What one rank moved (``received``: asked of owners, ``sent``: served to consumers).

    ``target`` is True to print the summary, or a path to print it and write it as JSON.
    """

    def __init__(self, *, rank: int, size: int, job_id: str, host: str, target: Any) -> None:
        self.rank = rank
        self.size = size
        self.job_id = job_id
        self.host = host
        self.target = target
        self.received = Traffic(size)
        self.sent = Traffic(size)
        self._opened = time.perf_counter()

    def report(self, transport: Any) -> dict[str, Any]:
        """Return this rank's part of the summary (call while the endpoints are open)."""
        lanes = None
        if transport is not None:
            try:
                lanes = transport.lanes()
            except Exception as exc:  # a diagnostic must not stop close(): lanes not known
                logger.debug("transfer summary: the transports of endpoints: %s", exc)
        by_peer: dict[int, dict[str, Any]] = {}
        for direction, traffic in (("received", self.received), ("sent", self.sent)):
            for peer, nbytes, requests, busy in traffic.snapshot():
                entry = by_peer.setdefault(
                    peer,
                    {
                        "peer": peer,
                        "lanes": None if lanes is None else lanes.get(peer),
                        "received": _rate(0, 0, 0.0),
                        "sent": _rate(0, 0, 0.0),
                    },
                )
                entry[direction] = _rate(nbytes, requests, busy)
        peers = [by_peer[p] for p in sorted(by_peer)]
        return {
            "rank": self.rank,
            "host": self.host,
            "seconds": round(time.perf_counter() - self._opened, 6),
            "peers": peers,
            "transports": _by_transport(peers),
        }

    def publish(self, transport: Any, gather: Any, timeout: float) -> None:
        """Gather every rank's report to rank 0 and show it there (or show this rank's).

        ``gather`` is the runtime's ``allgather`` (None: do not try, e.g. while failing).
        """
        mine = self.report(transport)
        reports = None
        if gather is not None:
            try:
                reports = gather(mine, timeout)
            except GpupartError as exc:
                logger.warning("transfer summary: could not gather the ranks' reports: %s", exc)
        if reports is not None and self.rank != 0:
            return
        if reports is not None:
            _sent_as_received(reports)
        summary = {
            "job_id": self.job_id,
            "size": self.size,
            "transport": {} if transport is None else transport.settings(),
            "ranks": [mine] if reports is None else reports,
        }
        sys.stderr.write(format_summary(summary))
        sys.stderr.flush()
        if isinstance(self.target, str):
            path = Path(self.target)
            if reports is None and self.size > 1:
                path = path.with_name(f"{path.stem}.rank{self.rank}{path.suffix}")
            try:
                path.write_text(json.dumps(summary, indent=1) + "\n")
            except OSError as exc:
                logger.warning("transfer summary: could not write %s: %s", path, exc)


def _rate(nbytes: int, requests: int, busy: float) -> dict[str, Any]:
    return {
        "bytes": nbytes,
        "requests": requests,
        "seconds": round(busy, 6),
        "gb_per_s": float(f"{nbytes / busy / 1e9:.6g}") if busy > 0 else None,
    }


def _sent_as_received(reports: list[dict[str, Any]]) -> None:
    """Time what each rank sent by its consumer's clock (see the module docstring)."""
    received = {(r["rank"], e["peer"]): e["received"] for r in reports for e in r["peers"]}
    for report in reports:
        for entry in report["peers"]:
            theirs = received.get((entry["peer"], report["rank"]))
            sent = entry["sent"]
            if theirs is not None and sent["bytes"]:
                entry["sent"] = _rate(sent["bytes"], sent["requests"], theirs["seconds"])
        report["transports"] = _by_transport(report["peers"])


def _by_transport(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group peers by their endpoint's lanes and sum each group (see the module docstring)."""
    groups: dict[str, dict[str, Any]] = {}
    for entry in peers:
        name = NOT_KNOWN if entry["lanes"] is None else ", ".join(entry["lanes"])
        group = groups.setdefault(name, {"lanes": name, "peers": [], "received": [], "sent": []})
        group["peers"].append(entry["peer"])
        for direction in ("received", "sent"):
            group[direction].append(entry[direction])
    for group in groups.values():
        for direction in ("received", "sent"):
            parts = group[direction]
            group[direction] = _rate(
                sum(p["bytes"] for p in parts),
                sum(p["requests"] for p in parts),
                sum(p["seconds"] for p in parts),
            )
    return list(groups.values())


def format_summary(summary: dict[str, Any]) -> str:
    """Return the summary as the table printed at close."""
    settings = ", ".join(f"UCX_{k}={v}" for k, v in summary["transport"].items())
    lines = [
        f"gpupart transfer summary: job {summary['job_id']}, {summary['size']} rank(s)"
        + (f", {settings}" if settings else ""),
        f"{'rank':>4} {'peer':>4} {'received':>10} {'rate':>12} {'sent':>10} {'rate':>12}  lanes",
    ]
    for report in summary["ranks"]:
        if not report["peers"]:
            lines.append(f"{report['rank']:>4}    -  nothing moved")
        for entry in report["peers"]:
            lanes = NOT_KNOWN if entry["lanes"] is None else ", ".join(entry["lanes"])
            lines.append(f"{report['rank']:>4} {entry['peer']:>4} {_rate_cells(entry)}  {lanes}")
    lines.append("by transport (UCX does not say which lane carried which bytes):")
    for report in summary["ranks"]:
        for group in report["transports"]:
            lines.append(f"{report['rank']:>4}    * {_rate_cells(group)}  {group['lanes']}")
    return "\n".join(lines) + "\n"


def _rate_cells(entry: dict[str, Any]) -> str:
    cells = []
    for direction in ("received", "sent"):
        rate = entry[direction]
        speed = "-" if rate["gb_per_s"] is None else _size(rate["gb_per_s"] * 1e9) + "/s"
        cells.append(f"{_size(rate['bytes']):>10} {speed:>12}")
    return " ".join(cells)


def _size(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes:.0f} B"
