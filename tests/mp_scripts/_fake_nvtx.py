"""A stand-in for the ``nvtx`` package that records every range pushed and popped.

:func:`install` puts it in ``sys.modules`` as ``nvtx`` (before gpupart first looks for
``nvtx``: :mod:`gpupart.trace` decides once per process) and returns the recording domain.
Its ``get_domain`` hands out a real-looking domain, as ``nvtx`` does when a profiler is
attached.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any


class Domain:
    """Records ``(thread id, name)`` for a push and ``(thread id, None)`` for a pop."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.events: list[tuple[int, str | None]] = []
        self._lock = threading.Lock()

    def get_event_attributes(self, message: Any = None, **_: Any) -> Any:
        return message

    def push_range(self, attributes: Any) -> None:
        with self._lock:
            self.events.append((threading.get_ident(), attributes))

    def pop_range(self) -> None:
        with self._lock:
            self.events.append((threading.get_ident(), None))

    def names(self) -> list[str]:
        """Every range name pushed so far."""
        return sorted({name for _, name in self.events if name is not None})

    def unbalanced(self) -> list[str]:
        """Problems: a pop without a push, or ranges still open, per thread."""
        stacks: dict[int, list[str]] = {}
        problems = []
        for thread, name in list(self.events):
            stack = stacks.setdefault(thread, [])
            if name is not None:
                stack.append(name)
            elif stack:
                stack.pop()
            else:
                problems.append(f"thread {thread}: a pop without a push")
        problems += [f"thread {t}: {s} still open" for t, s in stacks.items() if s]
        return problems


def module() -> tuple[types.ModuleType, Domain]:
    """A fake ``nvtx`` module and the domain it hands out for ``'gpupart'``."""
    fake = types.ModuleType("nvtx")
    domain = Domain("gpupart")
    fake.Domain = Domain  # type: ignore[attr-defined]
    fake.get_domain = lambda name=None: domain if name == "gpupart" else Domain(name)  # type: ignore[attr-defined]
    return fake, domain


def install() -> Domain:
    """Make ``import nvtx`` give the fake module; return its ``gpupart`` domain."""
    fake, domain = module()
    sys.modules["nvtx"] = fake
    return domain
