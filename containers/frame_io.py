"""Parquet in and out of a :class:`DistFrame`: ``gpupart.read_parquet`` and ``to_parquet``.

Reading (collective; one broadcast, one all-gather):

1. Rank 0 alone opens the dataset as ``pyarrow.parquet.read_table`` does: a file; a
   directory (``key=value`` directories become categorical columns whose types pyarrow
   infers: ``int32`` or string categories, every value found, as pandas/pyarrow give them);
   a list or a glob of files; any URL ``pyarrow.fs.FileSystem.from_uri`` reads. Files whose
   partition values cannot match ``filters`` are dropped here.
2. Planning, rank 0: it reads every footer (threads; or their copies in a ``_metadata``
   file when the directory has one), checks each file's schema against the dataset's (the
   first file's) and drops the row groups whose statistics cannot match ``filters``. The
   plan, plain values (:class:`_Plan`: file paths, hive values, the Arrow schema as IPC
   bytes, ``(file, row group, rows, projected bytes)`` with projected bytes the compressed
   size of only the columns asked for), or rank 0's error, is broadcast: the other ranks
   never list the dataset, and a bad path, column, filter or file fails every rank the same
   way, naming it.
3. Every rank cuts the row groups, in (file, row group) order, into partitions
   (:func:`_chunks`; by default one contiguous run per rank of about equal projected bytes,
   :func:`assign_runs`), so the frame's rows are in the dataset's order. Large files are
   split at row-group boundaries, small files grouped.
4. Each rank reads its row groups with ``pyarrow.dataset`` (its files as fragments limited to
   its row groups with ``subset(row_group_ids=)``, which keeps their order, the dataset's
   schema, the filters as a dataset expression): the engine ``pq.read_table`` uses, so rows,
   nulls and partition values filter alike and ``to_pandas()`` gives the same dtypes. On a
   GPU, ``cudf.read_parquet`` reads the rank's files and row groups (datasets on a local
   filesystem without partition columns; others are decoded by pyarrow and moved with
   ``cudf.DataFrame.from_arrow``).
5. One all-gather of every rank's outcome (its partitions' lengths, or its error) before the
   frame is built: an error anywhere (a file that vanished, a read failing) is raised on
   every rank; a rank that died makes the others raise ``PeerLostError``.

A pandas index stored in the files as columns comes back as columns (a frame has no index);
a ``RangeIndex`` (stored as metadata only) is dropped. Every file must have the dataset's
columns and types (pyarrow would fill missing columns with nulls; here it is an error naming
both files and the column).

Writing (collective): one file per partition, ``part.{i}.parquet`` (dask's names; ``i``
zero-padded to the width of the last partition's number, so that name order is partition
order and reading back keeps the rows' order; the same names at any job size; under
``col=value/`` directories with ``partition_cols``), written into
``.{name}.tmp-<job>-<nonce>`` next to the target; only when an all-gather confirms that
every rank succeeded does rank 0 rename it into place (a directory rename: atomic on a POSIX
filesystem). An existing target is an error unless ``overwrite=True``; then it is moved
aside, the new one renamed in and the old one deleted (put back if the rename fails), so the
name never holds a partial dataset. A failure on any rank removes the temporary directory
(rank 0 does it) and raises everywhere; if rank 0 itself dies, the others raise
:class:`~gpupart.PeerLostError` and the temporary directory stays behind (nobody is left to
remove it; the final name is never created).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
from gpupart.containers.dframe import DistFrame, Layout

from gpupart.trace import ranged

__all__ = ["assign_runs", "part_name", "read_parquet", "to_parquet"]

#: The operators of pyarrow's DNF filters that ``read_parquet`` accepts.
OPERATORS = ("=", "==", "!=", "<", ">", "<=", ">=", "in", "not in")
#: The error types a rank's problem is raised as on every rank (first match by isinstance).
_KINDS: tuple[type[Exception], ...] = (
    FileNotFoundError,
    FileExistsError,
    KeyError,
    TypeError,
    NotImplementedError,
    ValueError,
    OSError,
)
_BY_NAME = {k.__name__: k for k in _KINDS}
#: A read shows a progress bar (rank 0, a terminal) once it has taken this long.
PROGRESS_AFTER_S = 2.0
#: Threads reading footers at once (remote filesystems answer many requests in parallel).
FOOTER_THREADS = 16
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


# -- errors every rank raises ------------------------------------------------------------------


def _problem(exc: BaseException) -> tuple[str, str]:
    """``exc`` as a plain ``(kind, message)`` to all-gather."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    for kind in _KINDS:
        if isinstance(exc, kind):
            return kind.__name__, str(message)
    return "RuntimeError", f"{type(exc).__name__}: {message}"


