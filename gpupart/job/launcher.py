"""``gpupart run``: start the ranks of a one-machine job and stop them together.

:class:`Launcher` hosts the job's :class:`~gpupart.job.coordinator.Coordinator` on
``127.0.0.1``, starts one child process per rank with the ``GPUPART_*`` variables that
:func:`gpupart.job.bootstrap.detect` reads, relays their output line by line with a
``[rank]`` prefix and watches them. The first rank to fail is the job's cause: a rank that
reports its failure to the coordinator (an error inside ``gpupart.init()``, with the
error's text) or one that exits non-zero or by a signal. The other ranks hear of it through
the coordinator at once and are stopped: ``SIGTERM`` to each rank's process group,
``SIGKILL`` after the grace period; a rank that reported its failure is spared the
``SIGTERM`` (it is on its way out, printing its traceback). The summary names that first
rank, why it failed and how it exited, even when ranks that lost it exit non-zero before
it. A ``SIGINT``/``SIGTERM``/``SIGHUP`` to the launcher is forwarded to every rank, with the
same escalation (a second one kills at once).

No orphans: every rank runs in its own session, and a
:class:`~gpupart.job.watchdog.Watchdog` process kills every rank's process group (the
processes the rank started too) when the launcher ends, normally or killed. A killed
launcher's ranks also get ``SIGKILL`` from the kernel (``PR_SET_PDEATHSIG`` on Linux, tied
to the thread that calls :meth:`Launcher.run`, which stays alive until the job ends).

Exit status of :meth:`Launcher.run`: 0 when every rank exits 0; the failing rank's status
(``128 + signal`` when it was killed, 1 when it reported a failure and exited 0);
``128 + signal`` when the launcher was signalled; 124 when the job ran past its ``timeout``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from gpupart.errors import LaunchError
from gpupart.job.coordinator import Coordinator
from gpupart.job.watchdog import Watchdog

__all__ = ["JOB_VARIABLES", "Launcher", "describe_status"]

logger = logging.getLogger("gpupart.job.launcher")

#: Variables the launcher sets for every rank (inherited values are removed first).
JOB_VARIABLES = (
    "GPUPART_RANK",
    "GPUPART_SIZE",
    "GPUPART_LOCAL_RANK",
    "GPUPART_LOCAL_SIZE",
    "GPUPART_NODE_ID",
    "GPUPART_COORDINATOR",
    "GPUPART_JOB_TOKEN",
    "GPUPART_JOB_ID",
)
_PR_SET_PDEATHSIG = 1
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_TICK = 0.1  # longest sleep of the supervision loop
_PARTIAL_AFTER = 0.5  # an unfinished output line is shown after this many seconds
_PARTIAL_LIMIT = 1 << 16  # ... or once it is this long
_DRAIN = 2.0  # how long output is still relayed after the last rank exited
_AFTER_KILL = 10.0  # how long to wait for ranks after SIGKILL (they may be in D state)
_TIMEOUT_STATUS = 124


def describe_status(returncode: int) -> str:
    """Describe a ``Popen.returncode``: ``'exited with status 3'``, ``'was killed by SIGKILL'``."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def _exit_status(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _pdeathsig_setup(parent_pid: int) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that kills the child when its parent dies (Linux), or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        logger.debug("prctl unavailable: ranks will not die with a killed launcher")
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    sigkill = int(signal.SIGKILL)

    def setup() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent_pid:  # the launcher died before prctl took effect
            os.kill(os.getpid(), sigkill)

    return setup


