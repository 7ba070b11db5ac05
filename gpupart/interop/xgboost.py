"""XGBoost trained on gpupart's tiles: one XGBoost worker per rank, each on its own rows.

XGBoost's distributed training is SPMD: every worker holds a ``DMatrix`` of its rows, and
the workers merge quantile sketches and gradient histograms through XGBoost's collective
(Rabit), which a tracker coordinates. :func:`communicator` sets that up from the gpupart
job: rank 0 starts ``xgboost.tracker.RabitTracker`` (on the address it reaches the job
by, ``sortby='task'``), its worker arguments travel to every rank by gpupart's
``broadcast``, and each rank enters ``xgboost.collective.CommunicatorContext`` with task id
``gpupart-<rank>`` so that XGBoost's rank ``r`` is gpupart's rank ``r``.
:func:`local_dmatrix` builds each rank's ``QuantileDMatrix`` (or ``DMatrix``) from its row
blocks of a DistArray/DistFrame ``X`` and the rows of ``y`` lined up with them (the block
itself, no copy, when a rank holds one; CuPy tiles stay on the GPU). :func:`train` does
both and returns the ``Booster``, the same on every rank; :func:`predict` predicts each
rank's rows.

A failure to start the tracker is raised on every rank; XGBoost's own waits are bounded by
``timeout`` (``dmlc_timeout`` for its collectives, the tracker's start and shutdown).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from gpupart.containers.creation import runtime_or_init
from gpupart.containers.darray import DistArray
from gpupart.errors import InteropError
from gpupart.interop._local import local_rows

__all__ = ["communicator", "local_dmatrix", "predict", "train"]


@contextlib.contextmanager
def communicator(
    *, host_ip: str | None = None, timeout: float | None = None
) -> Iterator[dict[str, Any]]:
    """Join XGBoost's collective, one worker per rank, rank ``r`` as worker ``r`` (collective).

    Inside the block XGBoost trains distributed (``xgboost.train`` on each rank's
    ``local_dmatrix``). ``host_ip``: where rank 0's tracker listens (default: the address
    rank 0 reaches the job by). ``timeout`` (seconds, default the runtime's collective
    timeout) bounds XGBoost's collectives and the tracker's start and shutdown. Yields the
    worker arguments. Raises :class:`~gpupart.InteropError` on every rank if the tracker
    cannot start.
    """
    from xgboost import collective
    from xgboost.tracker import RabitTracker

    rt = runtime_or_init()
    limit = float(rt.options.timeout if timeout is None else timeout)
    if not limit > 0:
        raise ValueError(f"timeout: expected seconds > 0, found {timeout!r}")
    seconds = max(1, math.ceil(limit))
    tracker, message, failure = None, None, None
    if rt.rank == 0:
        host = host_ip or rt.location.ip or "127.0.0.1"
        try:
            tracker = RabitTracker(n_workers=rt.size, host_ip=host, sortby="task", timeout=seconds)
            tracker.start()
            message = ("ok", tracker.worker_args())
        except Exception as exc:  # every rank must hear of it, or they wait for the tracker
            failure = exc
            message = ("error", f"{type(exc).__name__}: {exc} (host_ip={host!r})")
    kind, payload = rt.broadcast(message, root=0)
    if kind == "error":
        if tracker is not None:
            tracker.free()
        raise InteropError(
            f"XGBoost: expected rank 0 to start a RabitTracker for {rt.size} workers, it"
            f" failed: {payload}"
        ) from failure
    worker = {**payload, "dmlc_task_id": f"gpupart-{rt.rank:09d}", "dmlc_timeout": seconds}
    failed = False
    try:
        with collective.CommunicatorContext(**worker):
            yield worker
    except BaseException:
        failed = True
        raise
    finally:
        if tracker is not None:
            _shut_down(tracker, seconds, failed)


def _shut_down(tracker: Any, seconds: int, failed: bool) -> None:
    """Wait for rank 0's tracker to see every worker leave, then free it."""
    try:
        tracker.wait_for(seconds)
    except Exception as exc:
        if not failed:  # a failure in the block is the error to report
            raise InteropError(
                f"XGBoost: the tracker did not see every worker finish within {seconds} s"
            ) from exc
    finally:
        tracker.free()


