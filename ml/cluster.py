"""KMeans: Lloyd's algorithm run where the rows live, one all-reduce per iteration.

Each rank assigns the rows of its blocks to the nearest centre on the blocks' device
(``||c||^2 - 2 x.c`` in chunks of rows, so the distance matrix stays small) and sums the rows,
weights and inertia per centre; the sums, weights, inertia and the number of changed labels
travel in ONE all-reduce per iteration, after which every rank computes the same new centres
and takes the same decision to stop (scikit-learn's rule: labels unchanged, or the squared
centre shift below ``tol`` times the mean feature variance). The data are centred on their
mean first, as scikit-learn does, so a given initial array of centres reproduces its result.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
from gpupart.ml._data import CHUNK_ELEMENTS, Rows, check_y, rows_like
from gpupart.ml._reduce import allreduce_host, local_sum, to_host
from gpupart.ml._sklearn import Interval, StrOptions
from gpupart.ml.base import OUTPUT_TYPES, Estimator
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

__all__ = ["KMeans"]

#: k-means||: rounds of oversampling and points drawn per round (times n_clusters)
PARALLEL_ROUNDS = 5
OVERSAMPLING = 2.0


class _Data:
    """Hold this rank's rows, weights and the data's mean, with chunked iteration over them."""

    def __init__(self, rows: Rows, weights: list[Any], mean: np.ndarray) -> None:
        self.rows = rows
        self.xp = rows.array.xp
        self.dtype = rows.dtype
        self.blocks = [b for _, b in rows.blocks]
        self.weights = weights
        self.starts = rows.starts()
        self.mean = self.xp.asarray(mean.astype(self.dtype))

    def chunks(self, width: int) -> Iterator[tuple[int, slice, Any, Any]]:
        """``(block index, rows, centred rows, weights)`` in chunks of bounded size."""
        step = max(1, CHUNK_ELEMENTS // max(width, self.rows.n_features, 1))
        for i, block in enumerate(self.blocks):
            for lo in range(0, block.shape[0], step):
                sl = slice(lo, min(lo + step, block.shape[0]))
                yield i, sl, block[sl] - self.mean, self.weights[i][sl]


def _nearest(xp: Any, xc: Any, centres: Any, c_norm: Any) -> Any:
    """Index of the nearest centre per row (scikit-learn's ``||c||^2 - 2 x.c``, first minimum)."""
    scores = xc @ centres.T
    scores *= -2
    scores += c_norm
    return xp.argmin(scores, axis=1).astype(xp.int32)


def _sq_dist(xp: Any, xc: Any, points: Any) -> Any:
    """Squared distances of the rows to ``points`` (rows x points), clipped at zero."""
    d = xc @ points.T
    d *= -2
    d += (xc * xc).sum(axis=1)[:, None]
    d += (points * points).sum(axis=1)[None, :]
    return xp.maximum(d, 0)


class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, Estimator):
    """K-means clustering of distributed rows (Lloyd's algorithm; see ``docs/ml.md``).

    ``init``: ``'k-means++'`` (greedy D^2 sampling, candidates drawn on each rank and one
    chosen through an all-gather), ``'k-means||'`` (Bahmani et al.'s oversampling, then
    weighted k-means++ on the candidates), ``'random'`` or an array of centres (then the
    result equals scikit-learn's). ``n_init`` defaults to 1 (scikit-learn: ``'auto'``,
    also accepted). Results for a given ``random_state`` are reproducible at a given job
    size and layout, not across them.
    """

    _fitted_attributes = ("cluster_centers_", "labels_", "inertia_", "n_iter_")
    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++", "k-means||", "random"}), "array-like"],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "output_type": [StrOptions(set(OUTPUT_TYPES))],
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | Any = "k-means++",
        n_init: int | str = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: Any = None,
        output_type: str = "input",
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.output_type = output_type

    # -- fit ----------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Cluster ``X`` (collective); ``sample_weight`` is lined up with its rows."""
        self._validate_params()
        rows = self._fit_rows(X)
        rt, k, n = rows.runtime, self.n_clusters, rows.n_samples
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        init = self._init_array(rows)
        n_init = self._n_runs(init is not None)
        weights = _weights(sample_weight, rows)
        xp, m = rows.array.xp, rows.n_features
        nonzero = local_sum(xp, [(w != 0).sum() for w in weights], ())
        sums = allreduce_host(
            rt, [local_sum(xp, [b.sum(axis=0) for _, b in rows.blocks], (m,)), nonzero]
        )
        if sums[-1] == 0:
            raise ValueError("Sample weights must contain at least one non-zero number.")
        mean = sums[:m] / n
        data = _Data(rows, weights, mean)
        sq = [(xc * xc).sum(axis=0) for _, _, xc, _ in data.chunks(1)]
        var = allreduce_host(rt, [local_sum(xp, sq, (m,))]) / n
        tol = float(np.mean(var) * self.tol) if self.tol else 0.0
        seed = rt.broadcast(
            int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            if rt.rank == 0
            else None
        )
        shared = np.random.default_rng(seed)
        local = np.random.default_rng([seed, rt.rank, 1])
        best = None
        for _ in range(n_init):
            if init is not None:
                centres = init - mean.astype(rows.dtype)
            else:
                centres = _Init(data, k, shared, local).run(self.init)
            run = _lloyd(data, centres.astype(rows.dtype), self.max_iter, tol)
            if best is None or run[1] < best[1]:
                best = run
        labels, inertia, centres, n_iter, counts = best
        distinct = int(np.count_nonzero(counts))
        if distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k})."
                " Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = (centres + mean.astype(rows.dtype)).astype(rows.dtype)
        self._n_features_out = k
        self.labels_ = self._output(rows_like(rows, labels, np.int32), rows)
        self.inertia_ = float(inertia)
        self.n_iter_ = n_iter
        return self

    def _init_array(self, rows: Rows) -> np.ndarray | None:
        """Return the initial centres given as an array, checked against ``X``; else None."""
        if isinstance(self.init, str):
            return None
        centres = np.array(to_host(self.init), dtype=rows.dtype, copy=True)
        if centres.ndim != 2 or centres.shape[0] != self.n_clusters:
            raise ValueError(
                f"The shape of the initial centers {centres.shape} does not match the number"
                f" of clusters {self.n_clusters}."
            )
        if centres.shape[1] != rows.n_features:
            raise ValueError(
                f"The shape of the initial centers {centres.shape} does not match the number"
                f" of features of the data {rows.n_features}."
            )
        return centres

    def _n_runs(self, given: bool) -> int:
        runs = self.n_init
        if runs == "auto":
            runs = 10 if self.init == "random" else 1
        if given and runs != 1:
            warnings.warn(
                "Explicit initial center position passed: performing only one init in"
                f" {type(self).__name__} instead of n_init={runs}.",
                RuntimeWarning,
                stacklevel=3,
            )
            runs = 1
        return int(runs)

    # -- using a fitted model -----------------------------------------------------------------

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre of each row of ``X``, lined up with ``X``."""
        rows = self._rows_for(X)
        labels, _ = self._labels_inertia(rows, None)
        return self._output(rows_like(rows, labels, np.int32), rows)

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit and return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X: Any) -> Any:
        """Euclidean distance of each row of ``X`` to every centre (rows x n_clusters)."""
        rows = self._rows_for(X)
        xp = rows.array.xp
        dtype = np.result_type(rows.dtype, self.cluster_centers_.dtype)
        centres = xp.asarray(self.cluster_centers_.astype(np.float64))
        step = max(1, CHUNK_ELEMENTS // max(centres.shape[0], rows.n_features))
        pieces = []
        for _, block in rows.blocks:  # in float64, as scikit-learn's euclidean_distances
            out = xp.empty((block.shape[0], centres.shape[0]), dtype=dtype)
            for lo in range(0, block.shape[0], step):
                chunk = block[lo : lo + step].astype(np.float64)
                out[lo : lo + step] = xp.sqrt(_sq_dist(xp, chunk, centres))
            pieces.append(out)
        return self._output(rows_like(rows, pieces, dtype), rows)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then return the distances of ``X`` to the centres."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the (weighted) inertia of ``X`` against the centres."""
        rows = self._rows_for(X)
        _, inertia = self._labels_inertia(rows, _weights(sample_weight, rows))
        return -inertia

    def _labels_inertia(self, rows: Rows, weights: list[Any] | None) -> tuple[list[Any], float]:
        """Nearest centres (uncentred, as scikit-learn's predict) and, with weights, inertia."""
        xp = rows.array.xp
        data = _Data(rows, weights or _weights(None, rows), np.zeros(rows.n_features))
        centres = xp.asarray(self.cluster_centers_.astype(rows.dtype))
        c_norm = (centres * centres).sum(axis=1)
        labels = [xp.empty(b.shape[0], dtype=xp.int32) for b in data.blocks]
        inertia = []
        for i, sl, xc, w in data.chunks(self.n_clusters):
            lab = _nearest(xp, xc, centres, c_norm)
            labels[i][sl] = lab
            if weights is not None:
                diff = xc - centres[lab]
                inertia.append((w * (diff * diff).sum(axis=1)).sum())
        if weights is None:
            return labels, 0.0
        return labels, float(allreduce_host(rows.runtime, [sum(inertia, start=0.0)])[0])


