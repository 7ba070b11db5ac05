"""Kill the ranks' process groups when ``gpupart run`` ends, even by ``SIGKILL``.

A SIGKILLed launcher runs no code: its ranks die through ``PR_SET_PDEATHSIG``, but the
processes *they* started would be orphaned. So the launcher starts this watchdog, a small
process in a session of its own (a Ctrl-C or hang-up aimed at the launcher does not reach
it), and tells it every rank's process group on its stdin, one line each (``+PGID``). The
launcher holds the only write end of that pipe, so the kernel closes it whatever way the
launcher ends; at the end of its input the watchdog sends ``SIGKILL`` to every group (the
ranks are gone by then, what they started may not be), then exits. The watchdog runs as a
plain script (``python -I -S watchdog.py``): nothing of gpupart is imported in it.

Processes that leave their rank's process group (``setsid``) are not covered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from typing import BinaryIO

__all__ = ["Watchdog"]

logger = logging.getLogger("gpupart.job.launcher")


class Watchdog:
    """The launcher's side: start the watchdog, name the groups it guards, stop it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        """Start the watchdog process; False (logged) if it cannot be started."""
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("no watchdog (%s): a killed gpupart run may leave processes", exc)
            return False
        return True

    def guard(self, pgid: int) -> None:
        """Have the watchdog kill process group ``pgid`` if the launcher dies."""
        self._write(f"+{pgid}\n".encode())

    def close(self, timeout: float = 2.0) -> None:
        """End the watchdog's input (it kills the groups) and wait for it, at most ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _write(self, line: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(line)
            proc.stdin.flush()
        except OSError as exc:  # the watchdog died: nothing guards the ranks now
            logger.warning("the watchdog is gone (%s): a killed gpupart run may leave some", exc)


def watch(stream: BinaryIO) -> None:
    """Read ``+PGID`` lines to the end of ``stream``, then kill those process groups."""
    groups: list[int] = []
    for line in stream:
        if line.startswith(b"+"):
            with contextlib.suppress(ValueError):
                groups.append(int(line[1:]))
    for pgid in groups:  # the launcher is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(sys.stdin.buffer)
