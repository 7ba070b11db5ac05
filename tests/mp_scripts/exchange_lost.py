"""One rank SIGKILLs itself in the middle of an exchange; every other rank must hear who died.

Usage: ``exchange_lost.py MODE VICTIM SYNC_DIR``. The moment of death is chosen by events,
not by sleeping:

* ``fetch``: the survivors fetch an 8 MiB piece from the victim whose tiles never become
  ready (a private hook gives each a ready event that never completes and records that a
  consumer's request reached it); the victim dies once every survivor's request has arrived,
  so every survivor is waiting on a fetch from it.
* ``wait``: the victim sends nothing and never fetches what it is owed; it dies once every
  survivor has fetched everything and waits for its own pieces to be fetched (survivors
  touch ``SYNC_DIR/waiting-<rank>`` on entering that wait).
* ``metadata``: the victim dies without entering the exchange, once every survivor is about
  to (``SYNC_DIR/entering-<rank>``); the survivors wait in the metadata all-to-all.
* ``bystander`` (3 ranks): only the two survivors A < B send each other a piece; nothing goes
  to or from the victim, which dies once A waits for B to fetch A's piece. B starts fetching
  only once A's exchange has ended (``ended-A``), or 5 s after B itself heard of the death.
  Neither survivor needs the victim: each must end with its pieces or a PeerLostError
  naming the victim (not an error about a tile that A withdrew). A closes only after B ended.

Survivors emit ``@lost`` (error type, its rank, message, seconds, tiles left registered) and
``@closed`` after closing their runtime; they exit 0 whatever happened, the test judges.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _mp import emit

import gpupart

mode, victim, sync = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
rt = gpupart.init(timeout=90, fetch_timeout=90)
rank, size = rt.rank, rt.size
survivors = [r for r in range(size) if r != victim]
MiB = 1 << 20


def wait_for_files(prefix: str, ranks: list[int] = survivors) -> None:
    """Until every rank in ``ranks`` has touched ``SYNC_DIR/<prefix>-<rank>`` (at most 60 s)."""
    limit = time.monotonic() + 60
    while not all((sync / f"{prefix}-{r}").exists() for r in ranks):
        if time.monotonic() > limit:
            raise SystemExit(f"rank {rank}: {ranks} never reached {prefix!r}")
        time.sleep(0.01)


def die() -> None:
    emit("dying", rank=rank, mode=mode)
    os.kill(os.getpid(), signal.SIGKILL)


class NeverReady:
    """A tile event that never completes; records that a consumer's request reached it."""

    def __init__(self) -> None:
        self.asked = threading.Event()

    @property
    def done(self) -> bool:
        self.asked.set()  # polled by the owner's server once a request for the tile arrived
        return False


if mode == "fetch":
    pieces: list[Any] = [np.full(MiB, rank, dtype=np.uint8) for _ in range(size)]
    if rank == victim:
        pieces = [np.full(8 * MiB, 7, dtype=np.uint8) for _ in range(size)]
        events = {r: NeverReady() for r in survivors}
        add = rt._store.add

        def add_never_ready(tile: Any) -> int:
            if tile.consumer is not None:
                tile.event = events[tile.consumer]
            return add(tile)

        rt._store.add = add_never_ready

        def killer() -> None:
            for event in events.values():
                event.asked.wait(60)
            die()

        threading.Thread(target=killer, daemon=True).start()
elif mode == "wait":
    pieces = [np.full(MiB, rank, dtype=np.uint8) for _ in range(size)]
    if rank == victim:
        pieces = [np.empty(0, dtype=np.uint8) for _ in range(size)]

        def fetch_nothing(*args: Any) -> Any:
            wait_for_files("waiting")
            die()

        rt._exchange._fetch_all = fetch_nothing
    else:
        wait_fetched = rt._exchange._wait_fetched

        def announce_wait(*args: Any) -> None:
            (sync / f"waiting-{rank}").touch()
            wait_fetched(*args)

        rt._exchange._wait_fetched = announce_wait
elif mode == "metadata":
    pieces = [np.full(MiB, rank, dtype=np.uint8) for _ in range(size)]
    rt.barrier()
    if rank == victim:
        wait_for_files("entering")
        die()
    (sync / f"entering-{rank}").touch()
elif mode == "bystander":
    a, b = survivors
    pieces = [np.empty(0, dtype=np.uint8) for _ in range(size)]
    if rank in (a, b):
        pieces[b if rank == a else a] = np.full(MiB, rank, dtype=np.uint8)
    wait_fetched, fetch_all = rt._exchange._wait_fetched, rt._exchange._fetch_all
    if rank == victim:

        def die_when_a_waits(*args: Any) -> None:
            wait_for_files("waiting", [a])
            die()

        rt._exchange._wait_fetched = die_when_a_waits
    elif rank == a:

        def announce_wait(*args: Any) -> None:
            (sync / f"waiting-{rank}").touch()
            wait_fetched(*args)

        rt._exchange._wait_fetched = announce_wait
    else:
        engine = rt._exchange._engine

        def fetch_late(*args: Any) -> Any:
            heard = None
            while not (sync / f"ended-{a}").exists():
                if heard is None and victim in engine.lost:
                    heard = time.monotonic()
                if heard is not None and time.monotonic() - heard > 5:
                    break
                time.sleep(0.01)
            return fetch_all(*args)

        rt._exchange._fetch_all = fetch_late
else:
    raise SystemExit(f"unknown mode {mode!r}")

started = time.monotonic()
error = None
try:
    rt.exchange(pieces, timeout=90)
except Exception as exc:  # the test checks the type and the rank
    error = exc
(sync / f"ended-{rank}").touch()
if mode == "bystander" and rank == survivors[0]:
    wait_for_files("ended", [survivors[1]])  # closing would be a loss of its own
emit(
    "lost",
    rank=rank,
    mode=mode,
    error=type(error).__name__ if error is not None else None,
    lost_rank=getattr(error, "rank", None),
    message=str(error),
    elapsed=round(time.monotonic() - started, 3),
    tiles=len(rt._store),
)
close_started = time.monotonic()
rt.close()
emit(
    "closed",
    rank=rank,
    seconds=round(time.monotonic() - close_started, 3),
    threads=[t.name for t in threading.enumerate()],
)