def local_dmatrix(
    X: Any,
    y: Any = None,
    *,
    weight: Any = None,
    quantile: bool = True,
    ref: Any = None,
    **kwargs: Any,
) -> Any:
    """Return this rank's rows of ``X`` (and ``y``, ``weight``) as an XGBoost matrix.

    Collective; call it inside :func:`communicator` on every rank (XGBoost merges the
    workers' sketches while building it). ``X``: a 2-d DistArray/DistFrame (or a
    ``__partitioned__`` producer), NaN read as missing; ``y``/``weight`` any tiling, their
    rows fetched to line up with this rank's rows of ``X``. ``quantile=True`` builds a
    ``QuantileDMatrix`` (``ref``: the training matrix, for evaluation sets), else a
    ``DMatrix``; ``kwargs`` go to it. A frame's columns become feature names.
    """
    import xgboost

    rows = local_rows(X, finite=False, y=y, weight=weight)
    options = dict(kwargs)
    options.setdefault("feature_names", rows.feature_names)
    if quantile:
        return xgboost.QuantileDMatrix(
            rows.X, label=rows.targets["y"], weight=rows.targets["weight"], ref=ref, **options
        )
    if ref is not None:
        raise ValueError("ref: only a QuantileDMatrix takes a reference (quantile=True)")
    return xgboost.DMatrix(
        rows.X, label=rows.targets["y"], weight=rows.targets["weight"], **options
    )


def train(
    params: Mapping[str, Any],
    X: Any,
    y: Any,
    *,
    weight: Any = None,
    num_boost_round: int = 10,
    evals: Sequence[tuple[Any, Any, str]] = (),
    quantile: bool = True,
    host_ip: str | None = None,
    timeout: float | None = None,
    dmatrix_kwargs: Mapping[str, Any] | None = None,
    **train_kwargs: Any,
) -> Any:
    """Train a Booster on ``X``, ``y`` with every rank as an XGBoost worker (collective).

    Each rank's matrix holds its rows only (:func:`local_dmatrix`); ``evals`` are
    ``(X, y, name)`` triples made the same way; ``train_kwargs`` go to ``xgboost.train``
    (``evals_result``, ``obj``, ...); ``params['max_bin']`` is the quantile matrices' too.
    Returns the ``xgboost.Booster``, the same on every rank. ``host_ip`` and ``timeout``
    as for :func:`communicator`.
    """
    import xgboost

    extra = dict(dmatrix_kwargs or {})
    if quantile and "max_bin" in params:  # the matrices' bins must be the Booster's
        extra.setdefault("max_bin", params["max_bin"])
    with communicator(host_ip=host_ip, timeout=timeout):
        dtrain = local_dmatrix(X, y, weight=weight, quantile=quantile, **extra)
        watch = [
            (
                local_dmatrix(ex, ey, quantile=quantile, ref=dtrain if quantile else None, **extra),
                name,
            )
            for ex, ey, name in evals
        ]
        return xgboost.train(
            dict(params), dtrain, num_boost_round=num_boost_round, evals=watch, **train_kwargs
        )


def predict(booster: Any, X: Any, **kwargs: Any) -> DistArray:
    """Predict each rank's rows of ``X`` with ``booster``: a DistArray lined up with ``X``.

    Collective only for ``X``'s checks; each rank predicts its own blocks with
    ``booster.inplace_predict`` (``kwargs`` go to it; CuPy blocks stay on the GPU).
    """
    from gpupart.ml._data import check_X, rows_like

    rows = check_X(X, finite=False)
    pieces = [booster.inplace_predict(block, **kwargs) for _, block in rows.blocks]
    return rows_like(rows, pieces, np.float32)
