"""scikit-learn-intelex's distributed algorithms fed with each rank's rows of gpupart's data.

oneDAL's distributed algorithms are SPMD over MPI: every rank passes its own rows, the
library combines the partial results. In a job started by ``mpiexec`` gpupart's ranks are
MPI's, so :func:`local_data` hands each rank its rows of ``X`` (its tile, no copy, when it
holds one block) and the rows of ``y``/weights lined up with them.

Two front ends reach those algorithms:

* ``sklearnex.spmd`` estimators (``LinearRegression``, ``KMeans``, ``BasicStatistics``,
  ...) run on SYCL GPUs only: they need the SPMD backend (``onedal._onedal_py_spmd_dpc``,
  in ``scikit-learn-intelex-gpu``, with Intel's DPC++ runtime and an MPICH-ABI MPI) and a
  ``dpctl`` queue on a GPU. The CPU wheel has no SPMD backend; there ``fit`` falls back to
  a host call that returns nothing and fails (``AttributeError: 'NoneType' object has no
  attribute 'model'``).
* daal4py's distributed mode runs on CPUs: :func:`start_daal4py` starts its engine and
  checks that its process ids are gpupart's ranks, then ``daal4py.<algorithm>(...,
  distributed=True).compute(X_local, ...)`` on every rank (linear and ridge regression,
  k-means, moments, covariance, PCA, ...).

oneDAL refuses a rank with no rows (``Number of rows in numeric table is incorrect``) and
the other ranks then wait for it forever: :func:`local_data` gives every rank rows first.
"""

from __future__ import annotations

from typing import Any

from gpupart.containers.creation import runtime_or_init
from gpupart.errors import InteropError
from gpupart.interop._local import LocalRows, local_rows

__all__ = ["local_data", "start_daal4py"]


def local_data(X: Any, y: Any = None, *, sample_weight: Any = None, min_rows: int = 1) -> LocalRows:
    """Return this rank's rows of ``X`` and the rows of ``y``/``sample_weight`` lined up.

    Collective. ``X``: a 2-d DistArray/DistFrame (or a ``__partitioned__`` producer),
    float64 unless float32, NaN refused; the rows are the rank's tile (no copy) when it
    holds one block. When a rank would have fewer than ``min_rows`` rows, ``X`` is first
    rebalanced over the ranks (a copy); with fewer rows than ranks allow, every rank raises
    ``ValueError``. ``targets['y']`` and ``targets['sample_weight']`` hold the matching rows.
    """
    from gpupart.ml._data import check_X

    rt = runtime_or_init()
    rows = check_X(X)
    counts = rt.allgather(sum(int(b.shape[0]) for _, b in rows.blocks))
    if min(counts) < min_rows:
        if rows.n_samples < min_rows * rt.size:
            raise ValueError(
                f"X: expected at least {min_rows} row(s) for each of {rt.size} ranks, found"
                f" {rows.n_samples} rows"
            )
        X = rows.array.rebalance()
    return local_rows(X, y=y, sample_weight=sample_weight)


def start_daal4py() -> Any:
    """Start daal4py's distributed engine and check its processes are the job's ranks.

    Collective. Returns gpupart's runtime; raises :class:`~gpupart.InteropError` on every
    rank when daal4py numbers the processes differently (a job not started by ``mpiexec``:
    daal4py then sees one process). ``daal4py.daalfini()`` stops the engine.
    """
    import daal4py

    rt = runtime_or_init()
    daal4py.daalinit()
    seen = rt.allgather((int(daal4py.my_procid()), int(daal4py.num_procs())))
    wrong = [
        f"gpupart rank {r} is daal4py process {p} of {n}"
        for r, (p, n) in enumerate(seen)
        if (p, n) != (r, rt.size)
    ]
    if wrong:
        raise InteropError(
            f"daal4py: expected its processes to be the job's {rt.size} ranks, found"
            f" {'; '.join(wrong)} (start the job with mpiexec)"
        )
    return rt
