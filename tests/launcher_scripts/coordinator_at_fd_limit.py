"""Host a coordinator under a low descriptor limit; report its CPU use on request.

Usage: ``coordinator_at_fd_limit.py LIMIT TOKEN_HEX JOB_ID``. Prints ``port N``, then reads
commands from stdin: ``cpu`` prints ``cpu SECONDS``, the CPU time this process used over
one second (the main thread sleeps, so it is the coordinator's); ``quit`` stops.
"""

from __future__ import annotations

import os
import resource
import sys
import time

from gpupart.job.coordinator import Coordinator


def main() -> None:
    limit, token, job_id = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    with Coordinator(1, token, job_id=job_id, join_timeout=600).start() as coordinator:
        print("port", coordinator.address[1], flush=True)
        for line in sys.stdin:
            if line.strip() == "cpu":
                before = os.times()
                time.sleep(1.0)
                after = os.times()
                used = (after.user - before.user) + (after.system - before.system)
                print("cpu", f"{used:.3f}", flush=True)
            elif line.strip() == "quit":
                break


if __name__ == "__main__":
    main()