def _raise_reported(what: str, reports: Sequence[Any]) -> None:
    """Raise the first rank's problem (the same error on every rank), if any rank had one."""
    for rank, report in enumerate(reports):
        if report is not None:
            kind, message = report
            where = f" (found by rank {rank})" if len(reports) > 1 else ""
            raise _BY_NAME.get(kind, RuntimeError)(f"{what}: {message}{where}")


# -- reading: the dataset ----------------------------------------------------------------------


@dataclass
class _Source:
    """The dataset as rank 0 opened it (only rank 0 lists files and reads footers)."""

    fs: Any
    dataset: Any
    fragments: list[Any]  # after partition pruning, in dataset order
    columns: list[str]  # what to read, in order
    partition_names: list[str]
    expr: Any  # the filters as a dataset expression, or None
    reference: str  # the file whose schema is the dataset's
    data_columns: list[str] = field(default_factory=list)  # columns stored in the files


@dataclass(frozen=True)
class _Plan:
    """What rank 0 broadcasts: the read as plain values (see :func:`_plan`).

    ``groups`` rows are ``(file, row group, rows, projected bytes)`` in dataset order;
    ``keys[file]`` the file's hive partition values ``[(column, value)]``;
    ``dictionaries`` every partition column's values ``(arrow type, values)`` (its
    categories); ``schema`` the dataset's Arrow schema, IPC-serialized.
    """

    files: list[str]
    keys: list[list[tuple[str, Any]]]
    dictionaries: dict[str, tuple[str, list[Any]]]
    schema: bytes
    columns: list[str]
    partition_names: list[str]
    groups: np.ndarray


def _filesystem(path: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """Return the pyarrow filesystem of ``path`` (a URL or a local path) and the path in it."""
    import pyarrow.fs as pafs

    if "://" in path:
        try:
            fs, inner = pafs.FileSystem.from_uri(path)
        except Exception as exc:
            raise ValueError(
                f"path: expected a URL pyarrow can open, found {path!r} ({exc})"
            ) from None
    else:
        fs, inner = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if storage_options:
        try:
            fs = type(fs)(**storage_options)
        except TypeError as exc:
            raise TypeError(
                f"storage_options: expected arguments of {type(fs).__name__}, found"
                f" {sorted(storage_options)} ({exc})"
            ) from None
    return fs, inner


def _glob(fs: Any, pattern: str) -> list[str]:
    """Files matching ``pattern`` (``*``, ``?``, ``[...]`` within one path segment), sorted."""
    import fnmatch

    import pyarrow.fs as pafs

    parts = pattern.split("/")
    first = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
    base = "/".join(parts[:first]) or "/"
    regex = re.compile(
        "/".join(
            [re.escape(p) for p in parts[:first]]
            + [
                fnmatch.translate(p)
                .removeprefix("(?s:")
                .removesuffix(")\\Z")
                .replace(".*", "[^/]*")
                for p in parts[first:]
            ]
        )
        + r"\Z"
    )
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and regex.match(i.path))


