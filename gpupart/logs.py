"""Rank-prefixed log records for the ``gpupart`` loggers, for as long as a runtime is open.

Every ``gpupart.*`` logger's records get ``[rank N] `` in front of their message and a
``rank`` attribute, whichever handler shows them (the application's, or Python's last resort
for warnings), so lines from different ranks can be told apart under ``srun``, ``mpiexec``
or in one log file. (``gpupart run`` also puts ``[N] `` in front of every output line.)

``GPUPART_LOG_LEVEL`` (or ``gpupart.init(log_level=...)``) sets the level of the ``gpupart``
logger; when the application has configured no logging, a handler on stderr is added so
that records below warnings show too. :meth:`RankLogging.close` undoes all of it: no filter,
handler or level is left behind.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["RankLogging"]

ROOT = "gpupart"


class _RankFilter(logging.Filter):
    """Prefixes ``[rank N] `` to a record's message and sets ``record.rank``."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.prefix = f"[rank {rank}] "

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank  # a record passes the filters of one logger only
        record.msg = self.prefix + str(record.msg)
        return True


class RankLogging:
    """The rank prefix (and ``log_level``) on the ``gpupart`` loggers; one per runtime.

    Logger filters only see records made by their own logger, so the filter goes on every
    ``gpupart.*`` logger that exists; :meth:`attach` again after importing more modules.
    """

    def __init__(self, rank: int, level: str | None = None) -> None:
        self._filter = _RankFilter(rank)
        self._loggers: list[logging.Logger] = []
        self._root = logging.getLogger(ROOT)
        self._old_level: int | None = None
        self._handler: logging.Handler | None = None
        if level is not None:
            self._old_level = self._root.level
            self._root.setLevel(level)
            if not self._root.handlers and not logging.getLogger().handlers:
                self._handler = logging.StreamHandler(sys.stderr)
                self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
                self._root.addHandler(self._handler)
        self.attach()

    def attach(self) -> None:
        """Put the rank filter on every ``gpupart`` logger that does not have it yet."""
        manager = logging.Logger.manager
        for name, logger in list(manager.loggerDict.items()):
            ours = name == ROOT or name.startswith(ROOT + ".")
            if ours and isinstance(logger, logging.Logger) and self._filter not in logger.filters:
                logger.addFilter(self._filter)
                self._loggers.append(logger)
        if self._filter not in self._root.filters:
            self._root.addFilter(self._filter)
            self._loggers.append(self._root)

    def close(self) -> None:
        """Remove the filter, the handler and the level set here; idempotent."""
        for logger in self._loggers:
            logger.removeFilter(self._filter)
        self._loggers.clear()
        if self._handler is not None:
            self._root.removeHandler(self._handler)
            self._handler = None
        if self._old_level is not None:
            self._root.setLevel(self._old_level)
            self._old_level = None
