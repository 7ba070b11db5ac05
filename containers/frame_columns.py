"""A dataframe partition as exchangeable columns and back: what a shuffle moves.

:func:`encode` turns a pandas (or cuDF) frame into a dict of columns ``Runtime.exchange``
takes: fixed-width values as arrays (NumPy, or CuPy for cuDF), strings as ``pyarrow``
arrays (nulls kept in Arrow's bitmap), and for every column that may hold nulls but has no
in-band marker (nullable integers and booleans, datetimes with ``NaT`` are in-band; an
object column of bools) a bool validity column. An object column's missing values come
back as the objects they were: ``None`` where Arrow's null alone says so, and an int8 column
of codes (``None``, ``NaN``, ``NA``, ``NaT``) when some are not ``None`` (pandas 2 keeps
strings as objects, with ``NaN`` or ``None`` for missing ones, and compares them as such).
Keys are the column's position (``"3"``, ``"3.valid"``, ``"3.null"``), so any label
works. :func:`decode` rebuilds a frame of the schema ``meta`` (an empty frame) from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["concat", "decode", "dtype_of", "empty_frame", "encode", "is_string_dtype", "schema"]


def is_string_dtype(dtype: Any) -> bool:
    """Whether a column of ``dtype`` holds strings (pandas' ``str``/``string``, object)."""
    import pandas as pd

    return (
        isinstance(dtype, pd.StringDtype)
        or dtype == object  # noqa: E721 (object columns of strings)
        or str(dtype) in ("str", "string")
    )


def _needs_validity(dtype: Any) -> bool:
    """Nullable extension dtypes (Int64, boolean, Float64) keep nulls out of band."""
    import pandas as pd

    return isinstance(dtype, pd.api.extensions.ExtensionDtype) and not (
        is_string_dtype(dtype)
        or isinstance(dtype, (pd.DatetimeTZDtype, pd.CategoricalDtype, pd.PeriodDtype))
    )


def encode(frame: Any, where: str = "frame") -> dict[str, Any]:
    """Return ``frame``'s columns as exchangeable columns (see the module docstring)."""
    out: dict[str, Any] = {}
    for i, name in enumerate(frame.columns):
        out.update(_encode_column(frame.iloc[:, i], str(i), f"{where}[{name!r}]"))
    return out


def _encode_column(series: Any, key: str, where: str) -> dict[str, Any]:
    out = _encode_values(series, key, where)
    if series.dtype == object and type(series).__module__.split(".")[0] == "pandas":
        codes = _null_codes(series)
        if codes is not None:
            out[f"{key}.null"] = codes
    return out


def _null_objects() -> tuple[Any, ...]:
    """Return the missing-value objects an object column keeps, by code (0: ``None``)."""
    import pandas as pd

    return (None, np.nan, pd.NA, pd.NaT)


def _null_codes(series: Any) -> np.ndarray | None:
    """Each row's missing-value object as a code of :func:`_null_objects`; None if all None."""
    import pandas as pd

    values = series.to_numpy(dtype=object)
    rows = np.flatnonzero(pd.isna(values))
    found = values[rows]
    if not len(found) or all(v is None for v in found):
        return None

    def code(value: Any) -> int:
        if value is pd.NA:
            return 2
        if value is pd.NaT:
            return 3
        return 1 if isinstance(value, (float, np.floating)) else 0

    codes = np.zeros(len(values), dtype=np.int8)
    codes[rows] = np.fromiter(map(code, found), dtype=np.int8, count=len(found))
    return codes


def _encode_values(series: Any, key: str, where: str) -> dict[str, Any]:
    import pandas as pd

    dtype = series.dtype
    on_gpu = type(series).__module__.split(".")[0] == "cudf"
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(dtype.categories.dtype)  # values travel; the schema restores
        dtype = series.dtype
    if is_string_dtype(dtype) or (on_gpu and str(dtype) == "object"):
        import pyarrow as pa

        try:
            values = series.to_arrow() if on_gpu else pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TypeError(
                f"{where}: expected strings in a column of dtype {dtype}, found other objects"
                f" ({exc})"
            ) from None
        if pa.types.is_boolean(values.type) and dtype == object:  # noqa: E721
            # an object column of bools and nulls (pandas' ``.str.contains`` on objects)
            return {
                key: values.fill_null(False).to_numpy(zero_copy_only=False),
                f"{key}.valid": values.is_valid().to_numpy(zero_copy_only=False),
            }
        if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
            if len(values) and values.null_count < len(values):
                raise TypeError(f"{where}: expected strings, found {values.type}")
            values = pa.array([None] * len(values), type=pa.string())
        return {key: values}
    if isinstance(dtype, pd.DatetimeTZDtype):
        return {key: series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()}
    if _needs_validity(dtype):
        valid = ~series.isna()
        numpy_dtype = np.dtype(dtype.numpy_dtype)
        filler = False if numpy_dtype.kind == "b" else 0
        if on_gpu:
            return {key: series.fillna(filler).values, f"{key}.valid": valid.values}
        values = series.to_numpy(dtype=numpy_dtype, na_value=filler)
        return {key: values, f"{key}.valid": valid.to_numpy(dtype=bool)}
    if on_gpu:
        return {key: series.values}
    values = series.to_numpy()
    if values.dtype == object:
        raise TypeError(
            f"{where}: expected a column of numbers, strings or datetimes, found {dtype}"
        )
    return {key: values}


def decode(columns: dict[str, Any], meta: Any, module: Any) -> Any:
    """Rebuild a frame of ``meta``'s schema from :func:`encode`'s columns (pandas or cudf)."""
    import pandas as pd

    data = {}
    for i in range(len(meta.columns)):
        dtype = meta.dtypes.iloc[i]
        values = columns[str(i)]
        valid = columns.get(f"{i}.valid")
        if module.__name__ == "cudf":
            series = module.Series(values)
        elif hasattr(values, "to_pandas") and dtype == object:  # noqa: E721 (None stays None)
            series = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
        elif hasattr(values, "to_pandas"):  # a pyarrow string array
            series = values.to_pandas()
        elif isinstance(dtype, pd.DatetimeTZDtype):
            series = pd.Series(values).dt.tz_localize("UTC").dt.tz_convert(dtype.tz)
        else:
            series = pd.Series(values, copy=False)
        if valid is not None:
            series = series.astype(dtype)
            series[~valid] = None
        nulls = columns.get(f"{i}.null")
        if nulls is not None and module.__name__ == "pandas":
            series = _with_null_objects(series, np.asarray(nulls))
        data[i] = series.astype(dtype) if series.dtype != dtype else series
    frame = module.DataFrame(data)
    frame.columns = meta.columns
    return frame


def concat(frames: Sequence[Any], module: Any) -> Any:
    """Return frames of one schema as one, rows numbered from 0 (pandas' or cuDF's concat).

    pandas 2's concat gives an object column that is all null in one of the frames ``NaN``
    there (it treats all-NA pieces as missing; pandas 3 keeps them): such columns are joined
    as series, so ``None``, ``NaN`` and ``NA`` stay as they were.
    """
    frames = list(frames)
    out = module.concat(frames, ignore_index=True)
    if module.__name__ != "pandas":
        return out
    for j, dtype in enumerate(out.dtypes):
        column = [f.iloc[:, j] for f in frames]
        if dtype == np.dtype(object) and any(len(c) and c.isna().all() for c in column):
            out.isetitem(j, module.concat(column, ignore_index=True))
    return out


def _with_null_objects(series: Any, codes: np.ndarray) -> Any:
    """Return an object column whose missing values are the objects ``codes`` name."""
    import pandas as pd

    values = series.to_numpy(dtype=object, copy=True)
    for code, missing in enumerate(_null_objects()):
        if code:
            values[codes == code] = missing
    return pd.Series(values, dtype=object)


def schema(frame: Any) -> tuple[tuple[Any, Any], ...]:
    """Return ``frame``'s column labels and dtypes as plain values (they travel in collectives).

    A dtype is its name (``'int64'``, ``'str'``, ``'datetime64[us, UTC]'``), or for a
    categorical ``('category', categories, ordered)``.
    """
    import pandas as pd

    out = []
    for label, dtype in zip(frame.columns, frame.dtypes, strict=True):
        if isinstance(dtype, pd.CategoricalDtype):
            spec: Any = ("category", tuple(dtype.categories.tolist()), bool(dtype.ordered))
        else:
            spec = str(dtype)
        out.append((label, spec))
    return tuple(out)


def dtype_of(spec: Any) -> Any:
    """Return the pandas dtype a :func:`schema` spec names.

    ``'str'`` is pandas' ``StringDtype(na_value=NaN)``: pandas 3's default for strings, which
    pandas 2.3 has under that name too but reads ``'str'`` as NumPy text (``<U``).
    """
    import pandas as pd

    if isinstance(spec, (tuple, list)):
        return pd.CategoricalDtype(list(spec[1]), ordered=spec[2])
    dtype = pd.api.types.pandas_dtype(spec)
    if spec == "str" and isinstance(dtype, np.dtype):
        return pd.StringDtype(na_value=np.nan)
    return dtype


def empty_frame(columns: tuple[tuple[Any, Any], ...], module: Any) -> Any:
    """Return an empty frame of the schema :func:`schema` described."""
    import pandas as pd

    data = {i: pd.Series([], dtype=dtype_of(spec)) for i, (_, spec) in enumerate(columns)}
    frame = pd.DataFrame(data)
    frame.columns = pd.Index([label for label, _ in columns])
    return frame if module.__name__ == "pandas" else module.DataFrame(frame)