def _open(path: Any, columns: Any, filters: Any, storage_options: dict[str, Any] | None) -> _Source:
    """Open the dataset, check ``columns`` and ``filters``, prune files on partitions."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    fmt = ds.ParquetFileFormat()
    hive = ds.HivePartitioning.discover(infer_dictionary=True)
    if isinstance(path, (list, tuple)):
        if not path:
            raise ValueError("path: expected a file, a directory, a glob or files, found []")
        located = [_filesystem(os.fspath(p), storage_options) for p in path]
        fs, files = located[0][0], [p for _, p in located]
        for given, inner in zip(path, files, strict=True):
            if fs.get_file_info(inner).type != pafs.FileType.File:
                raise FileNotFoundError(
                    f"path: expected parquet files, found nothing at {os.fspath(given)!r}"
                )
        dataset = ds.dataset(files, filesystem=fs, format=fmt, partitioning=hive)
    elif isinstance(path, (str, os.PathLike)):
        fs, inner = _filesystem(os.fspath(path), storage_options)
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.NotFound and any(c in inner for c in "*?["):
            files = _glob(fs, inner)
            if not files:
                raise FileNotFoundError(f"path: expected files matching {path!r}, found none")
            dataset = ds.dataset(files, filesystem=fs, format=fmt, partitioning=hive)
        elif info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(
                f"path: expected a parquet file or directory, found nothing at {path!r}"
            )
        elif info.type == pafs.FileType.File:
            fragment = fmt.make_fragment(inner, fs)
            dataset = ds.FileSystemDataset([fragment], fragment.physical_schema, fmt, fs)
        elif fs.get_file_info(f"{inner.rstrip('/')}/_metadata").type == pafs.FileType.File:
            dataset = ds.parquet_dataset(
                f"{inner.rstrip('/')}/_metadata", filesystem=fs, format=fmt, partitioning=hive
            )
        else:
            dataset = ds.dataset(inner, filesystem=fs, format=fmt, partitioning=hive)
    else:
        raise TypeError(
            f"path: expected a path, a URL or a list of them, found {type(path).__name__}"
        )
    names = list(dataset.schema.names)
    wanted = _check_columns(columns, names)
    expr = _expression(filters, names)
    if expr is not None:
        try:
            dataset.scanner(columns=[], filter=expr)  # binds the filter: types are checked
        except (NotImplementedError, ValueError, TypeError) as exc:
            raise TypeError(
                f"filters: expected values comparable with the columns' types, found"
                f" {filters!r} ({exc})"
            ) from None
    fragments = list(dataset.get_fragments() if expr is None else dataset.get_fragments(expr))
    every = fragments if expr is None else dataset.get_fragments()  # before pruning
    keys = {k for f in every for k in ds.get_partition_keys(f.partition_expression)}
    partition_names = [n for n in names if n in keys]
    files = list(dataset.files)
    return _Source(
        fs=fs,
        dataset=dataset,
        fragments=fragments,
        columns=wanted,
        partition_names=partition_names,
        expr=expr,
        reference=files[0] if files else "",
        data_columns=[c for c in wanted if c not in partition_names],
    )


def _check_columns(columns: Any, names: list[str]) -> list[str]:
    if columns is None:
        return names
    if isinstance(columns, str) or not isinstance(columns, (list, tuple)):
        raise TypeError(f"columns: expected a list of column names, found {columns!r}")
    missing = [c for c in columns if c not in names]
    if missing:
        raise KeyError(f"columns: expected names of the dataset's columns {names}, found {missing}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"columns: expected distinct names, found {list(columns)}")
    return list(columns)


def _expression(filters: Any, names: list[str]) -> Any:
    """Check ``filters`` (pyarrow's DNF: tuples, or lists of them); return an expression."""
    import pyarrow.parquet as pq

    if filters is None:
        return None
    if not isinstance(filters, (list, tuple)) or not filters:
        raise TypeError(
            f"filters: expected a non-empty list of (column, op, value) tuples, or a list of"
            f" such lists, found {filters!r}"
        )
    dnf = filters if all(_is_conjunction(c) for c in filters) else [filters]
    for conjunction in dnf:
        if not _is_conjunction(conjunction):
            raise TypeError(
                f"filters: expected (column, op, value) tuples, or lists of them, found"
                f" {conjunction!r}"
            )
        for column, op, value in conjunction:
            if op not in OPERATORS:
                raise ValueError(
                    f"filters: expected an operator in {list(OPERATORS)}, found {op!r}"
                    f" in {(column, op, value)!r}"
                )
            if column not in names:
                raise KeyError(
                    f"filters: expected names of the dataset's columns {names}, found {column!r}"
                )
            if op in ("in", "not in") and not isinstance(value, (list, tuple, set, frozenset)):
                raise TypeError(f"filters: expected a list of values for {op!r}, found {value!r}")
    return pq.filters_to_expression([list(c) for c in dnf])


def _is_conjunction(obj: Any) -> bool:
    return (
        isinstance(obj, (list, tuple))
        and len(obj) > 0
        and all(isinstance(p, (list, tuple)) and len(p) == 3 and isinstance(p[1], str) for p in obj)
    )


# -- reading: planning -------------------------------------------------------------------------


def _plan(src: _Source, progress: _Progress) -> _Plan:
    """Rank 0: read every footer (threads), check schemas, prune row groups; plain values."""
    import pyarrow.dataset as ds

    groups = _footers(src, progress)
    keys = [
        sorted(ds.get_partition_keys(f.partition_expression).items()) if src.partition_names else []
        for f in src.fragments
    ]
    dictionaries = {}
    partitioning = getattr(src.dataset, "partitioning", None)
    if partitioning is not None and src.partition_names:
        for name, values in zip(
            partitioning.schema.names, partitioning.dictionaries or [], strict=False
        ):
            if values is not None and name in src.partition_names:
                dictionaries[name] = (str(values.type), values.to_pylist())
    return _Plan(
        files=[f.path for f in src.fragments],
        keys=keys,
        dictionaries=dictionaries,
        schema=src.dataset.schema.serialize().to_pybytes(),
        columns=src.columns,
        partition_names=src.partition_names,
        groups=groups,
    )


def _footers(src: _Source, progress: _Progress) -> np.ndarray:
    """Row groups of every fragment that may match: rows ``(file, group, rows, bytes)``."""

    def one(i: int) -> list[tuple[int, int, int, int]]:
        frag = src.fragments[i]
        try:
            md = frag.metadata
            schema = frag.physical_schema
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{frag.path}: the file disappeared while it was planned"
            ) from None
        except OSError as exc:
            raise OSError(f"{frag.path}: could not read its footer ({exc})") from None
        except Exception as exc:
            raise ValueError(
                f"{frag.path}: expected a parquet file, found a corrupt one ({exc})"
            ) from None
        _check_schema(src, frag.path, schema)
        if src.expr is None:
            groups = range(md.num_row_groups)
        else:
            groups = [
                rg.id for rg in frag.subset(filter=src.expr, schema=src.dataset.schema).row_groups
            ]
        leaves = _leaf_columns(schema, md.num_columns, src.data_columns)
        rows = []
        for g in groups:
            rg = md.row_group(g)
            if rg.num_rows == 0:  # nothing to read (an empty file's one row group)
                continue
            nbytes = sum(rg.column(j).total_compressed_size for j in leaves)
            rows.append((i, g, rg.num_rows, nbytes))
        progress.advance(1)
        return rows

    n = len(src.fragments)
    with ThreadPoolExecutor(max(1, min(FOOTER_THREADS, n))) as pool:
        found = [r for rows in pool.map(one, range(n)) for r in rows]
    return np.array(found, dtype=np.int64).reshape(-1, 4)


