"""A rank that talks to ``gpupart run``'s coordinator directly (no ``gpupart.init``).

Usage: ``report_failure.py FAILING_RANK``. Every rank joins with the ``GPUPART_*`` variables
the launcher set. The failing rank reports ``ValueError: bad input``, prints whether the
coordinator noted it, waits a second (so that the others exit before it) and exits 3. The
others ignore SIGTERM, wait to hear of the loss, print ``heard RANK REASON`` and exit 1, as
a rank that raised ``PeerLostError`` would.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from gpupart.job.coordinator import CoordinatorClient


def main() -> int:
    failing = int(sys.argv[1])
    rank = int(os.environ["GPUPART_RANK"])
    host, port = os.environ["GPUPART_COORDINATOR"].rsplit(":", 1)
    client = CoordinatorClient(
        (host, int(port)),
        bytes.fromhex(os.environ["GPUPART_JOB_TOKEN"]),
        job_id=os.environ["GPUPART_JOB_ID"],
        rank=rank,
        timeout=30,
    )
    if rank != failing:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    client.join({"rank": rank})
    heard: list[tuple[int, str]] = []
    lost = threading.Event()

    def on_lost(who: int, reason: str) -> None:
        heard.append((who, reason))
        lost.set()

    client.watch(on_lost)
    if rank == failing:
        print("noted", client.report_failure("ValueError: bad input"), flush=True)
        time.sleep(1.0)
        client.close()
        return 3
    if not lost.wait(30):
        print("heard nothing", flush=True)
        return 2
    who, reason = heard[0]
    print("heard", who, reason, flush=True)
    client.close(bye=False)
    return 1


if __name__ == "__main__":
    sys.exit(main())