def _weights(sample_weight: Any, rows: Rows) -> list[Any]:
    """One weight vector per block of ``X`` (ones when None), in ``X``'s dtype."""
    xp = rows.array.xp
    if sample_weight is None or np.isscalar(sample_weight):
        value = 1.0 if sample_weight is None else float(sample_weight)
        return [xp.full(b.shape[0], value, dtype=rows.dtype) for _, b in rows.blocks]
    return check_y(sample_weight, rows, what="sample_weight", dtype=rows.dtype)


# -- Lloyd ------------------------------------------------------------------------------------


def _lloyd(
    data: _Data, centres: np.ndarray, max_iter: int, tol: float
) -> tuple[list[Any], float, np.ndarray, int, np.ndarray]:
    """One k-means run from ``centres`` (centred coordinates), as scikit-learn's Lloyd.

    Returns per-block labels, the inertia, the centres, the number of iterations and the
    number of rows per centre.
    """
    xp, dtype = data.xp, data.dtype
    k, m = centres.shape
    rt = data.rows.runtime
    labels = [xp.full(b.shape[0], -1, dtype=xp.int32) for b in data.blocks]
    strict = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        new_labels, dist, parts = _step(data, centres, labels)
        total = allreduce_host(rt, parts)
        sums = total[: k * m].reshape(k, m)
        weight = total[k * m : k * m + k]
        changed = total[-1]
        if not weight.all():
            sums, weight = _relocate(data, new_labels, dist, sums, weight)
        labels = new_labels
        new = sums.astype(dtype)
        filled = weight > 0
        new[filled] *= (1.0 / weight[filled]).astype(dtype)[:, None]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if changed == 0:
            strict = True
            break
        if shift <= tol:
            break
    labels, inertia, counts = _finish(data, centres, labels, relabel=not strict)
    return labels, inertia, centres, n_iter, counts