class _Relay:
    """Turns one rank's output stream into whole lines prefixed with ``[rank] ``."""

    def __init__(self, prefix: bytes, sink: IO[bytes]) -> None:
        self.prefix = prefix
        self.sink = sink
        self.pending = bytearray()
        self.pending_since = 0.0
        self.mid_line = False  # a partial line was shown; its rest gets no prefix

    def feed(self, data: bytes, now: float) -> bytes:
        """Take new output; return what is ready to show."""
        if not self.pending:
            self.pending_since = now
        self.pending += data
        cut = self.pending.rfind(b"\n") + 1
        if not cut:
            return self.due(now)
        lines, self.pending = bytes(self.pending[: cut - 1]), self.pending[cut:]
        self.pending_since = now
        head = b"" if self.mid_line else self.prefix
        self.mid_line = False
        return head + lines.replace(b"\n", b"\n" + self.prefix) + b"\n"

    def due(self, now: float, *, final: bool = False) -> bytes:
        """Return the unfinished line if it waited long enough, or ``final``ly."""
        if not self.pending:
            return b"\n" if final and self.mid_line else b""
        waited = now - self.pending_since >= _PARTIAL_AFTER
        if not (final or waited or len(self.pending) >= _PARTIAL_LIMIT):
            return b""
        head = b"" if self.mid_line else self.prefix
        out = head + bytes(self.pending) + (b"\n" if final else b"")
        self.pending.clear()
        self.mid_line = not final
        return out


@dataclass(eq=False)
class _Rank:
    """One started rank: its process and output relays."""

    rank: int
    proc: subprocess.Popen[bytes]
    relays: dict[int, _Relay] = field(default_factory=dict)  # pipe fd -> relay
    killed: bool = False  # stopping it took SIGKILL
    code: int | None = None  # its returncode, once it exited
    failure: str | None = None  # the error it reported to the coordinator

    def describe(self) -> str:
        """``'rank 1 failed (ValueError: bad input) and exited with status 1'`` and the like."""
        text = f"rank {self.rank}"
        if self.failure is not None:
            text += f" failed ({self.failure})"
            if self.code is not None:
                text += " and"
        if self.code is not None:
            text += f" {describe_status(self.code)}"
        return text

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the rank's process group (its helpers included)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)


