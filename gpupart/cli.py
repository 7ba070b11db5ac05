"""The ``gpupart`` command line: ``gpupart run [-n N] [options] -- command ...``, ``gpupart info``.

Also reachable as ``python -m gpupart``. Subcommands parse their arguments here and hand the
work to a module of their own (``run`` to :class:`gpupart.job.launcher.Launcher`, ``info``
to :mod:`gpupart.info`), so that ``gpupart --help`` stays fast. With no subcommand,
``gpupart`` prints its help to stdout and exits 0, as ``--help`` does.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from gpupart._version import __version__

__all__ = ["build_parser", "main"]

_RUN_EPILOG = """\
Each rank gets GPUPART_RANK, GPUPART_SIZE, GPUPART_LOCAL_RANK, GPUPART_LOCAL_SIZE,
GPUPART_COORDINATOR, GPUPART_JOB_TOKEN and GPUPART_JOB_ID. If a rank fails, the others are
stopped (SIGTERM, then SIGKILL after --grace) and gpupart run exits with the failing rank's
status (128+N when killed by signal N); 124 after --timeout; 130/143 on SIGINT/SIGTERM.

Without -n, one rank per GPU this process sees (after CUDA_VISIBLE_DEVICES), or 1 on a
host without a GPU or with --cpu.

example: gpupart run -n 4 -- python train.py --epochs 3
"""


def _count(text: str) -> int:
    if re.fullmatch(r"\s*\d+\s*", text) is None or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text!r}")
    return int(text)


def _seconds(minimum_exclusive: bool) -> type:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = value > 0 if minimum_exclusive else value >= 0
        if not ok or value == float("inf"):
            bound = "> 0" if minimum_exclusive else ">= 0"
            raise argparse.ArgumentTypeError(f"expected seconds {bound}, found {text!r}")
        return value

    return parse  # type: ignore[return-value]


def _assignment(text: str) -> tuple[str, str]:
    from gpupart.job.launcher import JOB_VARIABLES

    key, sep, value = text.partition("=")
    if not sep or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is None:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {text!r}")
    if key in JOB_VARIABLES:
        raise argparse.ArgumentTypeError(f"{key} is set by gpupart run for each rank")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``gpupart`` command line."""
    parser = argparse.ArgumentParser(
        prog="gpupart",
        description="gpupart: GPU-first distributed arrays and dataframes.",
    )
    parser.add_argument("--version", action="version", version=f"gpupart {__version__}")
    commands = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a command as N ranks of a gpupart job on this machine",
        usage="gpupart run [-n N] [options] [--] COMMAND [ARG ...]",
        description="Run COMMAND as N ranks of a gpupart job on this machine.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "-n",
        "--nprocs",
        type=_count,
        default=None,
        metavar="N",
        help="number of ranks (default: one per GPU this process sees, 1 without a GPU or"
        " with --cpu)",
    )
    run.add_argument(
        "--grace",
        type=_seconds(False),
        default=3.0,
        metavar="SECONDS",
        help="time stopped ranks get before SIGKILL (default: 3)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds(True),
        default=None,
        metavar="SECONDS",
        help="wall-clock limit for the whole job; past it, stop all ranks and exit 124",
    )
    run.add_argument(
        "--env",
        type=_assignment,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a variable for every rank (repeatable)",
    )
    run.add_argument(
        "--cpu", action="store_true", help="run on CPU (sets GPUPART_DEVICE=cpu for every rank)"
    )
    run.add_argument(
        "--no-prefix",
        dest="prefix",
        action="store_false",
        help="do not prefix output lines with [rank]; ranks write to the terminal directly",
    )
    run.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the program each rank runs, with its arguments",
    )
    run.set_defaults(handler=_run, parser=run)
    info = commands.add_parser(
        "info",
        help="show this host's GPUs, NUMA nodes, InfiniBand ports and UCX, and known traps",
        description="Show this host as a gpupart job sees it: GPUs (PCI bus id, UUID, NUMA"
        " node, memory, NVLinks, P2P matrix), CPU affinity, InfiniBand ports, the UCX in use"
        " and its transports, the container and Slurm job; then warnings for configurations"
        " known to break or slow down a job.",
    )
    info.add_argument("--json", action="store_true", help="print the report as one JSON object")
    info.set_defaults(handler=_info, parser=info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gpupart`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.subcommand is None:  # a bare `gpupart`: show what it can do
        parser.print_help()
        return 0
    return args.handler(args.parser, args)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from gpupart.errors import LaunchError
    from gpupart.job.launcher import Launcher

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("missing the command to run, e.g. gpupart run -n 2 -- python script.py")
    nprocs = args.nprocs
    if nprocs is None:
        from gpupart.info import default_nprocs

        nprocs = 1 if args.cpu else default_nprocs()
    launcher = Launcher(
        command,
        nprocs,
        grace=args.grace,
        prefix=args.prefix,
        env=dict(args.env),
        timeout=args.timeout,
        device="cpu" if args.cpu else None,
    )
    try:
        return launcher.run()
    except LaunchError as exc:
        print(f"gpupart run: error: {exc}", file=sys.stderr, flush=True)
        cause = exc.__cause__
        if isinstance(cause, FileNotFoundError):
            return 127
        if isinstance(cause, PermissionError):
            return 126
        return 1


def _info(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import json

    from gpupart.info import collect, render_text

    report = collect()
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        render_text(report, sys.stdout)
    return 0