def _check_schema(src: _Source, path: str, schema: Any) -> None:
    """Raise unless the file at ``path`` has the dataset's columns and types."""
    want = {f.name: f.type for f in src.dataset.schema if f.name not in src.partition_names}
    found = {f.name: f.type for f in schema}
    ref = src.reference
    for name, typ in want.items():
        if name not in found:
            raise ValueError(
                f"schemas differ between files: {path} lacks column {name!r} ({typ}) that {ref} has"
            )
        if found[name] != typ:
            raise ValueError(
                f"schemas differ between files: column {name!r} is {typ} in {ref} but"
                f" {found[name]} in {path}"
            )
    for name in found:
        if name not in want:
            raise ValueError(
                f"schemas differ between files: {path} has column {name!r} that {ref} lacks"
            )


def _leaf_columns(schema: Any, ncolumns: int, names: list[str]) -> list[int]:
    """Parquet column chunks (leaves) of the top-level columns ``names``."""
    counts = [_leaves(f.type) for f in schema]
    if sum(counts) != ncolumns:  # an unexpected layout: count every column
        return list(range(ncolumns))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    index = {f.name: i for i, f in enumerate(schema)}
    return [j for n in names if n in index for j in range(starts[index[n]], starts[index[n] + 1])]


def _leaves(typ: Any) -> int:
    import pyarrow as pa

    if pa.types.is_struct(typ):
        return sum(_leaves(typ.field(k).type) for k in range(typ.num_fields))
    if pa.types.is_map(typ):
        return _leaves(typ.key_type) + _leaves(typ.item_type)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return _leaves(typ.value_type)
    return 1


def assign_runs(weights: Any, size: int) -> np.ndarray:
    """Rank of each item: contiguous runs of about equal total weight, one per rank, in order.

    An item goes to the rank whose share of the total holds the item's midpoint, so ranks
    never decrease along the items (the runs keep the items' order). All-zero weights count
    as equal. Deterministic: every rank computes the same from the same weights.
    """
    w = np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    if total <= 0:
        w, total = np.ones(len(w)), float(max(len(w), 1))
    middle = np.cumsum(w) - w / 2
    return np.minimum((middle * size / total).astype(np.int64), size - 1)


# -- reading: the data -------------------------------------------------------------------------


class _Progress:
    """A rich progress bar on rank 0, shown once a read takes ``PROGRESS_AFTER_S``."""

    def __init__(self, enabled: bool, forced: bool, started: float) -> None:
        self.enabled, self.forced, self.started = enabled, forced, started
        self.total, self.done, self.what = 0, 0, ""
        self._bar: Any = None
        self._task: Any = None

    def stage(self, what: str, total: int) -> None:
        self.what, self.total, self.done = what, max(int(total), 1), 0
        if self._bar is not None:
            self._bar.update(self._task, description=what, total=self.total, completed=0)
        self._show()

    def advance(self, amount: int) -> None:
        if not self.enabled:
            return
        self.done += int(amount)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        else:
            self._show()

    def _show(self) -> None:
        if not self.enabled or self._bar is not None:
            return
        if not self.forced and time.monotonic() - self.started < PROGRESS_AFTER_S:
            return
        from rich.progress import Progress

        self._bar = Progress(transient=False)
        self._bar.start()
        self._task = self._bar.add_task(self.what, total=self.total, completed=self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.total)
            self._bar.stop()
            self._bar = None


