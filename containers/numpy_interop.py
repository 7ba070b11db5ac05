"""NumPy's protocols on :class:`DistArray`: ``np.exp(x)``, ``np.where(c, x, y)``, ``np.sum(x)``.

:func:`array_ufunc` (``__array_ufunc__``) routes a ufunc called plainly (``np.add(x, y)``,
also ``ndarray + x``) to the namespace function of the same meaning; another method
(``np.add.reduce``), an ``out=`` or ``where=`` argument, or a ufunc the namespace lacks
gives ``NotImplemented``, which NumPy turns into a TypeError.

:func:`array_function` (``__array_function__``) routes NumPy's functions to the namespace
function of the same meaning, looked up by name when called (``sum`` in
:mod:`gpupart.containers.reductions`, ``concat`` in ``manipulation``, ...), so it follows
those modules as they grow. NumPy's arguments are matched by name: required ones are passed
in order, others by keyword when they differ from NumPy's default (``a_min`` becomes
``min``); one the namespace function does not take is a TypeError naming it. A function
without a counterpart is a TypeError naming it and ``x.to_numpy()``.

Both are collective exactly when the routed function is.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np

__all__ = ["array_function", "array_ufunc"]

#: Modules searched, in order, for a namespace function.
MODULES = ("elementwise", "reductions", "manipulation", "linalg", "indexing", "dtypes")

#: NumPy ufunc names whose namespace function has another name (others: the same name).
UFUNC_NAMES = {
    "absolute": "abs",
    "arccos": "acos",
    "arccosh": "acosh",
    "arcsin": "asin",
    "arcsinh": "asinh",
    "arctan": "atan",
    "arctan2": "atan2",
    "arctanh": "atanh",
    "conjugate": "conj",
    "invert": "bitwise_invert",
    "left_shift": "bitwise_left_shift",
    "power": "pow",
    "right_shift": "bitwise_right_shift",
}

#: NumPy ufuncs routed by their (translated) name.
UFUNCS = frozenset(
    {
        *UFUNC_NAMES,
        "add",
        "bitwise_and",
        "bitwise_or",
        "bitwise_xor",
        "ceil",
        "copysign",
        "cos",
        "cosh",
        "divide",
        "equal",
        "exp",
        "expm1",
        "floor",
        "floor_divide",
        "greater",
        "greater_equal",
        "hypot",
        "isfinite",
        "isinf",
        "isnan",
        "less",
        "less_equal",
        "log",
        "log10",
        "log1p",
        "log2",
        "logaddexp",
        "logical_and",
        "logical_not",
        "logical_or",
        "logical_xor",
        "matmul",
        "maximum",
        "minimum",
        "multiply",
        "negative",
        "nextafter",
        "not_equal",
        "positive",
        "reciprocal",
        "remainder",
        "sign",
        "signbit",
        "sin",
        "sinh",
        "sqrt",
        "square",
        "subtract",
        "tan",
        "tanh",
        "trunc",
        "vecdot",
    }
)

#: NumPy functions routed, by NumPy name -> namespace name.
FUNCTIONS = {
    "all": "all",
    "amax": "max",
    "amin": "min",
    "any": "any",
    "argmax": "argmax",
    "argmin": "argmin",
    "around": "round",
    "astype": "astype",
    "broadcast_arrays": "broadcast_arrays",
    "broadcast_to": "broadcast_to",
    "clip": "clip",
    "concat": "concat",
    "concatenate": "concat",
    "conj": "conj",
    "conjugate": "conj",
    "count_nonzero": "count_nonzero",
    "cumprod": "cumulative_prod",
    "cumsum": "cumulative_sum",
    "cumulative_prod": "cumulative_prod",
    "cumulative_sum": "cumulative_sum",
    "diff": "diff",
    "expand_dims": "expand_dims",
    "flip": "flip",
    "imag": "imag",
    "matrix_transpose": "matrix_transpose",
    "max": "max",
    "mean": "mean",
    "min": "min",
    "moveaxis": "moveaxis",
    "nonzero": "nonzero",
    "permute_dims": "permute_dims",
    "prod": "prod",
    "real": "real",
    "repeat": "repeat",
    "reshape": "reshape",
    "result_type": "result_type",
    "roll": "roll",
    "round": "round",
    "squeeze": "squeeze",
    "stack": "stack",
    "std": "std",
    "sum": "sum",
    "take": "take",
    "take_along_axis": "take_along_axis",
    "tensordot": "tensordot",
    "tile": "tile",
    "transpose": "permute_dims",
    "unstack": "unstack",
    "var": "var",
    "vecdot": "vecdot",
    "where": "where",
}

#: Ufunc keyword arguments that change nothing (passed explicitly, they are accepted).
_UFUNC_DEFAULTS = {"out": None, "where": True, "casting": "same_kind", "order": "K"}

#: NumPy keyword names the namespace spells otherwise.
KEYWORDS = {"a_min": "min", "a_max": "max", "ddof": "correction", "newshape": "shape"}


def _lookup(name: str) -> Any:
    """Return the namespace function ``name`` from the first module that has it, or None."""
    for module in MODULES:
        try:
            mod = importlib.import_module(f"gpupart.containers.{module}")
        except ImportError:
            continue
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn
    return None


def array_ufunc(self: Any, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
    """Run ``ufunc(*inputs)`` as the namespace function of that name (``__array_ufunc__``)."""
    name = getattr(ufunc, "__name__", "")
    if method != "__call__" or name not in UFUNCS:
        return NotImplemented
    extra = {k: v for k, v in kwargs.items() if not _same_default(v, _UFUNC_DEFAULTS.get(k))}
    if extra:
        raise TypeError(
            f"numpy.{name}: argument(s) {', '.join(sorted(extra))} are not supported on a"
            " gpupart.DistArray; call it without them"
        )
    fn = _lookup(UFUNC_NAMES.get(name, name))
    if fn is None:
        return NotImplemented
    return fn(*inputs)


def array_function(self: Any, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
    """Run NumPy's ``func`` as the namespace function of that meaning (``__array_function__``)."""
    from gpupart.containers.darray import DistArray

    if not all(issubclass(t, (DistArray, np.ndarray)) for t in types):
        return NotImplemented
    name = getattr(func, "__name__", repr(func))
    if name in ("shape", "ndim", "size") and getattr(np, name, None) is func:
        return _metadata(name, args, kwargs)
    api = FUNCTIONS.get(name) if getattr(np, name, None) is func else None
    if api == "where" and _where_is_nonzero(func, args, kwargs):
        api = "nonzero"
    fn = _lookup(api) if api is not None else None
    if fn is None:
        qualified = f"{getattr(func, '__module__', None) or 'numpy'}.{name}"
        raise TypeError(
            f"{qualified} is not supported on a gpupart.DistArray (spread over ranks); call"
            " x.to_numpy() first (collective: every rank gets the whole array) and use NumPy"
            " on that"
        )
    positional, keywords = _translate(name, func, fn, args, kwargs)
    if name == "transpose" and "axes" not in keywords:
        keywords["axes"] = tuple(reversed(range(positional[0].ndim)))
    return fn(*positional, **keywords)


