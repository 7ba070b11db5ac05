"""What the interop rank scripts share: the case registry, the main loop, whole-line records.

Scripts run under ``mpiexec`` (or ``gpupart run``) and report as the other rank scripts do
(``@plan``, ``@case``, ``@done``, see ``tests/conftest.py``); each record is written with
one ``write`` so that Hydra's ``-prepend-rank`` prefixes it whole (``print`` writes the line
and its newline apart, and Hydra then prefixes the lone newline).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))

Case = Callable[[Any], Any]


def emit(kind: str, **data: Any) -> None:
    """Write one ``@kind {json}`` record line in one piece."""
    sys.stdout.write(f"@{kind} {json.dumps(data, sort_keys=True)}\n")
    sys.stdout.flush()


class Cases:
    """Cases registered with ``@cases.case``, run in order by :meth:`run` on every rank."""

    def __init__(self) -> None:
        self.all: list[Case] = []

    def case(self, fn: Case) -> Case:
        """Register ``fn(rt)`` as a case."""
        self.all.append(fn)
        return fn

    def run(self, rt: Any) -> None:
        """Run every case (a barrier after each), reporting as the test drivers expect."""
        emit("plan", rank=rt.rank, cases=[fn.__name__ for fn in self.all])
        for fn in self.all:
            extra = fn(rt) or {}
            rt.barrier()
            emit("case", name=fn.__name__, rank=rt.rank, **extra)
        emit("done", rank=rt.rank, size=rt.size)


def recording(spec: dict) -> list:
    """Wrap ``spec['get']`` so that everything it returns is kept (to check for copies)."""
    got: list = []
    inner = spec["get"]

    def get(refs):
        out = inner(refs)
        got.extend(out if isinstance(refs, list) else [out])
        return out

    spec["get"] = get
    return got