@dataclass
class _Reader:
    """What every rank builds from the broadcast plan to read its row groups."""

    fs: Any
    fmt: Any
    schema: Any
    expr: Any
    filters: Any
    plan: _Plan
    partition_names: list[str]


def _reader(plan: _Plan, path: Any, filters: Any, storage_options: Any) -> _Reader:
    """Every rank: the filesystem, schema and filter expression of ``plan`` (no listing)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    first = path[0] if isinstance(path, (list, tuple)) else path
    fs, _ = _filesystem(os.fspath(first), storage_options)
    schema = pa.ipc.read_schema(pa.py_buffer(plan.schema))
    return _Reader(
        fs=fs,
        fmt=ds.ParquetFileFormat(),
        schema=schema,
        expr=_expression(filters, list(schema.names)),
        filters=filters,
        plan=plan,
        partition_names=list(plan.partition_names),
    )


def _partition_expression(rd: _Reader, keys: list[tuple[str, Any]]) -> Any:
    """Return a file's hive values as discovery gives them (dictionary scalars)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    expr = None
    for name, value in keys:
        if value is None:
            term = ds.field(name).is_null()
        elif name in rd.plan.dictionaries:
            typ, values = rd.plan.dictionaries[name]
            dictionary = pa.array(values, type=pa.type_for_alias(typ))
            index = pa.array([values.index(value)], type=pa.int32())
            term = ds.field(name) == pa.DictionaryArray.from_arrays(index, dictionary)[0]
        else:
            term = ds.field(name) == value
        expr = term if expr is None else expr & term
    return expr