def _step(data: _Data, centres: np.ndarray, labels: list[Any]) -> tuple[list, list, list]:
    """Assign every row; per-centre weighted sums, weights, inertia, number of changed labels."""
    xp, dtype = data.xp, data.dtype
    k, m = centres.shape
    c = xp.asarray(centres)
    c_norm = (c * c).sum(axis=1)
    ids = xp.arange(k, dtype=xp.int32)
    sums = xp.zeros((k, m), dtype=dtype)
    weight = xp.zeros(k, dtype=dtype)
    inertia = xp.zeros((), dtype=dtype)
    changed = xp.zeros((), dtype=xp.int64)
    new_labels = [xp.empty_like(lab) for lab in labels]
    dist = [xp.empty(b.shape[0], dtype=dtype) for b in data.blocks]
    for i, sl, xc, w in data.chunks(k):
        lab = _nearest(xp, xc, c, c_norm)
        new_labels[i][sl] = lab
        changed += (lab != labels[i][sl]).sum()
        diff = xc - c[lab]
        d2 = (diff * diff).sum(axis=1)
        dist[i][sl] = d2
        inertia += (w * d2).sum()
        onehot = (lab[:, None] == ids[None, :]).astype(dtype) * w[:, None]
        sums += onehot.T @ xc
        weight += onehot.sum(axis=0)
    return new_labels, dist, [sums, weight, inertia, changed]