def _metadata(name: str, args: Any, kwargs: Any) -> Any:
    """Return ``np.shape``/``np.ndim``/``np.size`` of a DistArray (global metadata)."""
    bound = inspect.signature(getattr(np, name)).bind(*args, **kwargs)
    x = next(iter(bound.arguments.values()))
    if name == "size" and bound.arguments.get("axis") is not None:
        return x.shape[bound.arguments["axis"]]
    return getattr(x, name)


def _where_is_nonzero(func: Any, args: Any, kwargs: Any) -> bool:
    """Return whether ``np.where`` was called with the condition alone (NumPy's ``nonzero``)."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    return bound.arguments.get("x") is None and bound.arguments.get("y") is None


def _translate(
    name: str, func: Any, fn: Any, args: Any, kwargs: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Return NumPy's arguments as the namespace function takes them (positional, keywords)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # no signature to read: NumPy's arguments as they are
        return list(args), dict(kwargs)
    bound = signature.bind(*args, **kwargs)
    try:
        target = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        target = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in target.values())
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for pname, value in bound.arguments.items():
        param = signature.parameters[pname]
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            positional.extend(value)
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = value
        elif param.kind is inspect.Parameter.POSITIONAL_ONLY or param.default is param.empty:
            positional.append(value)
            continue
        elif value is param.default or _same_default(value, param.default):
            continue
        else:
            extra = {KEYWORDS.get(pname, pname): value}
        for key, val in extra.items():
            if not takes_any and key not in target:
                raise TypeError(
                    f"numpy.{name}: argument {key}={val!r} is not supported on a"
                    f" gpupart.DistArray ({fn.__module__}.{fn.__name__} does not take it)"
                )
            keywords[key] = val
    return positional, keywords


def _same_default(value: Any, default: Any) -> bool:
    """Return whether ``value`` equals NumPy's default ``default`` (plain Python values only)."""
    plain = (type(None), bool, int, float, str)
    if not isinstance(value, plain) or not isinstance(default, plain):
        return False
    return type(value) is type(default) and value == default