def _read_mine(
    rt: Any, rd: _Reader, mine: list[tuple[int, list[int], int]], progress: _Progress
) -> Any:
    """Read row groups ``[(file, groups, bytes)]`` of the plan as a frame of the rank's module."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    files = rd.plan.files
    gpu = rt.backend.is_gpu
    if gpu and not rd.partition_names and isinstance(rd.fs, pafs.LocalFileSystem) and mine:
        import cudf

        return cudf.read_parquet(
            [files[i] for i, _, _ in mine],
            columns=rd.plan.columns,
            row_groups=[groups for _, groups, _ in mine],
            filters=rd.filters,
        )
    # subset() keeps the row groups' order (``make_fragment(row_groups=)`` iterates a set)
    frags = [
        rd.fmt.make_fragment(
            files[i], rd.fs, partition_expression=_partition_expression(rd, rd.plan.keys[i])
        ).subset(row_group_ids=groups)
        for i, groups, _ in mine
    ]
    sub = ds.FileSystemDataset(frags, rd.schema, rd.fmt, rd.fs)
    scanner = sub.scanner(columns=rd.plan.columns, filter=rd.expr)
    sizes = {files[i]: nbytes for i, _, nbytes in mine}
    batches, current = [], None
    for tagged in scanner.scan_batches():
        path = tagged.fragment.path
        if path != current:
            progress.advance(sizes.get(current, 0))
            current = path
        batches.append(tagged.record_batch)
    progress.advance(sizes.get(current, 0))
    table = pa.Table.from_batches(batches, schema=scanner.projected_schema)
    if gpu:
        import cudf

        return cudf.DataFrame.from_arrow(table)
    return table.to_pandas()


def _without_index(frame: Any) -> Any:
    """Drop a stored ``RangeIndex``; make any other index columns."""
    index = frame.index
    if type(index).__name__ != "RangeIndex":  # stored as columns: they stay columns
        return frame.reset_index()
    plain = index.start == 0 and index.step == 1 and index.name is None
    return frame if plain else frame.reset_index(drop=True)  # only metadata: dropped


def _full_categories(frame: Any, rd: _Reader) -> Any:
    """Give partition columns every value found (a rank that read none has no categories)."""
    import pyarrow as pa

    for name in rd.partition_names:
        if name not in frame.columns or name not in rd.plan.dictionaries:
            continue
        typ, values = rd.plan.dictionaries[name]
        dictionary = pa.array(values, type=pa.type_for_alias(typ))
        empty = pa.DictionaryArray.from_arrays(pa.array([], pa.int32()), dictionary)
        categories = empty.to_pandas().dtype.categories
        current = frame[name].dtype.categories
        if hasattr(current, "to_pandas"):  # cuDF
            current = current.to_pandas()
        if not (current.equals(categories) and current.dtype == categories.dtype):
            frame[name] = frame[name].cat.set_categories(categories)
    return frame


def _chunks(plan: _Plan, split_row_groups: Any, size: int) -> tuple[list[list[int]], list[int]]:
    """Cut the plan's row groups into partitions: ``(rows of plan.groups each, owners)``.

    ``True``/``"infer"``/``"adaptive"``: one partition per rank, row groups in order, about
    equal projected bytes. ``False``: the same with whole files. ``k``: partitions of at
    most ``k`` row groups of one file, spread over the ranks in order by bytes.
    """
    groups = plan.groups
    weights = groups[:, 3] if groups[:, 3].sum() > 0 else groups[:, 2]
    if split_row_groups is False:
        files, first = np.unique(groups[:, 0], return_inverse=True)
        per_file = np.bincount(first, weights=weights, minlength=len(files))
        owner = assign_runs(per_file, size)[first] if len(files) else np.zeros(0, np.int64)
    elif not isinstance(split_row_groups, (bool, str)):  # a positive int
        chunks: list[list[int]] = []
        for k, fi in enumerate(groups[:, 0].tolist()):
            full = chunks and len(chunks[-1]) >= int(split_row_groups)
            if not chunks or full or groups[chunks[-1][0], 0] != fi:
                chunks.append([])
            chunks[-1].append(k)
        if not chunks:
            return [[] for _ in range(size)], list(range(size))
        owners = assign_runs([weights[c].sum() for c in chunks], size).tolist()
        return chunks, owners
    else:
        owner = assign_runs(weights, size)
    return [np.flatnonzero(owner == r).tolist() for r in range(size)], list(range(size))


def _check_split(split_row_groups: Any) -> None:
    if isinstance(split_row_groups, bool) or split_row_groups in ("infer", "adaptive"):
        return
    if isinstance(split_row_groups, (int, np.integer)) and split_row_groups > 0:
        return
    raise ValueError(
        f"split_row_groups: expected True, False, 'infer', 'adaptive' or a positive int,"
        f" found {split_row_groups!r}"
    )


@ranged("io.read_parquet")
def read_parquet(
    path: Any,
    columns: Sequence[str] | None = None,
    filters: Any = None,
    *,
    split_row_groups: bool | int | str = "infer",
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> DistFrame:
    """Read a parquet dataset into a :class:`DistFrame` (collective; see the module docstring).

    Args:
        path: a file, a directory (hive ``key=value`` directories become categorical
            columns), a glob, a list of files, or any of these as a URL pyarrow reads.
        columns: the columns to read (default all, partition columns last).
        filters: pyarrow's DNF, ``[("x", ">", 3), ("s", "in", ["a", "b"])]`` (all must
            hold) or a list of such lists (any must hold); used to skip files and row
            groups, and applied to the rows. Operators: :data:`OPERATORS`.
        split_row_groups: ``"infer"``/``"adaptive"``/``True`` (default): one partition per
            rank, files split at row-group boundaries, about equal projected bytes;
            ``False``: the same but files are never split; an int ``k``: partitions of at
            most ``k`` row groups of one file, contiguous runs of them per rank.
        storage_options: keyword arguments for the pyarrow filesystem of the URL's scheme.
        progress: a progress bar on rank 0: ``None`` when stdout is a terminal and the read
            takes over 2 s, ``True``/``False`` always/never.

    Returns:
        The rows in the dataset's order (files in name order, row groups in order), sizes
        known.

    Raises:
        FileNotFoundError, KeyError, TypeError, ValueError, OSError: the same on every rank,
        naming the path, column, filter or file at fault.
    """
    from gpupart.containers.creation import runtime_or_init

    rt = runtime_or_init()
    started = time.monotonic()
    show = progress if progress is not None else sys.stdout.isatty()
    bar = _Progress(bool(show) and rt.rank == 0, progress is True, started)
    try:
        return _read(rt, path, columns, filters, split_row_groups, storage_options, bar)
    finally:
        bar.close()


def _read(
    rt: Any,
    path: Any,
    columns: Any,
    filters: Any,
    split_row_groups: Any,
    storage_options: Any,
    bar: _Progress,
) -> DistFrame:
    # 1-2. rank 0 opens the dataset and reads the footers; one broadcast of plain values
    report: Any = None
    if rt.rank == 0:
        try:
            _check_split(split_row_groups)
            src = _open(path, columns, filters, storage_options)
            bar.stage("planning: footers", len(src.fragments))
            report = dict(vars(_plan(src, bar)))  # plain values
        except Exception as exc:
            report = _problem(exc)
    report = rt.broadcast(report, 0)
    if isinstance(report, tuple):
        _raise_reported("read_parquet", [report])
    plan = _Plan(**report)
    # 3. every rank computes the same partitions; 4-5. reads its own, one all-gather
    chunks, owners = _chunks(plan, split_row_groups, rt.size)
    parts: dict[int, Any] = {}
    meta, outcome = None, None
    try:
        rd = _reader(plan, path, filters, storage_options)
        mine = [p for p, o in enumerate(owners) if o == rt.rank]
        nbytes = sum(int(plan.groups[chunks[p], 3].sum()) for p in mine)
        bar.stage(f"reading rank 0's share of {rt.size}", nbytes)
        for p in mine:
            pieces: dict[int, tuple[list[int], int]] = {}
            for fi, g, _rows, b in plan.groups[chunks[p]].tolist():
                groups, total = pieces.get(fi, ([], 0))
                pieces[fi] = ([*groups, g], total + b)
            wanted = [(fi, groups, total) for fi, (groups, total) in pieces.items()]
            parts[p] = _full_categories(_without_index(_read_mine(rt, rd, wanted, bar)), rd)
        if parts:
            meta = next(iter(parts.values())).iloc[:0]
        else:
            meta = _full_categories(_without_index(_read_mine(rt, rd, [], bar)), rd)
        outcome = [len(parts[p]) for p in mine]
    except Exception as exc:
        outcome = _problem(exc)
    outcomes = rt.allgather(outcome)
    _raise_reported("read_parquet", [o if isinstance(o, tuple) else None for o in outcomes])
    sizes = [0] * len(owners)
    for rank, lengths in enumerate(outcomes):
        for p, n in zip([p for p, o in enumerate(owners) if o == rank], lengths, strict=True):
            sizes[p] = n
    return DistFrame(rt, meta, Layout(owners, sizes), parts)


# -- writing -----------------------------------------------------------------------------------


@ranged("io.to_parquet")
def to_parquet(
    df: DistFrame,
    path: Any,
    *,
    partition_cols: Sequence[str] | None = None,
    compression: str | None = "snappy",
    overwrite: bool = False,
) -> None:
    """Write ``df`` as a parquet dataset directory at ``path`` (collective; all or nothing).

    One file per partition (``part.{i}.parquet``, ``i`` zero-padded, under hive ``col=value/``
    directories with ``partition_cols``), written under a temporary directory next to ``path``
    and renamed into place by rank 0 once every rank succeeded (see the module docstring).
    Reading it back gives the frame (partition columns come back last, as categoricals of
    pyarrow's inferred types: ``int32`` for integers, strings otherwise; nulls as
    ``__HIVE_DEFAULT_PARTITION__``).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        TypeError, ValueError, KeyError: bad arguments (the same on every rank).
        PeerLostError: a rank died; nothing exists under ``path``.
    """
    rt = df.runtime
    args = (repr(path), repr(partition_cols), repr(compression), repr(overwrite))
    problem, fs, tmp, target, cols = None, None, None, "", []
    try:
        cols = _check_write_args(df, path, partition_cols, compression, overwrite)
        fs, target = _filesystem(os.fspath(path), None)
        if rt.rank == 0:
            tmp = _begin(fs, target, overwrite, rt.job_id)
    except Exception as exc:
        problem = _problem(exc)
    first = rt.allgather((problem, args, tmp))
    try:
        _raise_reported("to_parquet", [p for p, _, _ in first])
        _raise_reported("to_parquet", [_same_arguments([a for _, a, _ in first])])
    except BaseException:
        if tmp is not None:
            _remove(fs, tmp)
        raise
    tmp = first[0][2]
    problem = None
    try:
        _write_mine(df, fs, tmp, cols, compression)
    except Exception as exc:
        problem = _problem(exc)
    try:
        written = rt.allgather(problem)
        _raise_reported("to_parquet", written)
    except BaseException:  # a rank failed or died: no dataset under the final name
        if rt.rank == 0:
            _remove(fs, tmp)
        raise
    outcome = None
    if rt.rank == 0:
        try:
            _commit(fs, tmp, target, overwrite)
        except Exception as exc:
            _remove(fs, tmp)
            outcome = _problem(exc)
    _raise_reported("to_parquet", [rt.broadcast(outcome, 0)])


def _same_arguments(args: list[Any]) -> tuple[str, str] | None:
    if len(set(args)) == 1:
        return None
    return "ValueError", f"expected the same arguments on every rank, found {args}"


def _check_write_args(
    df: DistFrame, path: Any, partition_cols: Any, compression: Any, overwrite: Any
) -> list[str]:
    import pyarrow as pa

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a path or a URL, found {type(path).__name__}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite: expected a bool, found {overwrite!r}")
    if compression is not None and compression != "none":
        try:
            ok = isinstance(compression, str) and pa.Codec.is_available(compression)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"compression: expected None or a codec pyarrow writes ('snappy', 'gzip',"
                f" 'zstd', 'lz4', 'brotli'), found {compression!r}"
            )
    labels = list(df.columns)
    bad = [c for c in labels if not isinstance(c, str)]
    if bad:
        raise TypeError(f"df: expected string column labels for parquet, found {bad!r}")
    if partition_cols is None:
        return []
    if isinstance(partition_cols, str) or not isinstance(partition_cols, (list, tuple)):
        raise TypeError(
            f"partition_cols: expected a list of column names, found {partition_cols!r}"
        )
    missing = [c for c in partition_cols if c not in labels]
    if missing:
        raise KeyError(f"partition_cols: expected columns of the frame {labels}, found {missing}")
    if len(set(partition_cols)) == len(labels):
        raise ValueError(
            f"partition_cols: expected some columns left to write in the files, found all of"
            f" {labels} as partition columns"
        )
    return list(partition_cols)


def _sibling(target: str, kind: str, job_id: Any) -> str:
    parent, name = target.rstrip("/").rsplit("/", 1) if "/" in target.rstrip("/") else ("", target)
    job = re.sub(r"[^A-Za-z0-9_-]", "", str(job_id or "job"))[:40]
    return f"{parent}/.{name}.{kind}-{job}-{secrets.token_hex(4)}"


def _begin(fs: Any, target: str, overwrite: bool, job_id: Any) -> str:
    """Check the target (rank 0) and make the temporary directory next to it."""
    import pyarrow.fs as pafs

    if not target.rstrip("/"):
        raise ValueError(f"path: expected a directory to create, found {target!r}")
    if fs.get_file_info(target).type != pafs.FileType.NotFound and not overwrite:
        raise FileExistsError(f"path: {target} exists (pass overwrite=True to replace it)")
    tmp = _sibling(target, "tmp", job_id)
    fs.create_dir(tmp, recursive=True)
    return tmp


def _write_mine(df: DistFrame, fs: Any, tmp: str, cols: list[str], compression: Any) -> None:
    """Write this rank's partitions into ``tmp``."""
    import pandas as pd

    meta = _host(df.meta)
    schema = _arrow_schema(meta.drop(columns=cols))
    for i, part in sorted(df.local_partitions.items()):
        part = _host(part)
        name = part_name(i, df.npartitions)
        if not cols:
            _write_file(fs, f"{tmp}/{name}", part, schema, compression)
            continue
        nulls = [c for c in cols if bool(part[c].isna().any())]
        if nulls:
            raise ValueError(
                f"partition_cols: expected no null values in partition columns, found nulls in"
                f" {nulls} (pyarrow cannot read null partition values back; fill them first)"
            )
        for key, group in part.groupby(cols, sort=True, dropna=False, observed=True):
            values = key if isinstance(key, tuple) else (key,)
            sub = "/".join(
                f"{c}={_HIVE_NULL if pd.isna(v) else quote(str(v), safe='')}"
                for c, v in zip(cols, values, strict=True)
            )
            fs.create_dir(f"{tmp}/{sub}", recursive=True)
            frame = group.drop(columns=cols).reset_index(drop=True)
            _write_file(fs, f"{tmp}/{sub}/{name}", frame, schema, compression)