def _relocate(
    data: _Data, labels: list[Any], dist: list[Any], sums: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move each empty centre to one of the rows farthest from their centres (scikit-learn's).

    Each rank offers its farthest rows (one all-gather); every rank takes the same ones,
    farthest first (ties: lowest global row), and moves them as scikit-learn does.
    """
    xp = data.xp
    empty = np.flatnonzero(weight == 0)
    offers = []
    for i, d in enumerate(dist):
        take = min(empty.size, d.shape[0])
        if take == 0:
            continue
        idx = to_host(xp.argsort(-d)[:take])
        block_rows = to_host(data.blocks[i][xp.asarray(idx)] - data.mean)
        values = to_host(d)[idx]
        w = to_host(data.weights[i])[idx]
        lab = to_host(labels[i])[idx]
        for j, row in enumerate(idx):
            offers.append(
                (-float(values[j]), data.starts[i] + int(row), block_rows[j], float(w[j]), lab[j])
            )
    gathered = [o for part in data.rows.runtime.allgather(offers) for o in part]
    gathered.sort(key=lambda o: (o[0], o[1]))
    sums, weight = sums.copy(), weight.copy()
    for new_id, (_, _, row, w, old_id) in zip(empty, gathered, strict=False):
        sums[old_id] -= row * w
        sums[new_id] = row * w
        weight[new_id] = w
        weight[old_id] -= w
    return sums, weight


def _finish(
    data: _Data, centres: np.ndarray, labels: list[Any], relabel: bool
) -> tuple[list[Any], float, np.ndarray]:
    """Return final labels (re-assigned unless converged strictly), inertia, rows per centre."""
    xp = data.xp
    k = centres.shape[0]
    c = xp.asarray(centres)
    c_norm = (c * c).sum(axis=1)
    inertia = xp.zeros((), dtype=data.dtype)
    counts = xp.zeros(k, dtype=xp.int64)
    for i, sl, xc, w in data.chunks(k):
        lab = _nearest(xp, xc, c, c_norm) if relabel else labels[i][sl]
        labels[i][sl] = lab
        diff = xc - c[lab]
        inertia += (w * (diff * diff).sum(axis=1)).sum()
        counts += xp.bincount(lab, minlength=k)
    total = allreduce_host(data.rows.runtime, [inertia, counts])
    return labels, float(total[0]), total[1:]


# -- initialisation ---------------------------------------------------------------------------


class _Init:
    """Distributed choice of initial centres (centred coordinates), the same on every rank.

    ``shared`` draws the same numbers on every rank (which rank's candidate is taken);
    ``local`` draws this rank's candidates.
    """

    def __init__(self, data: _Data, k: int, shared: np.random.Generator, local: Any) -> None:
        self.data, self.k, self.shared, self.local = data, k, shared, local
        self.xp = data.xp
        self.rt = data.rows.runtime

    def run(self, how: str) -> np.ndarray:
        if how == "random":
            return self._random(self.k)
        if how == "k-means||":
            return self._parallel()
        return self._plusplus()

    # sampling helpers

    def _rows(self, index: Any) -> np.ndarray:
        """Centred rows of this rank at positions ``index`` of its concatenated blocks."""
        out = []
        offsets = np.cumsum([0] + [b.shape[0] for b in self.data.blocks])
        for j in np.asarray(index, dtype=np.int64):
            i = int(np.searchsorted(offsets, j, side="right") - 1)
            out.append(to_host(self.data.blocks[i][int(j - offsets[i])] - self.data.mean))
        m = self.data.rows.n_features
        return np.asarray(out, dtype=self.data.dtype).reshape(len(out), m)

    def _concat(self, parts: list[Any]) -> Any:
        xp = self.xp
        return xp.concatenate(parts) if parts else xp.zeros(0, dtype=self.data.dtype)

    def _sample(self, p: Any, draws: int) -> np.ndarray:
        """``draws`` rows with probability proportional to ``p`` over all ranks (one all-gather).

        Each rank draws its candidates in proportion to its own ``p`` (and uniformly, for when
        all of ``p`` is zero); then, for each draw, the shared generator picks a rank in
        proportion to the ranks' totals and takes that rank's candidate for the draw.
        """
        xp = self.xp
        n_local = int(p.shape[0])
        total = float(to_host(p.sum())) if n_local else 0.0
        offer = (total, n_local, None, None)
        if n_local:
            cum = xp.cumsum(p.astype(np.float64))
            u = xp.asarray(self.local.uniform(size=draws) * total)
            weighted = np.minimum(to_host(xp.searchsorted(cum, u, side="right")), n_local - 1)
            uniform = self.local.integers(0, n_local, size=draws)
            offer = (total, n_local, self._rows(weighted), self._rows(uniform))
        offers = self.rt.allgather(offer)
        totals = np.array([o[0] for o in offers])
        slot = 2
        if not totals.sum() > 0:
            totals, slot = np.array([o[1] for o in offers], dtype=np.float64), 3
        cum = np.cumsum(totals)
        out = []
        for t in range(draws):
            r = int(np.searchsorted(cum, self.shared.uniform() * cum[-1], side="right"))
            r = min(r, len(offers) - 1)
            while totals[r] == 0:  # searchsorted landed on the edge of an empty rank
                r -= 1
            out.append(offers[r][slot][t])
        return np.asarray(out, dtype=self.data.dtype)

    def _dist_to(self, points: np.ndarray) -> list[Any]:
        """Squared distances of this rank's rows to a few ``points`` (rows x points per block)."""
        xp = self.xp
        pts = xp.asarray(points.astype(self.data.dtype))
        out = [xp.empty((b.shape[0], len(points)), dtype=self.data.dtype) for b in self.data.blocks]
        for i, sl, xc, _ in self.data.chunks(len(points)):
            out[i][sl] = _sq_dist(xp, xc, pts)
        return out

    def _nearest_of(self, points: np.ndarray) -> tuple[list[Any], list[Any]]:
        """Squared distance to, and index of, the nearest of ``points`` for every row (chunked)."""
        xp = self.xp
        pts = xp.asarray(points.astype(self.data.dtype))
        dist = [xp.empty(b.shape[0], dtype=self.data.dtype) for b in self.data.blocks]
        which = [xp.empty(b.shape[0], dtype=xp.int64) for b in self.data.blocks]
        for i, sl, xc, _ in self.data.chunks(len(points)):
            d = _sq_dist(xp, xc, pts)
            which[i][sl] = xp.argmin(d, axis=1)
            dist[i][sl] = d.min(axis=1)
        return dist, which

    def _pot(self, closest: list[Any]) -> list[Any]:
        return [wi * c for wi, c in zip(self.data.weights, closest, strict=True)]

    # the methods

    def _plusplus(self) -> np.ndarray:
        """Greedy k-means++ (scikit-learn's, with ``2 + log k`` trials per centre).

        Per centre: one all-gather of candidates, one all-reduce of their potentials.
        """
        xp, w = self.xp, self.data.weights
        trials = 2 + int(np.log(self.k))
        centres = [self._sample(self._concat(w), 1)[0]]
        closest = [d[:, 0] for d in self._dist_to(np.asarray(centres))]
        for _ in range(1, self.k):
            cands = self._sample(self._concat(self._pot(closest)), trials)
            dists = [
                xp.minimum(c[:, None], d)
                for c, d in zip(closest, self._dist_to(cands), strict=True)
            ]
            local = [(wi[:, None] * d).sum(axis=0) for wi, d in zip(w, dists, strict=True)]
            pots = allreduce_host(self.rt, [local_sum(xp, local, (trials,))])
            best = int(np.argmin(pots))
            centres.append(cands[best])
            closest = [d[:, best] for d in dists]
        return np.asarray(centres, dtype=self.data.dtype)

    def _random(self, count: int) -> np.ndarray:
        """``count`` distinct rows drawn with probability proportional to their weight.

        Efraimidis-Spirakis keys ``log(u) / w``: each rank offers its ``count`` largest keys
        (one all-gather) and every rank takes the largest ``count`` of all.
        """
        w = to_host(self._concat(self.data.weights)).astype(np.float64)
        keys = np.full(w.shape, -np.inf)
        u = self.local.uniform(size=w.shape[0])
        positive = w > 0
        keys[positive] = np.log(u[positive]) / w[positive]
        top = np.argsort(-keys, kind="stable")[:count]
        offers = self.rt.allgather((keys[top].tolist(), self._rows(top)))
        pool = [(key, r, j) for r, (ks, _) in enumerate(offers) for j, key in enumerate(ks)]
        pool.sort(key=lambda e: (-e[0], e[1], e[2]))
        return np.asarray([offers[r][1][j] for _, r, j in pool[:count]], dtype=self.data.dtype)

    def _parallel(self) -> np.ndarray:
        """k-means|| (Bahmani et al. 2012), then weighted k-means++ on the candidates.

        Rounds of independent sampling (probability ``l w d^2 / phi`` with ``l = 2k``), one
        all-reduce of the cost and one all-gather of the drawn rows each; the candidates are
        weighted by the rows nearest to them (one all-reduce) and reduced to ``k`` centres
        by scikit-learn's k-means on rank 0, broadcast to all.
        """
        xp, w = self.xp, self.data.weights
        cands = self._sample(self._concat(w), 1)
        closest, _ = self._nearest_of(cands)
        ell = OVERSAMPLING * self.k
        for _ in range(PARALLEL_ROUNDS):
            local = [p.sum() for p in self._pot(closest)]
            phi = float(allreduce_host(self.rt, [local_sum(xp, local, ())])[0])
            if not phi > 0:
                break
            p = to_host(self._concat(self._pot(closest))).astype(np.float64)
            picked = np.flatnonzero(self.local.uniform(size=p.shape[0]) < ell * p / phi)
            new = [r for r in self.rt.allgather(self._rows(picked)) if len(r)]
            if not new:
                continue
            new = np.concatenate(new)
            cands = np.concatenate([cands, new])
            dist, _ = self._nearest_of(new)
            closest = [xp.minimum(c, d) for c, d in zip(closest, dist, strict=True)]
        if len(cands) < self.k:
            cands = np.concatenate([cands, self._random(self.k - len(cands))])
        _, which = self._nearest_of(cands)
        counts = [
            xp.bincount(j, weights=wi, minlength=len(cands)) for j, wi in zip(which, w, strict=True)
        ]
        weight = allreduce_host(self.rt, [local_sum(xp, counts, (len(cands),))])
        seed = int(self.shared.integers(np.iinfo(np.int32).max))
        centres = _recluster(cands, weight, self.k, seed) if self.rt.rank == 0 else None
        return self.rt.broadcast(centres)


def _recluster(points: np.ndarray, weight: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` centres of weighted ``points`` (scikit-learn's k-means++ and Lloyd, on one host)."""
    from sklearn.cluster import KMeans as SklearnKMeans

    if not weight.sum() > 0:
        weight = np.ones_like(weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SklearnKMeans(k, init="k-means++", n_init=1, random_state=seed)
        model.fit(points, sample_weight=weight)
    return model.cluster_centers_.astype(points.dtype)