class _SignalWatch:
    """Catch the launcher's stop signals (and SIGCHLD) and wake the supervision loop.

    Handlers are installed only from the main thread (Python's rule); elsewhere the caller
    stops the job with :meth:`Launcher.request_stop`.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self._saved: dict[int, Any] = {}
        self._saved_fd: int | None = None

    def __enter__(self) -> _SignalWatch:
        if threading.current_thread() is threading.main_thread():
            self._saved_fd = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
            for signum in (*_FORWARDED, signal.SIGCHLD):
                self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        if self._saved_fd is not None:
            signal.set_wakeup_fd(self._saved_fd)
        self.wake_r.close()
        self.wake_w.close()

    def _handle(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.received.append(signum)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self.wake_w.send(b"\0")

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            while self.wake_r.recv(4096):
                pass


#: the thread pools of BLAS/OpenMP libraries a rank's NumPy, SciPy and numba calls use
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_limits(env: Mapping[str, str], nprocs: int) -> dict[str, str]:
    """Share this machine's CPUs between its ``nprocs`` ranks' thread pools.

    Each library would otherwise start one thread per CPU in every rank: ``nprocs`` times too
    many, and BLAS threads that spin while they wait make a matrix product many times slower
    (``bench/RESULTS.md``). Returns ``cpus // nprocs`` (at least 1) for the variables the user
    has not set; none when any is set (the user has chosen).
    """
    if any(name in env for name in THREAD_VARIABLES):
        return {}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = str(max(1, (cpus or 1) // nprocs))
    return dict.fromkeys(THREAD_VARIABLES, share)


class Launcher:
    """Run ``command`` as ``nprocs`` ranks on this machine; :meth:`run` returns the exit status.

    ``env`` adds variables for every rank; ``device`` sets ``GPUPART_DEVICE`` (e.g.
    ``'cpu'``). ``grace`` is how long stopped ranks get between the stop signal and
    ``SIGKILL``; ``timeout`` (optional) limits the whole job. With ``prefix=False`` the
    ranks write straight to the launcher's stdout/stderr. ``stdout``/``stderr`` (binary
    streams, default ``sys.stdout``/``sys.stderr``) receive relayed output and the
    launcher's own report; ``base_env`` (default ``os.environ``) is what ranks inherit.
    A launcher runs once.
    """

    def __init__(
        self,
        command: Sequence[str],
        nprocs: int,
        *,
        grace: float = 3.0,
        prefix: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        device: str | None = None,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(command, str) or not all(isinstance(a, str) for a in command):
            raise TypeError(f"command: expected a sequence of str, found {command!r}")
        if not command:
            raise ValueError("command: expected a program and its arguments, found nothing")
        if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
            raise ValueError(f"nprocs: expected an int >= 1, found {nprocs!r}")
        if not grace >= 0:
            raise ValueError(f"grace: expected seconds >= 0, found {grace!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout: expected seconds > 0 or None, found {timeout!r}")
        self.command = list(command)
        self.nprocs = nprocs
        self.grace = float(grace)
        self.prefix = prefix
        self.timeout = timeout
        self.job_id = f"run-{secrets.token_hex(6)}"
        self._extra_env = dict(env or {})
        self._device = device
        self._base_env = base_env
        self._stdout = stdout if stdout is not None else _binary(sys.stdout)
        self._stderr = stderr if stderr is not None else _binary(sys.stderr)
        self._ranks: list[_Rank] = []
        self._sel: selectors.BaseSelector | None = None
        self._stop_requested = threading.Event()
        self._watch: _SignalWatch | None = None
        self._started = False
        self._sink_broken: set[int] = set()
        self._failures: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        self._watchdog = Watchdog()

    # -- public -----------------------------------------------------------------------------

    def run(self) -> int:
        """Start the job, relay its output, wait for it to end; return the exit status.

        Raises :class:`~gpupart.LaunchError` if a rank cannot be started (after stopping the
        ranks already started).
        """
        if self._started:
            raise LaunchError("a Launcher runs once; create a new one")
        self._started = True
        token = secrets.token_bytes(32)
        try:
            coordinator = Coordinator(
                self.nprocs, token, job_id=self.job_id, host="127.0.0.1", on_event=self._event
            )
        except OSError as exc:
            raise LaunchError(f"could not host the job coordinator on 127.0.0.1: {exc}") from exc
        with coordinator, _SignalWatch() as watch, selectors.DefaultSelector() as sel:
            self._watch, self._sel = watch, sel
            sel.register(watch.wake_r, selectors.EVENT_READ, None)
            coordinator.start()
            self._watchdog.start()
            try:
                self._spawn_all(coordinator.address, token)
                return self._supervise(coordinator, watch)
            finally:
                self._cleanup()
                self._watchdog.close()
                self._watch = self._sel = None

    def request_stop(self) -> None:
        """Ask a running job to stop as if the launcher got SIGTERM (safe from any thread)."""
        self._stop_requested.set()
        watch = self._watch
        if watch is not None:
            watch.wake()

    # -- starting ---------------------------------------------------------------------------

    def _child_env(self, rank: int, address: tuple[str, int], token: bytes) -> dict[str, str]:
        env = dict(os.environ if self._base_env is None else self._base_env)
        for name in JOB_VARIABLES:
            env.pop(name, None)
        env.update(self._extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(thread_limits(env, self.nprocs))
        if self._device is not None:
            env["GPUPART_DEVICE"] = self._device
        env.update(
            GPUPART_RANK=str(rank),
            GPUPART_SIZE=str(self.nprocs),
            GPUPART_LOCAL_RANK=str(rank),
            GPUPART_LOCAL_SIZE=str(self.nprocs),
            GPUPART_NODE_ID="0",
            GPUPART_COORDINATOR=f"{address[0]}:{address[1]}",
            GPUPART_JOB_TOKEN=token.hex(),
            GPUPART_JOB_ID=self.job_id,
        )
        return env

    def _spawn_all(self, address: tuple[str, int], token: bytes) -> None:
        preexec = _pdeathsig_setup(os.getpid())
        pipe = subprocess.PIPE if self.prefix else None
        for rank in range(self.nprocs):
            try:
                proc = subprocess.Popen(
                    self.command,
                    env=self._child_env(rank, address, token),
                    stdin=None if rank == 0 else subprocess.DEVNULL,
                    stdout=pipe,
                    stderr=pipe,
                    start_new_session=True,
                    preexec_fn=preexec,  # only prctl: see _pdeathsig_setup
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise LaunchError(
                    f"could not start rank {rank} ({' '.join(self.command)}): {exc}"
                ) from exc
            entry = _Rank(rank, proc)
            self._ranks.append(entry)
            self._watchdog.guard(proc.pid)  # its process group (start_new_session)
            logger.debug("started rank %d as pid %d", rank, proc.pid)
            if self.prefix:
                for stream, sink in ((proc.stdout, self._stdout), (proc.stderr, self._stderr)):
                    if stream is None:
                        continue
                    fd = stream.fileno()
                    os.set_blocking(fd, False)
                    entry.relays[fd] = _Relay(f"[{rank}] ".encode(), sink)
                    if self._sel is not None:
                        self._sel.register(fd, selectors.EVENT_READ, entry)

    # -- supervising ------------------------------------------------------------------------

    def _supervise(self, coordinator: Coordinator, watch: _SignalWatch) -> int:
        start = time.monotonic()
        cause: str | None = None  # why the job is being stopped, unless a rank failed
        culprit: _Rank | None = None  # the rank that failed first
        status = 0
        stopped: list[int] = []
        kill_at: float | None = None
        give_up_at: float | None = None
        stop_seen = False
        live = list(self._ranks)
        while live:
            now = time.monotonic()
            # Failures the coordinator heard of come before the failing rank's exit, and
            # before the exits of the ranks that lost it: take them first.
            for entry in self._reported_failures():
                if cause is None and culprit is None:
                    culprit = entry
                    stopped, kill_at = self._stop(live, signal.SIGTERM, now, spare=entry)
            signals = [watch.received.pop(0) for _ in range(len(watch.received))]
            if self._stop_requested.is_set() and not stop_seen:
                stop_seen = True  # counts once, like one SIGTERM
                signals.append(signal.SIGTERM)
            for signum in signals:
                if cause is None and culprit is None:
                    name = signal.Signals(signum).name
                    cause, status = f"received {name}", 128 + signum
                    stopped, kill_at = self._stop(live, signum, now)
                elif give_up_at is None:  # a second signal: no more grace
                    kill_at = now
            for entry in list(live):
                code = entry.proc.poll()
                if code is None:
                    continue
                live.remove(entry)
                entry.code = code
                what = describe_status(code)
                logger.debug("rank %d %s", entry.rank, what)
                coordinator.report_lost(entry.rank, f"its process {what}")
                if code != 0 and cause is None and culprit is None:
                    culprit = entry
                    stopped, kill_at = self._stop(live, signal.SIGTERM, now)
            overdue = self.timeout is not None and now - start > self.timeout
            if overdue and cause is None and culprit is None:
                cause, status = f"job ran past --timeout {self.timeout:g} s", _TIMEOUT_STATUS
                stopped, kill_at = self._stop(live, signal.SIGTERM, now)
            if kill_at is not None and now >= kill_at and give_up_at is None and live:
                for entry in live:
                    entry.killed = True
                    entry.signal_group(signal.SIGKILL)
                give_up_at = now + _AFTER_KILL
            if give_up_at is not None and now > give_up_at and live:
                ranks = ", ".join(str(e.rank) for e in live)
                self._report(f"ranks {ranks} did not exit after SIGKILL; giving up on them")
                break
            if not live:
                break
            wait = _TICK
            if kill_at is not None and give_up_at is None:
                wait = min(wait, max(0.0, kill_at - now))
            self._pump(wait)
        self._drain()
        self._reported_failures()  # texts that came with the last exits
        if culprit is not None:
            cause = culprit.describe()
            code = culprit.code
            status = _exit_status(code) if code else 1
            stopped = [r for r in stopped if r != culprit.rank]
        if cause is not None:
            self._report(self._summary(cause, stopped))
        return status

    def _reported_failures(self) -> list[_Rank]:
        """Ranks whose failure the coordinator reported since the last call (texts noted)."""
        found = []
        while True:
            try:
                rank, text = self._failures.get_nowait()
            except queue.Empty:
                return found
            entry = self._ranks[rank] if 0 <= rank < len(self._ranks) else None
            if entry is not None and entry.failure is None:
                entry.failure = text
                found.append(entry)

    def _stop(
        self, live: list[_Rank], signum: int, now: float, *, spare: _Rank | None = None
    ) -> tuple[list[int], float]:
        """Send ``signum`` to every live rank but ``spare``; return their ranks, when to SIGKILL.

        ``spare`` (the rank that reported its failure) gets ``SIGKILL`` only after the grace
        period: it is exiting and printing its traceback.
        """
        for entry in live:
            if entry is not spare:
                entry.signal_group(signum)
        return [e.rank for e in live], now + self.grace

    def _summary(self, cause: str, stopped: list[int]) -> str:
        text = cause
        if stopped:
            text += "; stopped rank" + ("s " if len(stopped) > 1 else " ")
            text += ", ".join(str(r) for r in stopped)
            killed = [e.rank for e in self._ranks if e.killed and e.rank in stopped]
            if killed:
                who = ", ".join(str(r) for r in killed)
                text += f" (SIGKILL after {self.grace:g} s for {who})"
        return text

    def _report(self, message: str) -> None:
        self._write(self._stderr, f"gpupart run: {message}\n".encode())

    def _event(self, kind: str, rank: int, *rest: Any) -> None:
        """Coordinator events (its service thread): a rank's reported failure wakes the loop."""
        logger.debug("coordinator: rank %d %s %s", rank, kind, rest)
        if kind == "failed":
            self._failures.put((rank, str(rest[0]) if rest else "no reason given"))
            watch = self._watch
            if watch is not None:
                watch.wake()

    # -- output -----------------------------------------------------------------------------

    def _pump(self, wait: float) -> None:
        """Relay whatever output arrives within ``wait`` seconds."""
        sel = self._sel
        if sel is None:
            time.sleep(wait)
            return
        for key, _ in sel.select(wait):
            entry = key.data
            if entry is None:
                if self._watch is not None:
                    self._watch.clear()
                continue
            self._read(entry, key.fd)
        now = time.monotonic()
        for entry in self._ranks:
            for relay in entry.relays.values():
                self._write(relay.sink, relay.due(now))

    def _read(self, entry: _Rank, fd: int) -> None:
        relay = entry.relays[fd]
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._write(relay.sink, relay.feed(data, time.monotonic()))
            return
        self._write(relay.sink, relay.due(time.monotonic(), final=True))
        self._close_pipe(entry, fd)

    def _close_pipe(self, entry: _Rank, fd: int) -> None:
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(fd)
        del entry.relays[fd]
        for stream in (entry.proc.stdout, entry.proc.stderr):
            if stream is not None and not stream.closed and stream.fileno() == fd:
                stream.close()

    def _drain(self) -> None:
        """Relay the ranks' last output (until every pipe closes, at most ``_DRAIN`` s)."""
        deadline = time.monotonic() + _DRAIN
        while any(e.relays for e in self._ranks) and time.monotonic() < deadline:
            self._pump(min(_TICK, max(0.0, deadline - time.monotonic())))
        for entry in self._ranks:  # a helper process may still hold a pipe open
            for fd in list(entry.relays):
                relay = entry.relays[fd]
                self._write(relay.sink, relay.due(time.monotonic(), final=True))
                self._close_pipe(entry, fd)

    def _write(self, sink: IO[bytes], data: bytes) -> None:
        if not data or id(sink) in self._sink_broken:
            return
        try:
            sink.write(data)
            sink.flush()
        except (BrokenPipeError, ValueError):  # reader gone, or stream closed
            self._sink_broken.add(id(sink))

    # -- cleanup ----------------------------------------------------------------------------

    def _cleanup(self) -> None:
        """Leave nothing behind: kill ranks still running (after an error), reap, close.

        What ranks left running in their process groups the watchdog kills, next.
        """
        for entry in self._ranks:
            if entry.proc.poll() is None:
                entry.signal_group(signal.SIGKILL)
        for entry in self._ranks:
            with contextlib.suppress(subprocess.TimeoutExpired):
                entry.proc.wait(timeout=_AFTER_KILL)
            for fd in list(entry.relays):
                self._close_pipe(entry, fd)


def _binary(stream: Any) -> IO[bytes]:
    """Return the binary buffer under a text stream, or an adapter when it has none."""
    buffer = getattr(stream, "buffer", None)
    return buffer if buffer is not None else _TextSink(stream)


class _TextSink:
    """Write bytes to a text-only stream (e.g. a replaced ``sys.stdout``)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return self.stream.write(data.decode(errors="replace"))

    def flush(self) -> None:
        self.stream.flush()