def part_name(i: int, npartitions: int) -> str:
    """File name of partition ``i`` of ``npartitions``: ``part.{i}.parquet``, zero-padded."""
    return f"part.{i:0{len(str(max(npartitions - 1, 0)))}d}.parquet"


def _host(frame: Any) -> Any:
    return frame if type(frame).__module__.split(".")[0] == "pandas" else frame.to_pandas()


def _arrow_schema(meta: Any) -> Any:
    """Return the files' schema from the frame's (object columns hold strings)."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(meta, preserve_index=False)
    for i, f in enumerate(schema):
        if pa.types.is_null(f.type):
            schema = schema.set(i, f.with_type(pa.large_string()))
    return schema


def _write_file(fs: Any, path: str, frame: Any, schema: Any, compression: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, path, filesystem=fs, compression=compression or "none")


def _commit(fs: Any, tmp: str, target: str, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target`` (rank 0); an existing target is replaced safely."""
    import pyarrow.fs as pafs

    existing = fs.get_file_info(target).type
    if existing == pafs.FileType.NotFound:
        fs.move(tmp, target)
        return
    if not overwrite:
        raise FileExistsError(f"path: {target} appeared while the dataset was written")
    old = _sibling(target, "old", "")
    fs.move(target, old)
    try:
        fs.move(tmp, target)
    except BaseException:
        fs.move(old, target)
        raise
    _remove(fs, old)


def _remove(fs: Any, path: str) -> None:
    """Delete a directory or file, quietly (cleanup after a failure)."""
    import pyarrow.fs as pafs

    try:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            fs.delete_file(path)
    except OSError:
        pass
